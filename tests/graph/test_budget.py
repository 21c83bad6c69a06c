"""Model spend: prices, the report, and budgets that stop model calls — the run stops
and waits for the operator, nothing is lost, and /retry goes on once there is room."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatResult

import graph.history as history_module
from bot.app import Steward
from bot.settings import SettingsError, load_settings
from graph import drafting, models, routing
from graph.budget import HOLD_SECONDS, Budgets, parse_prices
from graph.drafting import Drafter
from graph.messages import Inbound, Sender
from graph.models import ANSWER_TOKENS, LanguageModels
from graph.timeline import timeline
from memory.database_url import DatabaseURL
from memory.embeddings import EmbeddingFailed
from memory.ledger import Ledger, ModelHold, RunStatus, SpendLimit, utcnow
from memory.openai_api import Retry
from tests.fakes.openai_api import fake_openai

UTC_ZONE = ZoneInfo("UTC")
ROOT = Path(__file__).resolve().parents[2]
ONBOARD = {"client": "Acme", "email": "jane@acme.com", "package": "basic"}


def drafts(count: int) -> Iterator[AIMessage]:
    for n in range(count):
        yield AIMessage(
            content=f"Dear Acme, draft {n}.",
            usage_metadata={"input_tokens": 1000, "output_tokens": 500, "total_tokens": 1500},
        )


async def open_steward(tmp_path: Path, **budget: object) -> AsyncIterator[Steward]:
    settings = load_settings(
        home=tmp_path / "home",
        llm_model="house-model",
        openai_base_url="http://127.0.0.1:9/v1",  # never called: the models are fakes
        model_prices="house-model=2.00/10.00",
        **budget,
    )
    fake = GenericFakeChatModel(messages=drafts(50))
    models = LanguageModels(fake, fake, ledger=None, names=("house-model", "house-model"))  # type: ignore[arg-type]
    async with Steward.open(settings, models=models) as steward:
        models.ledger = steward.ledger
        yield steward


@pytest.fixture
async def spend_limited(tmp_path: Path) -> AsyncIterator[Steward]:
    # each draft costs 1000 * 2 + 500 * 10 = 7,000 micro-dollars: $0.007
    async for steward in open_steward(tmp_path, budget_daily=0.01):
        yield steward


async def test_each_call_is_priced_from_the_table(tmp_path: Path) -> None:
    async for app in open_steward(tmp_path):
        view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
        assert view.approval is not None and "draft 0" in (view.approval.card["text"] or "")
        assert await app.ledger.model_spend(view.run.id) == pytest.approx(0.007)
        report = await app.coordinator.budget_report()
        assert "this month  0.0070 in 1 call(s)" in report
        assert "onboarding" in report


async def test_history_answers_are_counted_apart_from_routing(tmp_path: Path) -> None:
    """/budget counted a history answer, which belongs to no run, under "(routing)", as
    if choosing processes had cost it."""
    async for app in open_steward(tmp_path, operators="telegram:42"):
        await app.engine.start("onboarding", ONBOARD, "cli:shell")  # a draft: onboarding's
        await app.history.sync.catch_up()
        question = Inbound(Sender("telegram", "42"), "c", "u1", text="/history welcome Acme")
        assert await app.door.receive(question) is not None
        assert app.history.models is not None
        await app.history.models.complete("Which process?", purpose="route")
        spending = await app.coordinator.spending()
        report = await app.coordinator.budget_report()
    assert spending.by_process["onboarding"] == (pytest.approx(0.007), None)
    assert spending.by_process["(history)"] == (pytest.approx(0.007), None)
    assert spending.by_process["(routing)"] == (pytest.approx(0.007), None)
    assert "(history)" in report


async def test_over_the_daily_budget_the_run_stops_and_retry_goes_on(
    spend_limited: Steward,
) -> None:
    app = spend_limited
    first = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    second = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    assert first.approval is not None and second.approval is not None  # $0.014 spent
    third = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    assert third.run.status is RunStatus.FAILED and third.run.error_class == "budget"
    assert "daily model budget is spent ($0.014 of $0.01 today)" in (third.run.error or "")
    assert await app.ledger.model_spend() == pytest.approx(0.014)  # no call was made
    reply = app.coordinator.describe(third)
    assert "/retry" in reply.texts[0]

    listed = await app.coordinator.today_reply()
    assert "Today's model spend: $0.014 of $0.01" in "\n".join(listed.texts)
    assert "model calls are stopped" in "\n".join(listed.texts)

    app.coordinator.budgets.daily = 1.0  # type: ignore[union-attr]  # the operator raises it
    retried = await app.engine.retry(third.run.id, "cli:shell")
    assert retried.approval is not None and retried.run.status is RunStatus.WAITING


class SlowFakeChatModel(GenericFakeChatModel):
    """Answers after a while, as a model does: long enough for calls to overlap."""

    async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
        await asyncio.sleep(0.2)
        return await super()._agenerate(*args, **kwargs)


async def test_runs_drafting_at_once_cannot_spend_past_the_budget_together(
    tmp_path: Path,
) -> None:
    """Each call checked the budget as it started: eight runs drafting at once all saw
    nothing spent, and spent $0.056 of a $0.01 day."""
    settings = load_settings(
        home=tmp_path / "home",
        llm_model="house-model",
        openai_base_url="http://127.0.0.1:9/v1",  # never called: the models are fakes
        model_prices="house-model=2.00/10.00",
        budget_daily=0.01,
    )
    fake = SlowFakeChatModel(messages=drafts(50))
    models = LanguageModels(fake, fake, ledger=None, names=("house-model", "house-model"))  # type: ignore[arg-type]
    async with Steward.open(settings, models=models) as app:
        models.ledger = app.ledger
        starts = (app.engine.start("onboarding", ONBOARD, "cli:shell") for _ in range(8))
        views = await asyncio.gather(*starts)
        assert await app.ledger.model_spend() == pytest.approx(0.014)  # as one after another
    assert sum(view.approval is not None for view in views) == 2
    assert sum(view.run.error_class == "budget" for view in views) == 6


async def test_a_call_near_its_process_budget_waits_only_for_that_process(
    tmp_path: Path,
) -> None:
    async for app in open_steward(tmp_path):
        budgets = Budgets(app.ledger, UTC_ZONE, per_process={"onboarding": 0.01})
        async with budgets.room("invoice_followup", 5.0):  # another process's, under way
            async with asyncio.timeout(1):
                async with budgets.room("onboarding", 0.02):  # past its limit: goes alone
                    pass
            async with budgets.room("onboarding", 0.02):
                later = budgets.room("onboarding", 0.02)
                waiting = asyncio.create_task(later.__aenter__())
                await asyncio.sleep(0.05)
                assert not waiting.done()  # behind the onboarding call under way
            await asyncio.wait_for(waiting, 1)
            await later.__aexit__(None, None, None)


async def test_a_large_call_is_not_kept_waiting_by_a_stream_of_small_ones(
    tmp_path: Path,
) -> None:
    """A call that may take the budget past its limit waits for the calls under way to
    settle; small calls that fit kept going in past it, and as long as one was under way
    the large call waited."""
    async for app in open_steward(tmp_path):
        budgets = Budgets(app.ledger, UTC_ZONE, daily=1.0)
        went: list[str] = []

        async def call(budgets: Budgets, went: list[str], name: str, worst: float) -> None:
            async with budgets.room(None, worst):
                went.append(name)
                await asyncio.sleep(0.03)

        stream = []
        for n in range(30):  # a small call every 10 ms, each under way 30 ms
            stream.append(asyncio.create_task(call(budgets, went, f"small {n}", 0.2)))
            if n == 1:
                large = asyncio.create_task(call(budgets, went, "large", 0.9))
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(large, *stream), 5)
    assert went[:3] == ["small 0", "small 1", "large"]  # in once those before it settled


async def test_a_draft_waiting_for_room_keeps_its_own_time_for_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for room counted against the draft's DRAFT_SECONDS: a draft queued behind
    calls under way timed out without the model ever being asked, and the card said the
    model had not answered in time."""
    monkeypatch.setattr(drafting, "DRAFT_SECONDS", 0.5)
    async for app in open_steward(tmp_path, budget_daily=0.1):  # room for one draft alone
        budgets = app.coordinator.budgets
        assert budgets is not None
        async with budgets.room(None, 0.05):  # a call under way
            drafting_run = asyncio.create_task(app.engine.start("onboarding", ONBOARD, "cli:shell"))
            await asyncio.sleep(1.0)
            assert not drafting_run.done()  # waiting for room, not for the model
        view = await asyncio.wait_for(drafting_run, 5)
    assert view.approval is not None
    assert view.approval.card["text_by"] == "the model house-model"


async def test_a_history_answer_waiting_for_room_keeps_its_own_time_for_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for room counted against the answer's ANSWER_SECONDS, as it no longer
    did a draft's: a question asked behind a draft under way got the records alone,
    the model never asked."""
    monkeypatch.setattr(history_module, "ANSWER_SECONDS", 0.5)
    async for app in open_steward(tmp_path, budget_daily=0.1, operators="telegram:42"):
        await app.engine.start("onboarding", ONBOARD, "cli:shell")
        await app.history.sync.catch_up()
        budgets = app.coordinator.budgets
        assert budgets is not None
        question = Inbound(Sender("telegram", "42"), "c", "u1", text="/history welcome Acme")
        async with budgets.room(None, 0.05):  # a call under way: no room for another
            asking = asyncio.create_task(app.door.receive(question))
            await asyncio.sleep(1.0)
            assert not asking.done()  # waiting for room, not for the model
        reply = await asyncio.wait_for(asking, 5)
    assert reply is not None
    assert reply.texts[0].startswith("Dear Acme, draft 1.\n\nSources:")  # the model's


async def test_a_route_waiting_for_room_keeps_its_own_time_for_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for room counted against ROUTE_SECONDS: plain words sent behind a draft
    under way were "not understood: it did not answer within 20 s", the model never
    asked."""
    monkeypatch.setattr(routing, "ROUTE_SECONDS", 0.5)
    async with fake_openai() as server:
        answer = {"process": "onboarding", "inputs": [], "confidence": 0.9}
        server.answers.append(json.dumps(answer))
        settings = load_settings(
            home=tmp_path / "home",
            llm_model="gpt-4o-mini",
            openai_base_url=server.url,
            openai_api_key="sk-test",
            budget_daily=0.01,  # room for one call of gpt-4o-mini alone
        )
        async with Steward.open(settings) as app:
            budgets = app.coordinator.budgets
            assert budgets is not None
            async with budgets.room(None, 0.008):
                text = "greet Globex, they bought our top tier"
                routing_words = asyncio.create_task(app.coordinator.router.by_model(text))
                await asyncio.sleep(1.0)
                assert not routing_words.done() and not server.chats
            route = await asyncio.wait_for(routing_words, 5)
    assert route is not None and route.process.name == "onboarding"


async def test_a_draft_that_finds_no_room_in_time_says_so_on_its_card(
    tmp_path: Path,
) -> None:
    async for app in open_steward(tmp_path, budget_daily=0.1):
        budgets = app.coordinator.budgets
        assert budgets is not None
        budgets.patience = 0.2
        async with budgets.room(None, 0.05):
            view = await asyncio.wait_for(app.engine.start("onboarding", ONBOARD, "cli:shell"), 5)
        spent = await app.ledger.model_spend()
    assert view.approval is not None and spent == 0  # the model was not asked
    assert view.approval.card["text_by"] == (
        "the process's template (the model was not asked: for 0.2 s the model calls under "
        "way left the budget no room for it)"
    )


async def test_a_call_cancelled_on_its_way_out_gives_its_room_back(tmp_path: Path) -> None:
    """Cancelled again while it waited to say it was done (steward stopping, say), a
    call kept its room for good: calls near the limit waited behind it until they gave
    up."""
    async for app in open_steward(tmp_path):
        budgets = Budgets(app.ledger, UTC_ZONE, daily=1.0)
        entered = asyncio.Event()

        async def call(budgets: Budgets, entered: asyncio.Event) -> None:
            async with budgets.room(None, 0.9):
                entered.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(call(budgets, entered))
        await entered.wait()
        async with budgets._settled:  # another call holds it: the way out waits
            task.cancel()
            await asyncio.sleep(0.01)
            task.cancel()  # and is cancelled there
            await asyncio.sleep(0.01)
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(1):
            async with budgets.room(None, 0.9):  # not behind a call that is gone
                pass


async def test_a_call_that_gives_no_answer_is_recorded_and_one_given_up_on_is_paid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only answered calls were recorded: a model given up on after DRAFT_SECONDS had
    read (and billed) the prompt, and a failing one was called again and again, with
    nothing of either in /budget or the run's timeline."""

    class Hung(GenericFakeChatModel):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            await asyncio.sleep(3600)
            raise AssertionError("not reached")

    class Down(GenericFakeChatModel):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            raise ConnectionError("the model server is down")

    monkeypatch.setattr(drafting, "DRAFT_SECONDS", 0.05)
    async for app in open_steward(tmp_path):
        hung, down = Hung(messages=iter([])), Down(messages=iter([]))
        names = ("house-model", "house-model")
        models = LanguageModels(hung, down, app.ledger, names, app.coordinator.budgets)
        app.engine.drafter = Drafter(models)
        view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
        assert view.approval is not None  # the template drafted
        asked = await app.ledger.model_spend(view.run.id)
        with pytest.raises(ConnectionError):
            await models.complete("Hello?", purpose="history", fast=True)
        spending = await app.coordinator.spending()
    assert asked > 0.0001  # the prompt read, at $2.00 a million tokens
    assert spending.calls == 2 and spending.month == pytest.approx(asked)


async def test_a_model_that_counts_no_tokens_is_priced_by_its_text_and_still_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Some OpenAI-compatible servers leave usage out: each call was recorded as free,
    and no budget ever stopped them."""
    settings = load_settings(
        home=tmp_path / "home",
        llm_model="house-model",
        openai_base_url="http://127.0.0.1:9/v1",  # never called: the models are fakes
        model_prices="house-model=2000/10000",  # dollars a million tokens: 1 token, $0.002
        budget_daily=0.5,
    )
    fake = GenericFakeChatModel(messages=iter([AIMessage(content="Dear Acme, " * 10)] * 50))
    models = LanguageModels(fake, fake, ledger=None, names=("house-model", "house-model"))  # type: ignore[arg-type]
    async with Steward.open(settings, models=models) as app:
        models.ledger = app.ledger
        first = await app.engine.start("onboarding", ONBOARD, "cli:shell")
        spent = await app.ledger.model_spend(first.run.id)
        assert spent > 0.2  # ~100 bytes of prompt and 110 of answer, a token each four
        assert "house-model gave no token counts" in caplog.text
        stopped = None
        for _ in range(3):
            stopped = await app.engine.start("onboarding", ONBOARD, "cli:shell")
        assert stopped is not None and stopped.run.error_class == "budget"


async def test_a_process_budget_stops_only_that_process(tmp_path: Path) -> None:
    budgets = "onboarding=0.005,newsletter_issue=0.5"
    async for app in open_steward(tmp_path, process_budgets=budgets):
        first = await app.engine.start("onboarding", ONBOARD, "cli:shell")
        assert first.approval is not None
        second = await app.engine.start("onboarding", ONBOARD, "cli:shell")
        assert second.run.error_class == "budget"
        assert "onboarding's model budget for the month is spent" in (second.run.error or "")
        invoice = {
            "client": "Acme",
            "email": "billing@acme.com",
            "invoice": "INV-7",
            "amount": "1200",
            "due_date": "2026-11-01",
        }
        other = await app.engine.start("invoice_followup", invoice, "cli:shell")
        assert other.approval is not None  # another process's model calls go on
        report = await app.coordinator.budget_report()
        assert "onboarding           0.0070 of 0.0050" in report
        assert "newsletter_issue     0.0000 of 0.5000" in report  # a budget, nothing spent
        spending = await app.coordinator.spending()
        assert spending.by_process["onboarding"] == (pytest.approx(0.007), 0.005)
        assert spending.to_json()["by_process"][0] == {  # type: ignore[index]
            "process": "onboarding",
            "spent": pytest.approx(0.007),
            "monthly_limit": 0.005,
        }


async def test_a_model_that_runs_on_is_cut_at_the_cap_and_its_draft_not_used(
    tmp_path: Path,
) -> None:
    """No answer had a cap: a model that ran on was paid for every token it wrote, past
    any budget, and its endless text went on the card to be sent."""
    async with fake_openai() as server:
        server.answers.append("welcome " * 50_000)
        settings = load_settings(
            home=tmp_path / "home",
            llm_model="gpt-4o",
            openai_base_url=server.url,
            openai_api_key="sk-test",
        )
        async with Steward.open(settings) as app:
            view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
            spent = await app.ledger.model_spend(view.run.id)
            drafted = (await timeline(app.ledger, view.run))[0].decision
    assert server.chats[0]["max_completion_tokens"] == ANSWER_TOKENS
    assert spent == pytest.approx((100 * 2.50 + ANSWER_TOKENS * 10.00) / 1e6)  # paid for
    assert view.approval is not None
    card = view.approval.card
    assert "welcome welcome" not in (card["text"] or "")  # the template's text instead
    assert card["text_by"] == "the process's template (the model failed)"
    assert f"its answer ran past {ANSWER_TOKENS:,} tokens and was cut off" in drafted


@pytest.mark.parametrize("trouble", [500, 0.5], ids=["a 500", "no answer in time"])
async def test_each_attempt_at_a_call_is_recorded_and_paid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trouble: float
) -> None:
    """The OpenAI client tried a failed call again by itself: the server saw two
    requests and the ledger one, and a draft whose first attempt was given up on (after
    the model had read, and billed, its prompt) was paid once."""
    monkeypatch.setattr(models, "RETRY", Retry(base_delay=0.01, timeout=0.2))
    async with fake_openai() as server:
        server.trouble.append(trouble)
        server.answers += ["Dear Acme, welcome."] * 2
        settings = load_settings(
            home=tmp_path / "home",
            llm_model="gpt-4o",
            openai_base_url=server.url,
            openai_api_key="sk-test",
        )
        async with Steward.open(settings) as app:
            view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
            spent = await app.ledger.model_spend(view.run.id)
            spending = await app.coordinator.spending()
    assert view.approval is not None and view.approval.card["text_by"] == "the model gpt-4o"
    assert len(server.chats) == 2 and spending.calls == 2
    answered = (100 * 2.50 + 3 * 10.00) / 1e6
    if trouble == 500:
        assert spent == pytest.approx(answered)  # a request refused is not billed
    else:
        assert spent > answered + 50 * 2.50 / 1e6  # and the prompt read the first time


async def test_an_embedding_finds_room_at_once_or_not_at_all(tmp_path: Path) -> None:
    """An embedding is held to the daily budget without waiting for room (its records
    wait, stored for keyword search), and a model priced at nothing is never stopped."""
    async for app in open_steward(tmp_path):
        budgets = Budgets(app.ledger, UTC_ZONE, daily=0.1)
        texts = ["storefront photos delayed by flu"]
        async with budgets.room(None, 0.1):  # a draft under way that may spend it all
            with pytest.raises(EmbeddingFailed, match="left the budget no room for it"):
                async with asyncio.timeout(1):  # not Budgets.patience's 5 minutes
                    async with budgets.embedding_room("text-embedding-3-small", texts):
                        pass
        await budgets.record_embedding("text-embedding-3-large", ["x" * 4_000_000], 1.0)
        with pytest.raises(EmbeddingFailed, match=r"daily model budget is spent \(\$0\.13"):
            async with budgets.embedding_room("text-embedding-3-small", texts):
                pass
        async with budgets.embedding_room("nomic-embed-text", texts):  # free: it goes
            pass


@pytest.mark.postgres
async def test_stewards_sharing_a_ledger_cannot_spend_past_its_budget_together(
    tmp_path: Path, postgres_database: DatabaseURL
) -> None:
    """Each steward held its calls' room in its own memory: two on one ledger each ran
    three calls at once against a day with room for three, and spent $0.06 of $0.035."""
    async with fake_openai() as server:
        server.trouble += [0.5] * 8  # each answer takes a while: the calls overlap
        drivers = []
        for n in range(2):  # one after the other: each migrates the ledger as it opens
            driver = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.graph.budget_driver",
                str(tmp_path / f"home{n}"),
                postgres_database.url.render_as_string(hide_password=False),
                server.url,
                "4",
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert driver.stdout is not None
            assert await asyncio.wait_for(driver.stdout.readline(), 120) == b"ready\n"
            drivers.append(driver)
        for driver in drivers:
            assert driver.stdin is not None
            driver.stdin.write(b"go\n")
            await driver.stdin.drain()
        said = [await asyncio.wait_for(driver.communicate(), 60) for driver in drivers]
        assert [driver.returncode for driver in drivers] == [0, 0]
    answered = sum(int(out.split()[0]) for out, _ in said)
    ledger = Ledger.from_url(postgres_database)
    try:
        spent = await ledger.model_spend()
    finally:
        await ledger.close()
    assert answered == len(server.chats) == 4  # three at once, then one alone
    assert spent == pytest.approx(0.04)


async def test_a_hold_left_by_a_steward_that_died_mid_call_lapses(ledger: Ledger) -> None:
    """A steward killed while its call was under way never lets its hold go: the room
    comes back once the hold lapses (HOLD_SECONDS), not never."""
    now = utcnow()
    limits = [SpendLimit(now - timedelta(hours=1), 0.015)]
    until = now + timedelta(seconds=HOLD_SECONDS)
    assert await ledger.hold_model_room(ModelHold("died", None, 0.01, until), limits, now) is None
    waiting = ModelHold("waiting", None, 0.01, until)
    refused = await ledger.hold_model_room(waiting, limits, now)
    assert refused is not None and not refused.spent_out  # held by the call under way
    lapsed = now + timedelta(seconds=HOLD_SECONDS + 1)
    assert await ledger.hold_model_room(waiting, limits, lapsed) is None


async def test_months_and_days_are_the_operators(tmp_path: Path) -> None:
    async for app in open_steward(tmp_path):
        budgets = Budgets(app.ledger, ZoneInfo("America/New_York"))
        late = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)  # still 30 November in New York
        assert budgets.day_start(late) == datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
        assert budgets.month_start(late) == datetime(2026, 11, 1, 4, 0, tzinfo=UTC)


async def test_a_dated_snapshot_is_priced_as_its_model(tmp_path: Path) -> None:
    """STEWARD_LLM_MODEL=gpt-4o-2024-08-06 was priced at nothing: no budget ever
    stopped its calls, and /budget said it had no price."""
    async for app in open_steward(tmp_path):
        budgets = Budgets(app.ledger, UTC_ZONE)
        assert budgets.cost("gpt-4o-2024-08-06", 1000, 100) == budgets.cost("gpt-4o", 1000, 100)
        assert budgets.cost("gpt-4o-mini-2024-07-18", 1000, 100) == pytest.approx(0.00021)
        assert budgets.cost("gpt-4o-audio-preview", 1000, 100) == 0  # another model


def test_prices_and_budgets_are_checked_in_settings() -> None:
    assert parse_prices("a=1/2, b=0/0") == {"a": (1.0, 2.0), "b": (0.0, 0.0)}
    with pytest.raises(SettingsError, match="STEWARD_MODEL_PRICES: 'gpt-4o=cheap'"):
        load_settings(model_prices="gpt-4o=cheap")
    with pytest.raises(SettingsError, match="STEWARD_PROCESS_BUDGETS: 'onboarding'"):
        load_settings(process_budgets="onboarding")
    with pytest.raises(SettingsError, match="STEWARD_BUDGET_DAILY"):
        load_settings(budget_daily=-1)
