"""Two services on one home (bot/service.py, bot/worker_slot.py): each is a worker of its
own, neither takes up what the other holds while it lives, and what one leaves at its
stop goes to the other within a beat."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot import service as service_module
from bot.app import Steward
from bot.http import HttpServer
from bot.service import Service
from bot.settings import load_settings
from bot.worker_slot import WorkerSlot
from graph.front_door import FrontDoor
from graph.messages import CardOutcome, Inbound, Reply, Sender


class Keeper:
    """A channel that keeps the keys of the replies it takes up, and sends nothing."""

    name = "telegram"
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
                await until(lambda: second.replies == ["owed by the first"])
                assert second.deliveries == ["update-1"]
                await asyncio.sleep(0.2)
                assert second.replies == ["owed by the first"]  # taken once
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
