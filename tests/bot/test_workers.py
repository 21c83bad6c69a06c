"""Two services on one home (bot/service.py, bot/worker_slot.py): each is a worker of its
own, neither takes up what the other holds while it lives, and what one leaves at its
stop goes to the other within a beat."""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot import service as service_module
from bot import worker_slot
from bot.app import Steward
from bot.channel import FAILED, answer
from bot.http import HttpServer
from bot.outbox import Outbox
from bot.service import Service
from bot.settings import load_settings
from bot.worker_slot import ShellSlot, WorkerSlot, gone_shells
from graph.front_door import FrontDoor
from graph.messages import CardOutcome, Inbound, Reply, Sender
from memory.ledger import RunStatus, TakenOver
from tests.stalls import stalled_after_its_email


class Keeper:
    """A channel that keeps the keys of the replies it takes up, and sends nothing."""

    name = account = "telegram"
    settled_here = None
    needs_http = False

    def __init__(self, door: FrontDoor) -> None:
        self.door = door
        self.replies: list[str] = []
        self.deliveries: list[str] = []

    def mount(self, http: HttpServer) -> None:
        pass

    async def start(self) -> None:
        await self._take(own=True)

    async def take_over(self) -> None:
        await self._take(own=False)

    async def _take(self, own: bool) -> None:
        self.replies += [owed.reply.items[0] for owed in await self.door.owed(self.name, own)]
        stored = await self.door.stored(self.name, own)
        self.deliveries += [inbound.external_id for _, inbound in stored]

    async def stop(self, drain_seconds: float = 10.0) -> None:
        pass

    async def idle(self) -> None:
        pass

    async def deliver(self, reply: Reply, reply_to: dict[str, Any] | None) -> None:
        pass

    async def settle(self, outcome: CardOutcome) -> None:
        pass

    def describe(self) -> str:
        return "keeper"


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not within 4 s")


async def test_two_services_share_a_home_and_hand_over_at_a_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "BEAT_SECONDS", 0.05)
    settings = load_settings(home=tmp_path / "home")
    message = Inbound(Sender("telegram", "42"), "42", "update-1", text="/runs")
    async with Steward.open(settings) as one, Steward.open(settings) as other:
        first, second = Keeper(one.door), Keeper(other.door)
        service = Service(one, [first])
        async with service:
            await one.door.owe("telegram", "42", Reply(["owed by the first"]))
            assert await one.door.accept(message) is not None
            async with Service(other, [second]):
                assert one.ledger.worker.endswith("#0")
                assert other.ledger.worker.endswith("#1")
                await asyncio.sleep(0.3)  # beats of both: neither takes the other's
                assert (second.replies, second.deliveries) == ([], [])
                await service.stop()
                handed_over = (["owed by the first"], ["update-1"])
                await until(lambda: (second.replies, second.deliveries) == handed_over)
                await asyncio.sleep(0.2)
                assert (second.replies, second.deliveries) == handed_over  # taken once
        assert first.replies == first.deliveries == []


async def test_a_slot_is_free_again_once_its_process_lets_go(tmp_path: Path) -> None:
    first = WorkerSlot.claim(tmp_path)
    second = WorkerSlot.claim(tmp_path)
    assert (first.worker[-2:], second.worker[-2:]) == ("#0", "#1")
    first.release()
    again = WorkerSlot.claim(tmp_path)
    assert again.worker == first.worker
    second.release()
    again.release()


def test_a_shell_s_slot_is_never_found_unlocked_while_it_is_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its file was made under its own name and locked after: a service looking between
    the two took the command for one gone, deleted its file and took up its runs."""
    seen: list[list[str]] = []
    lock = fcntl.flock

    def looked_at_first(handle: int, how: int) -> None:
        if not seen:  # the claim's lock: a service looks, in the microseconds before it
            seen.append([])
            seen[0] = gone_shells(tmp_path)
        lock(handle, how)

    monkeypatch.setattr(worker_slot.fcntl, "flock", looked_at_first)
    slot = ShellSlot.claim(tmp_path)
    monkeypatch.undo()
    assert seen == [[]]
    assert gone_shells(tmp_path) == []  # it lives, its file locked
    slot.release()
    assert list((tmp_path / "workers").iterdir()) == []


class DoorThatRaises:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def answer(
        self, inbox_id: int, inbound: Inbound, ahead: object, account: str | None = None
    ) -> Any:
        raise self.error


@pytest.mark.parametrize("taken_over", [True, False])
async def test_a_delivery_taken_over_mid_handling_is_left_to_its_new_worker(
    taken_over: bool,
) -> None:
    """The worker that took it over answers it; this one says nothing, not even that its
    handling failed, which it says for any other error."""
    error = TakenOver("delivery 1 is no longer held by a") if taken_over else RuntimeError("bug")
    said: list[tuple[str, Reply]] = []

    async def send(chat_id: str, reply: Reply, answering: Inbound) -> None:
        said.append((chat_id, reply))

    outbox = Outbox(DoorThatRaises(error), "telegram", send)  # type: ignore[arg-type]
    message = Inbound(Sender("telegram", "42"), "42", "update-1", text="/runs")
    if taken_over:
        await answer(outbox, send, (1, message))
        assert said == []
    else:
        with pytest.raises(RuntimeError):
            await answer(outbox, send, (1, message))
        assert [reply.texts for _, reply in said] == [[FAILED]]
    assert outbox.owed_here == 0


async def test_a_terminal_beside_a_service_resumes_a_run_whose_stop_it_failed_to_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`steward chat` leaves the timers to a `steward run` serving Telegram or Slack, not
    such a run, which no other worker takes while this one lives."""
    settings = load_settings(home=tmp_path / "home")
    async with (
        Steward.open(settings) as steward,
        Steward.open(settings) as beside,
        Service(steward, [], tick_seconds=0.05, defers_to_platforms=True),
    ):
        await beside.ledger.register_worker("host:4242", serves_platforms=True)
        run_id = await stalled_after_its_email(steward, monkeypatch)
        statuses: list[RunStatus] = []

        async def moved_on() -> None:
            for _ in range(200):
                run = await steward.ledger.get_run(run_id)
                assert run is not None
                if run.status is not RunStatus.RUNNING:
                    statuses.append(run.status)
                    return
                await asyncio.sleep(0.02)

        await moved_on()
        assert statuses == [RunStatus.WAITING]  # at its next gate
