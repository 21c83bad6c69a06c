"""Prepared statements read and write exactly what SQLAlchemy's own execution does,
on SQLite and PostgreSQL, and fail the way it fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError

from memory.ledger import Ledger
from memory.ledger import schema as t
from memory.ledger.prepared import Prepared

AT = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
INSERT_TIMER = Prepared(insert(t.timers).returning(t.timers.c.id))
GET_TIMER = Prepared(select(t.timers).where(t.timers.c.key == bindparam("timer_key")))
FIRE = Prepared(
    update(t.timers)
    .where(t.timers.c.key == bindparam("timer_key"))
    .where(t.timers.c.status == "pending")  # a value written into the statement
)
PAYLOAD = {"event": "paid", "amount": 120.5, "tags": ["a", "ü"], "nested": {"none": None}}


def timer(key: str) -> dict[str, object]:
    return {
        "key": key,
        "kind": "wait",
        "due_at": AT,
        "run_id": None,
        "payload": PAYLOAD,
        "status": "pending",
    }


async def test_values_written_prepared_read_back_as_sqlalchemy_reads_them(ledger: Ledger) -> None:
    new_id = await ledger.db.run(lambda conn: INSERT_TIMER.scalar(conn, timer("t1")))
    core = await ledger.db.run(
        lambda conn: conn.execute(select(t.timers).where(t.timers.c.key == "t1")).one()
    )
    assert core.id == new_id
    assert core.payload == PAYLOAD
    assert core.due_at == AT and core.due_at.tzinfo is not None

    await ledger.db.run(lambda conn: conn.execute(insert(t.timers).values(**timer("t2"))))
    prepared = await ledger.db.run(lambda conn: GET_TIMER.one(conn, {"timer_key": "t2"}))
    assert prepared.payload == PAYLOAD
    assert prepared.due_at == AT and prepared.due_at.tzinfo == UTC
    assert prepared.status == "pending" and prepared.run_id is None


async def test_a_statement_touches_the_rows_it_names_and_counts_them(ledger: Ledger) -> None:
    await ledger.db.run(lambda conn: INSERT_TIMER.many(conn, [timer("a"), timer("b")]))

    async def fire(key: str) -> int:
        return await ledger.db.run(lambda c: FIRE.run(c, {"timer_key": key, "status": "fired"}))

    assert await fire("a") == 1
    assert await fire("a") == 0  # no longer pending
    rows = await ledger.db.run(
        lambda conn: [(r.key, r.status) for r in GET_TIMER.rows(conn, {"timer_key": "a"})]
    )
    assert rows == [("a", "fired")]
    assert await ledger.db.run(lambda conn: GET_TIMER.first(conn, {"timer_key": "zz"})) is None


async def test_driver_errors_are_sqlalchemy_errors_and_roll_back(ledger: Ledger) -> None:
    await ledger.db.run(lambda conn: INSERT_TIMER.scalar(conn, timer("dup")))

    def twice(conn: Connection) -> None:
        INSERT_TIMER.scalar(conn, timer("other"))
        INSERT_TIMER.scalar(conn, timer("dup"))

    with pytest.raises(IntegrityError):
        await ledger.db.run(twice)
    assert await ledger.db.run(lambda conn: GET_TIMER.first(conn, {"timer_key": "other"})) is None


def test_a_statement_that_needs_rendering_at_execution_is_refused() -> None:
    listed = Prepared(select(t.timers).where(t.timers.c.status.in_(["a", "b"])))

    class Conn:
        dialect = sqlite.dialect()

    with pytest.raises(ValueError, match="rendered at execution"):
        listed.rows(Conn())  # type: ignore[arg-type]
