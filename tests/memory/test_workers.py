"""Workers sharing one ledger (memory/ledger/ledger.py, "workers"): a delivery stored but
not handled, a reply kept but not sent, and a run set running, belong to the worker that
took them; another takes them over only once that one is gone. Run on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import update

from memory.database_url import DatabaseURL
from memory.ledger import (
    Ledger,
    LedgerTx,
    NewAuditEvent,
    OwedReply,
    Run,
    RunStatus,
    RunTakenOver,
    TakenOver,
    utcnow,
)
from memory.ledger import schema as t
from memory.ledger.ledger import _TAKING_OVER, LEASE


@asynccontextmanager
async def worker(url: DatabaseURL, name: str | None) -> AsyncIterator[Ledger]:
    """A process on the ledger: registered as ``name``, or not registered at all."""
    ledger = Ledger.from_url(url)
    await ledger.setup()
    if name is not None:
        await ledger.register_worker(name)
    try:
        yield ledger
    finally:
        await ledger.close()


async def store(ledger: Ledger, update_id: str) -> int:
    inbox_id = await ledger.accept_inbound("telegram", update_id, {"text": update_id})
    assert inbox_id is not None
    return inbox_id


async def owe(ledger: Ledger, key: str) -> None:
    await ledger.owe_reply(OwedReply(key, "telegram", "42", {"reply": key}, 0, utcnow()))


async def inbox_of(ledger: Ledger, own: bool = True) -> list[str]:
    return [item.external_id for item in await ledger.take_over_inbound("telegram", own)]


async def replies_of(ledger: Ledger, own: bool = True) -> list[str]:
    return [reply.key for reply in await ledger.take_over_replies("telegram", own)]


async def set_running(ledger: Ledger, run_id: str) -> None:
    now = utcnow()
    run = Run(run_id, "onboarding", "v1", RunStatus.RUNNING, {}, "cli:shell", now, now)
    await ledger.write(lambda tx: tx.insert_run(run))


async def runs_of(ledger: Ledger, own: bool = True) -> list[str]:
    return [run.id for run in await ledger.take_over_runs(own)]


async def fall_silent(ledger: Ledger, name: str) -> None:
    """As if ``name`` died a lease ago: its last beat is that old."""
    stale = utcnow() - LEASE - LEASE / 10
    query = update(t.workers).where(t.workers.c.id == name).values(seen_at=stale)
    await ledger.db.run(lambda conn: conn.execute(query))


async def test_a_live_workers_deliveries_and_replies_stay_its_own(
    database_url: DatabaseURL,
) -> None:
    async with worker(database_url, "a") as a, worker(database_url, "b") as b:
        await store(a, "u1")
        await owe(a, "r1")
        await store(b, "u2")
        assert (await inbox_of(b), await replies_of(b)) == (["u2"], [])
        assert (await inbox_of(a), await replies_of(a)) == (["u1"], ["r1"])
        await a.heartbeat()
        assert (await inbox_of(b, own=False), await replies_of(b, own=False)) == ([], [])


async def test_a_worker_silent_past_its_lease_is_taken_over_once(
    database_url: DatabaseURL,
) -> None:
    async with (
        worker(database_url, "a") as a,
        worker(database_url, "b") as b,
        worker(database_url, "c") as c,
    ):
        await store(a, "u1")
        await store(a, "u2")
        await owe(a, "r1")
        handled = await store(a, "u3")
        await a.finish_inbound(handled)
        await fall_silent(b, "a")
        # Two workers look at once: each delivery and each reply goes to one of them.
        taken = await asyncio.gather(inbox_of(b, own=False), inbox_of(c, own=False))
        assert sorted(taken[0] + taken[1]) == ["u1", "u2"]
        owed = await asyncio.gather(replies_of(b, own=False), replies_of(c, own=False))
        assert sorted(owed[0] + owed[1]) == ["r1"]
        # Taken once: a second look finds nothing new, and "a" coming back finds nothing.
        assert await inbox_of(b, own=False) == await inbox_of(c, own=False) == []
        await a.heartbeat()
        assert (await inbox_of(a), await replies_of(a)) == ([], [])


async def test_a_retired_worker_leaves_its_work_to_the_others_at_once(
    database_url: DatabaseURL,
) -> None:
    async with worker(database_url, "a") as a, worker(database_url, "b") as b:
        await store(a, "u1")
        await owe(a, "r1")
        await a.retire_worker()
        assert (await inbox_of(b, own=False), await replies_of(b, own=False)) == (["u1"], ["r1"])
        # What it took it holds: asking again with its own gives the same, once.
        assert (await inbox_of(b), await replies_of(b)) == (["u1"], ["r1"])
        assert (await inbox_of(b, own=False), await replies_of(b, own=False)) == ([], [])


async def test_a_restarted_worker_takes_up_what_its_crashed_self_held_at_once(
    database_url: DatabaseURL,
) -> None:
    """A process restarted after a crash registers under the crashed one's name (its
    slot), so it need not wait for the lease: its last beat is seconds old."""
    async with worker(database_url, "a") as crashed, worker(database_url, "b") as other:
        await store(crashed, "u1")
        await owe(crashed, "r1")
        async with worker(database_url, "a") as restarted:
            assert (await inbox_of(other), await replies_of(other)) == ([], [])
            assert (await inbox_of(restarted), await replies_of(restarted)) == (["u1"], ["r1"])


async def test_what_no_worker_holds_is_anyones(database_url: DatabaseURL) -> None:
    """Kept by a process that is no service (a shell command, a test), or by a ledger
    from before workers existed: the first worker to look takes it."""
    async with worker(database_url, None) as shell, worker(database_url, "b") as b:
        await store(shell, "u1")
        await owe(shell, "r1")
        assert (await inbox_of(b, own=False), await replies_of(b, own=False)) == (["u1"], ["r1"])


async def test_a_heartbeat_registers_a_worker_another_retired_again(
    database_url: DatabaseURL,
) -> None:
    async with worker(database_url, "a") as a, worker(database_url, "b") as b:
        await store(a, "u1")
        async with worker(database_url, "a") as stand_in:  # another process of that name
            await stand_in.retire_worker()
        await a.heartbeat()
        await store(a, "u2")
        assert await inbox_of(b, own=False) == ["u1"]  # let go by the retirement
        assert await inbox_of(a) == ["u2"]  # the live worker's own again


@pytest.mark.postgres
async def test_a_taker_waiting_on_a_row_sees_the_worker_that_registered_meanwhile(
    postgres_database: DatabaseURL,
) -> None:
    """X registers and takes a gone worker's delivery while Y's take-over waits on it:
    Y must judge the row against the workers alive once it may go on, and leave it."""
    async with worker(postgres_database, "gone") as gone, worker(postgres_database, "y") as y:
        inbox_id = await store(gone, "u1")
        await fall_silent(y, "gone")
        with psycopg.connect(postgres_database.libpq) as x:  # X, one statement at a time
            x.execute("SELECT pg_advisory_xact_lock(%s)", (_TAKING_OVER,))
            x.execute(
                "INSERT INTO workers (id, pid, started_at, seen_at) VALUES ('x', 1, now(), now())"
            )
            x.execute("UPDATE inbox SET owner = 'x' WHERE id = %s", (inbox_id,))
            taking = asyncio.create_task(inbox_of(y, own=False))
            await asyncio.sleep(0.5)
            assert not taking.done()  # Y waits for X
            x.commit()
        assert await taking == []
        assert await inbox_of(y) == []


@pytest.mark.parametrize("writes", [True, False])
async def test_a_handling_whose_delivery_was_taken_over_meanwhile_commits_nothing(
    database_url: DatabaseURL, writes: bool
) -> None:
    """ "a" froze mid-handling past its lease and "b" took the delivery: when "a" wakes, its
    handling's first write (a run started, say), or its done mark when it wrote nothing,
    commits nothing; "b"'s handling stands."""
    async with worker(database_url, "a") as a, worker(database_url, "b") as b:
        inbox_id = await store(a, "u1")
        await fall_silent(b, "a")
        assert await inbox_of(b, own=False) == ["u1"]

        with pytest.raises(TakenOver):
            async with a.handling(inbox_id):
                if writes:
                    await a.write(lambda tx: tx.note_entity("client:Acme"))
        assert await a.entities() == []
        assert await inbox_of(b) == ["u1"]  # still "b"'s to handle

        async with b.handling(inbox_id):
            await b.write(lambda tx: tx.note_entity("client:Globex"))
        assert await b.entities() == ["client:Globex"]
        assert await inbox_of(b) == []


def freeze(ledger: Ledger, seconds: float) -> None:
    """As if the process stopped for ``seconds`` after its last beat."""
    assert ledger._last_beat is not None
    began, at = ledger._last_beat
    ledger._last_beat = (began - seconds, at - timedelta(seconds=seconds))


async def test_a_worker_in_doubt_of_its_lease_asks_before_it_sends(
    database_url: DatabaseURL,
) -> None:
    async with worker(database_url, "a") as a, worker(database_url, "b") as b:
        await owe(a, "r1")
        await owe(a, "r2")
        assert not a.lease_in_doubt()
        freeze(a, LEASE.total_seconds() * 1.1)
        assert a.lease_in_doubt()
        await fall_silent(b, "a")
        assert await replies_of(b, own=False) == ["r1", "r2"]
        await b.reply_sent("r2")  # "b" sent it already

        assert not await a.still_holds_reply("r1")
        assert not await a.still_holds_reply("r2")
        assert not a.lease_in_doubt()  # asking said it lives

        await owe(a, "r3")
        freeze(a, LEASE.total_seconds() / 2 + 1)
        assert a.lease_in_doubt()
        assert await a.still_holds_reply("r3")
        assert await replies_of(b, own=False) == []  # its beat is fresh again


async def test_a_worker_that_never_registered_holds_no_lease_to_doubt(
    database_url: DatabaseURL,
) -> None:
    async with worker(database_url, None) as anyone:
        assert not anyone.lease_in_doubt()


async def test_a_running_run_is_its_workers_while_it_lives_then_taken_over_once(
    database_url: DatabaseURL,
) -> None:
    async with (
        worker(database_url, "a") as a,
        worker(database_url, "b") as b,
        worker(database_url, "c") as c,
    ):
        await set_running(a, "run1")
        await set_running(a, "run2")
        await a.write(lambda tx: tx.update_run("run2", status=RunStatus.WAITING.value))
        assert await runs_of(b) == []
        assert await runs_of(a) == ["run1"]  # a waiting run is nobody's to move
        await fall_silent(b, "a")
        taken = await asyncio.gather(runs_of(b, own=False), runs_of(c, own=False))
        assert sorted(taken[0] + taken[1]) == ["run1"]
        assert await runs_of(b, own=False) == await runs_of(c, own=False) == []


async def test_a_worker_back_after_its_run_was_taken_over_records_nothing_of_it(
    database_url: DatabaseURL,
) -> None:
    """ "a" froze mid-step past its lease and "b" took the run: the stop "a" records when
    it wakes commits nothing, and "b"'s stands. A run cancelled meanwhile is no take-over:
    the stop is not recorded, and says so."""
    async with worker(database_url, "a") as a, worker(database_url, "b") as b:
        await set_running(a, "run1")
        await fall_silent(b, "a")
        assert await runs_of(b, own=False) == ["run1"]

        def stop(tx: LedgerTx) -> bool:
            tx.audit(NewAuditEvent("steward", "run.succeeded", "run1"))
            return tx.update_running_run("run1", status=RunStatus.SUCCEEDED.value)

        with pytest.raises(TakenOver):
            await a.write(stop)
        assert [e.kind for e in await a.audit_events()] == []
        assert await b.write(stop)
        await set_running(b, "run2")
        await b.write(lambda tx: tx.update_run("run2", status=RunStatus.CANCELLED.value))
        assert not await b.write(lambda tx: tx.update_running_run("run2", current_step="x"))


async def test_a_worker_back_after_its_run_was_taken_over_begins_no_effect(
    database_url: DatabaseURL,
) -> None:
    """Woken past its lease, "a" would have acted beside "b", which acts for the run now
    (an email sent twice, or stopped as uncertain in "b")."""
    async with worker(database_url, "a") as a, worker(database_url, "b") as b:
        await set_running(a, "run1")
        await fall_silent(b, "a")
        assert await runs_of(b, own=False) == ["run1"]
        with pytest.raises(RunTakenOver):
            await a.begin_effect("run1:send", "run1", "send", "email", {})
        assert await a.get_effect("run1:send") is None
        assert await b.begin_effect("run1:send", "run1", "send", "email", {}) is None


async def test_a_worker_back_after_its_run_was_taken_over_and_ended_leaves_it_as_ended(
    database_url: DatabaseURL,
) -> None:
    """Woken past its lease after "b" took its run over and ended it, "a" tried its
    effect again, recorded it done a second time, and told the operator the run was done
    again: a run at another worker's stop (its end, or its next gate) is that worker's."""
    async with worker(database_url, "a") as a, worker(database_url, "b") as b:
        await set_running(a, "run1")
        await fall_silent(b, "a")
        assert await runs_of(b, own=False) == ["run1"]

        def end(tx: LedgerTx) -> bool:
            return tx.update_running_run("run1", status=RunStatus.SUCCEEDED.value)

        assert await b.write(end)
        with pytest.raises(RunTakenOver):
            await a.may_still_act("run1", "run1:send")
        with pytest.raises(RunTakenOver):
            await a.begin_effect("run1:send", "run1", "send", "email", {})
        with pytest.raises(RunTakenOver):
            await a.write(end)


async def test_a_process_keeps_the_runs_it_set_running_before_it_registered(
    database_url: DatabaseURL,
) -> None:
    async with worker(database_url, None) as a, worker(database_url, "b") as b:
        await set_running(a, "run1")
        await a.register_worker("a")
        assert await runs_of(b, own=False) == []
        assert await runs_of(a) == ["run1"]


async def test_a_retired_worker_leaves_its_running_runs_to_the_others_at_once(
    database_url: DatabaseURL,
) -> None:
    async with worker(database_url, "a") as a, worker(database_url, "b") as b:
        await set_running(a, "run1")
        await a.retire_worker()
        assert await runs_of(b, own=False) == ["run1"]


async def test_a_run_with_no_owner_is_left_to_a_start(database_url: DatabaseURL) -> None:
    """Set running by a steward from before owners, which may be moving it still in a
    rolling upgrade: a start takes it, as that steward's start would; a beat does not."""
    async with worker(database_url, "b") as b:
        await set_running(b, "run1")
        ownerless = update(t.runs).where(t.runs.c.id == "run1").values(owner=None)
        await b.db.run(lambda conn: conn.execute(ownerless))
        assert await runs_of(b, own=False) == []
        assert await runs_of(b) == ["run1"]
