"""The audit log's hash chain on every backend: it verifies while intact, and reports
each kind of tampering done behind the ledger's back with plain SQL."""

from __future__ import annotations

import asyncio
import itertools

from sqlalchemy import delete, select, update

from memory.ledger import Ledger, NewAuditEvent
from memory.ledger import schema as t
from memory.ledger.audit import GENESIS


async def append_events(ledger: Ledger, count: int = 5) -> list[int]:
    seqs = []
    for i in range(count):
        event = await ledger.audit(
            NewAuditEvent(f"telegram:{i}", "test.event", f"subject-{i}", {"i": i, "note": "é"})
        )
        seqs.append(event.seq)
    return seqs


async def test_appended_events_form_a_verified_chain(ledger: Ledger) -> None:
    seqs = await append_events(ledger)

    events = await ledger.audit_events()
    assert [e.seq for e in events] == seqs
    assert seqs == sorted(seqs)
    assert events[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    assert events[2].data == {"i": 2, "note": "é"}
    assert events[2].actor == "telegram:2"
    assert events[0].at.utcoffset() is not None

    report = await ledger.verify_audit()
    assert report.ok, report.problems
    assert report.checked == 5

    head = await ledger.db.run(
        lambda conn: conn.execute(select(t.audit_head.c.seq, t.audit_head.c.hash)).one(),
        write=False,
    )
    assert (head.seq, head.hash) == (events[-1].seq, events[-1].hash)
    assert [e.seq for e in await ledger.audit_events(after_seq=seqs[2])] == seqs[3:]
    assert [e.seq for e in await ledger.audit_events(limit=2)] == seqs[:2]


async def test_numbers_the_database_writes_its_own_way_keep_the_chain_whole(
    ledger: Ledger,
) -> None:
    """PostgreSQL gives back 1e16 as 10000000000000000 and -0.0 as 0.0: an event holds
    its numbers as the database will give them back, so that its hash still matches."""
    data = {"amount": 1e16, "big": [-2.5e20], "zero": -0.0, "small": 1.5e-7, "plain": 12.5}
    event = await ledger.audit(NewAuditEvent("cli:shell", "run.started", "r1", data))
    assert event.data == {
        "amount": 10_000_000_000_000_000,
        "big": [-250_000_000_000_000_000_000],
        "zero": 0.0,
        "small": 1.5e-7,
        "plain": 12.5,
    }
    [stored] = await ledger.audit_events()
    assert stored.data == event.data
    report = await ledger.verify_audit()
    assert report.ok, report.problems


async def test_changed_data_is_reported(ledger: Ledger) -> None:
    seqs = await append_events(ledger)
    await ledger.db.run(
        lambda conn: conn.execute(
            update(t.audit_events)
            .where(t.audit_events.c.seq == seqs[2])
            .values(data={"i": 2, "note": "forged"})
        )
    )

    report = await ledger.verify_audit()

    assert not report.ok
    assert any(f"event {seqs[2]}" in p and "changed" in p for p in report.problems)


async def test_deleted_middle_event_is_reported(ledger: Ledger) -> None:
    seqs = await append_events(ledger)
    await ledger.db.run(
        lambda conn: conn.execute(delete(t.audit_events).where(t.audit_events.c.seq == seqs[2]))
    )

    report = await ledger.verify_audit()

    assert not report.ok
    assert report.checked == 4
    assert any(f"event {seqs[3]}" in p and "deleted" in p for p in report.problems)


async def test_deleted_first_event_is_reported(ledger: Ledger) -> None:
    seqs = await append_events(ledger)
    await ledger.db.run(
        lambda conn: conn.execute(delete(t.audit_events).where(t.audit_events.c.seq == seqs[0]))
    )

    report = await ledger.verify_audit()

    assert not report.ok
    assert any(f"event {seqs[1]}" in p for p in report.problems)


async def test_deleted_last_event_is_reported(ledger: Ledger) -> None:
    seqs = await append_events(ledger)
    await ledger.db.run(
        lambda conn: conn.execute(delete(t.audit_events).where(t.audit_events.c.seq == seqs[-1]))
    )

    report = await ledger.verify_audit()

    assert not report.ok
    assert report.checked == 4
    assert any("at the end were deleted" in p for p in report.problems)


async def test_deleted_whole_log_is_reported(ledger: Ledger) -> None:
    await append_events(ledger)
    await ledger.db.run(lambda conn: conn.execute(delete(t.audit_events)))

    report = await ledger.verify_audit()

    assert not report.ok
    assert report.checked == 0


async def test_changed_actor_is_reported(ledger: Ledger) -> None:
    seqs = await append_events(ledger)
    await ledger.db.run(
        lambda conn: conn.execute(
            update(t.audit_events).where(t.audit_events.c.seq == seqs[1]).values(actor="mallory")
        )
    )

    report = await ledger.verify_audit()

    assert not report.ok
    assert any(f"event {seqs[1]}" in p and "changed" in p for p in report.problems)


async def test_missing_head_is_reported(ledger: Ledger) -> None:
    await append_events(ledger)
    await ledger.db.run(lambda conn: conn.execute(delete(t.audit_head)))

    report = await ledger.verify_audit()

    assert not report.ok
    assert any("head" in p for p in report.problems)


async def test_concurrent_appends_keep_one_chain(ledger: Ledger) -> None:
    events = await asyncio.gather(
        *(
            ledger.audit(NewAuditEvent("worker", "test.concurrent", f"s{i}", {"i": i}))
            for i in range(20)
        )
    )

    assert len({e.seq for e in events}) == 20
    assert len({e.prev_hash for e in events}) == 20  # no two events claim the same parent
    report = await ledger.verify_audit()
    assert report.ok, report.problems
    assert report.checked == 20
    stored = await ledger.audit_events()
    assert sorted(e.data["i"] for e in stored) == list(range(20))
