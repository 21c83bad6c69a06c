"""Text from outside that a database cannot hold — a NUL character, a lone surrogate —
in a run's inputs, a model's draft, a connector's answer or its error: the run goes on
with U+FFFD in its place, on either database (PostgreSQL refuses both, in text, in JSON
and in LangGraph's checkpoints, at every try)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from bot.app import Steward
from bot.settings import load_settings
from connectors import DataError
from graph.effects import RetryPolicy
from graph.messages import Reply
from graph.models import LanguageModels
from memory.database_url import DatabaseURL
from memory.ledger import RunStatus, storable
from tests.graph.test_engine import Flaky, approved_onboarding, outbox, use_connector

UNSTORABLE = "\x00\ud800\udcff"
REPLACED = "\ufffd\ufffd\ufffd"
ONBOARD = {"client": "Acme", "email": "jane@acme.com", "package": "basic"}


@pytest.fixture
async def app(database_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Steward]:
    settings = load_settings(
        home=tmp_path / "home",
        database_url=database_url.setting,
        llm_model="house-model",
        openai_base_url="http://127.0.0.1:9/v1",  # never called: the models are fakes
    )
    drafts = iter([AIMessage(f"Dear Jane,{UNSTORABLE} welcome aboard.")])
    fake = GenericFakeChatModel(messages=drafts)
    models = LanguageModels(fake, fake, ledger=None, names=("house-model", "house-model"))  # type: ignore[arg-type]
    retry = RetryPolicy(attempts=1, base_delay=0.001, max_delay=0.002, timeout=5)
    async with Steward.open(settings, models=models, retry=retry) as steward:
        models.ledger = steward.ledger
        yield steward


async def test_inputs_and_a_draft_that_cannot_be_stored_reach_the_effect_replaced(
    app: Steward,
) -> None:
    inputs = ONBOARD | {"client": f"Acme{UNSTORABLE} Bakery"}
    view = await app.engine.start("onboarding", inputs, "cli:shell")
    assert view.run.status is RunStatus.WAITING
    assert view.run.inputs["client"] == f"Acme{REPLACED} Bakery"
    assert view.approval is not None
    assert view.approval.card["text"] == f"Dear Jane,{REPLACED} welcome aboard."
    assert f"client:Acme{REPLACED} Bakery" in await app.ledger.entities()

    decision = await app.engine.decide(view.approval.id, True, "cli:shell")
    assert decision.view is not None and decision.view.run.status is RunStatus.SUCCEEDED
    [sent] = outbox(app)
    assert sent["params"]["body"] == f"Dear Jane,{REPLACED} welcome aboard."
    assert (await app.ledger.verify_audit()).ok


async def test_a_reason_and_an_edit_that_cannot_be_stored_are_kept_replaced(
    app: Steward,
) -> None:
    edited = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    rejected = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    assert edited.approval is not None and rejected.approval is not None
    text = f"Hello{UNSTORABLE} Jane"
    await app.engine.decide(edited.approval.id, True, "cli:shell", edited_text=text)
    await app.engine.decide(rejected.approval.id, False, "cli:shell", reason=f"no{UNSTORABLE}")
    [sent] = outbox(app)
    assert sent["params"]["body"] == f"Hello{REPLACED} Jane"
    approval = await app.ledger.get_approval(rejected.approval.id)
    assert approval is not None and approval.reason == f"no{REPLACED}"
    assert (await app.ledger.verify_audit()).ok


class Failing(GenericFakeChatModel):
    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"upstream said {UNSTORABLE}")


async def test_a_model_failure_whose_words_cannot_be_stored_falls_back_to_the_template(
    app: Steward,
) -> None:
    models = app.engine.drafter.models
    assert models is not None
    models.strong = models.fast = Failing(messages=iter([]))
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    assert view.run.status is RunStatus.WAITING and view.approval is not None
    assert view.approval.card["text"].startswith("Hi Acme team")
    [draft] = await app.ledger.run_steps(view.run.id)
    assert draft.detail["note"] == f"model failed: upstream said {REPLACED}"


async def test_a_reply_with_an_error_s_words_is_kept_for_its_channel(app: Steward) -> None:
    await app.door.owe("telegram", "7", Reply().say(f"A delivery failed: {UNSTORABLE}."))
    [owed] = await app.door.owed("telegram")
    assert owed.reply.texts == [f"A delivery failed: {REPLACED}."]
    await app.door.give_up(owed, f"undeliverable: {UNSTORABLE}")
    assert await app.door.owed("telegram") == []
    [dropped] = [e for e in await app.ledger.audit_events() if e.kind == "reply.dropped"]
    assert dropped.data["reason"] == f"undeliverable: {REPLACED}"


class Answering(Flaky):
    async def perform(self, action: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        await super().perform(action, params, key)
        return {"message_id": f"<{UNSTORABLE}@mail>", UNSTORABLE: [UNSTORABLE]}


async def test_a_connector_answer_that_cannot_be_stored_is_kept_replaced(app: Steward) -> None:
    use_connector(app, connector := Answering([]))
    run = await approved_onboarding(app)
    assert run.status is RunStatus.SUCCEEDED
    effect = await app.ledger.get_effect(f"{run.id}:send_welcome")
    assert effect is not None and effect.status == "done"
    assert effect.result == {"message_id": f"<{REPLACED}@mail>", REPLACED: [REPLACED]}
    assert connector.calls == 1


async def test_a_connector_error_that_cannot_be_stored_fails_the_run_visibly(
    app: Steward,
) -> None:
    use_connector(app, Flaky([DataError(f"mailbox {UNSTORABLE} does not exist")]))
    run = await approved_onboarding(app)
    assert run.status is RunStatus.FAILED and run.error_class == "data"
    assert run.error == f"mailbox {REPLACED} does not exist"
    effect = await app.ledger.get_effect(f"{run.id}:send_welcome")
    assert effect is not None and effect.error == run.error
    assert (await app.ledger.verify_audit()).ok


class Point(NamedTuple):
    name: str
    size: int


def test_storable_keeps_what_holds_nothing_unstorable_as_the_very_object() -> None:
    clean = {"text": "héllo 👋", "list": [1, "two", ("three",)], "none": None}
    assert storable(clean) is clean
    dirty = {"text": "a\x00b", "list": [1, "\ud83d", ("\udfff",)], UNSTORABLE: 2.5}
    assert storable(dirty) == {
        "text": "a\ufffdb",
        "list": [1, "\ufffd", ("\ufffd",)],
        REPLACED: 2.5,
    }
    assert storable(Point("x\x00", 2)) == Point("x\ufffd", 2)
