"""Every pending approval card reaches a chat once: those a crash kept from going out,
and those of runs started from a shell, are announced by the scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from bot.app import Steward
from bot.scheduler import ANNOUNCE_AFTER, ANNOUNCE_CLAIM, Scheduler
from bot.service import Service
from bot.settings import load_settings
from graph import engine as engine_module
from graph.front_door import cut_off_text
from graph.messages import Inbound, Reply, Sender
from memory.ledger import utcnow
from tests.homes import steward_with

START = "/run onboarding client=Acme email=jane@acme.com package=basic"
ONBOARDING = {"client": "Acme", "email": "jane@acme.com", "package": "basic"}


@pytest.fixture
async def steward(tmp_path: Path) -> AsyncIterator[Steward]:
    settings = load_settings(home=tmp_path / "home", operators="telegram:1")
    async with Steward.open(settings) as steward:
        yield steward


async def test_a_card_whose_announcing_was_cut_short_is_announced_when_the_claim_lapses(
    steward: Steward,
) -> None:
    view = await steward.engine.start("onboarding", ONBOARDING, "cli")
    assert view.approval is not None

    async def dies(reply: Reply, reply_to: dict[str, Any] | None) -> None:
        raise Crash  # the process dies as it hands the card to its channels

    due = utcnow() + ANNOUNCE_AFTER
    cut = Scheduler(steward.ledger, steward.engine, steward.coordinator, dies, clock=lambda: due)
    with pytest.raises(Crash):
        await cut.tick()
    news = News()
    await scheduler(steward, news, due).tick()
    assert news.cards == []  # another scheduler's claim holds for a while
    await scheduler(steward, news, due + ANNOUNCE_CLAIM + timedelta(seconds=1)).tick()
    assert [approval for approval, _ in news.cards] == [view.approval.id]


class Crash(BaseException):
    """The process dies here: nothing after it is written."""


class News:
    def __init__(self) -> None:
        self.cards: list[tuple[str, Any]] = []

    async def notify(self, reply: Reply, reply_to: dict[str, Any] | None) -> None:
        self.cards += [(card.approval_id, reply_to) for card in reply.cards]


def scheduler(steward: Steward, news: News, at: datetime) -> Scheduler:
    return Scheduler(
        steward.ledger, steward.engine, steward.coordinator, news.notify, clock=lambda: at
    )


async def test_a_card_from_a_run_started_in_a_shell_is_announced_once(steward: Steward) -> None:
    view = await steward.engine.start("onboarding", ONBOARDING, "cli")
    assert view.approval is not None
    news = News()
    await scheduler(steward, news, utcnow()).tick()
    assert news.cards == []  # the shell's own command may still hand it out
    later = scheduler(steward, news, utcnow() + ANNOUNCE_AFTER)
    await later.tick()
    await later.tick()
    await scheduler(steward, news, utcnow() + ANNOUNCE_AFTER).tick()  # another process
    assert news.cards == [(view.approval.id, None)]


async def test_a_card_handed_to_a_channel_is_not_announced_again(steward: Steward) -> None:
    inbound = Inbound(Sender("telegram", "1"), "1", "u1", text=START)
    inbox_id = await steward.door.accept(inbound)
    assert inbox_id is not None
    owed = await steward.door.answer(inbox_id, inbound)
    assert owed.reply.cards
    news = News()
    await scheduler(steward, news, utcnow() + ANNOUNCE_AFTER).tick()
    assert news.cards == []


async def test_a_card_a_crash_kept_from_its_chat_is_announced_there(steward: Steward) -> None:
    """The process dies after the run reached its gate and before the reply was kept."""
    inbound = Inbound(Sender("telegram", "1"), "1", "u1", text=START)
    inbox_id = await steward.door.accept(inbound)
    assert inbox_id is not None
    describe = steward.coordinator._describe

    def dies(*args: Any) -> Any:  # as the card is put together, the run at its gate
        raise Crash

    steward.coordinator._describe = dies  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await steward.door.answer(inbox_id, inbound)
    steward.coordinator._describe = describe  # type: ignore[method-assign]
    assert await steward.door.stored("telegram") == []  # handled: not handled again
    # Its reply is gone: what is owed is the word that steward was cut off, no card.
    (owed,) = await steward.door.owed("telegram")
    assert owed.reply.texts == [cut_off_text(inbound)] and owed.reply.cards == []

    news = News()
    await scheduler(steward, news, utcnow() + ANNOUNCE_AFTER).tick()
    ((approval_id, reply_to),) = news.cards
    (pending,) = await steward.ledger.pending_approvals()
    assert approval_id == pending.id and reply_to == {"channel": "telegram", "chat_id": "1"}


WAIT_THEN_ASK = """\
name: wait_then_ask
title: Wait, then ask
description: waits a second, then asks for approval
steps:
  - id: pause
    kind: wait
    for: 1s
  - id: approve_it
    kind: approval
    title: Approve it
    summary: Approve it
"""


async def test_a_card_the_terminal_showed_as_news_is_not_announced_again(tmp_path: Path) -> None:
    async with steward_with(tmp_path, {"wait_then_ask": WAIT_THEN_ASK}) as steward:
        news = News()
        service = Service(steward, [], fallback=news.notify)  # as `steward chat` runs it
        inbound = Inbound(
            Sender("console", "operator"), "terminal", "t1", text="/run wait_then_ask"
        )
        await steward.door.receive(inbound)
        service.scheduler.clock = lambda: utcnow() + timedelta(seconds=2)
        await service.scheduler.tick()  # the wait ends, the gate opens, its card is news
        assert len(news.cards) == 1
        service.scheduler.clock = lambda: utcnow() + ANNOUNCE_AFTER + timedelta(seconds=2)
        await service.scheduler.tick()
        assert len(news.cards) == 1


async def test_the_card_of_a_run_whose_stop_failed_to_be_recorded_comes_once_it_is(
    steward: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator was told the press failed; when the scheduler resumes the stalled run,
    the next card reaches the chat the run came from."""
    monkeypatch.setattr(engine_module, "STALLED_FIRST_RETRY", 0.0)
    premium = {**ONBOARDING, "package": "premium"}
    reply_to = {"channel": "telegram", "chat_id": "1"}
    view = await steward.engine.start("onboarding", premium, "telegram:1", reply_to)
    assert view.approval is not None
    write = steward.ledger.write
    failed = []

    async def fails_once(fn: Any, durable: bool = True) -> Any:
        if not failed and fn.__qualname__.endswith("_settle.<locals>.record"):
            failed.append(fn)
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))
        return await write(fn, durable)

    monkeypatch.setattr(steward.ledger, "write", fails_once)
    with pytest.raises(OperationalError):
        await steward.engine.decide(view.approval.id, True, "telegram:1")
    news = News()
    await scheduler(steward, news, utcnow()).tick()
    (pending,) = await steward.ledger.pending_approvals()
    assert pending.step_id == "approve_folder"
    assert news.cards == [(pending.id, reply_to)]
