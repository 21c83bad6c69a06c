"""The ledger: runs, steps, approvals, inbox, audit log, effects, timers, costs and
long-term memory's journal.

One implementation over SQLAlchemy Core serves SQLite and PostgreSQL. Each public
method is one transaction, run in one trip to the database (see ``database.py``);
``write(fn)`` runs several writes of a caller's as one transaction the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from time import monotonic
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.selectable import Subquery

from memory.database_url import DatabaseURL
from memory.ledger import schema as t
from memory.ledger.audit import GENESIS, ChainReport, as_stored, event_hash, verify_chain
from memory.ledger.database import Database, may_write, open_database, reading_only
from memory.ledger.errors import (
    LedgerError,
    LedgerUnavailable,
    RunCancelled,
    RunTakenOver,
    TakenOver,
    cause,
)
from memory.ledger.migrate import UnknownRevision, upgrade_to_head
from memory.ledger.prepared import Prepared
from memory.ledger.records import (
    NEVER,
    RUN_STATUSES,
    Approval,
    ApprovalStatus,
    AuditEvent,
    CardMessage,
    IdempotencyRecord,
    InboxItem,
    KeptEvent,
    ModelCall,
    ModelHold,
    NewAuditEvent,
    NoHold,
    OpenWork,
    OwedReply,
    Place,
    Run,
    RunLine,
    RunStatus,
    SpendLimit,
    StepEntry,
    Timer,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
# A worker silent this long is gone, and what it held is taken over; a live one beats
# far more often (bot/service.py).
LEASE = timedelta(seconds=30)

Deferred = Callable[["LedgerTx"], None]


@dataclass(frozen=True)
class _Rider:
    write: Deferred
    droppable: bool  # True: losing it is no worse than a crash at this point
    durable: Callable[[], bool]  # committed on its own: whether it waits for the disk
    then: Callable[[], None] | None = None  # called once it has committed


@dataclass
class Handling:
    """What ``Ledger.handling`` marked its inbox item: "done" (with the handling's first
    write, or at its end), "failed" (set aside), or None while it is not marked."""

    marked: str | None = None


def _committed(riders: list[_Rider]) -> None:
    for rider in riders:
        if rider.then is not None:
            try:
                rider.then()
            except Exception:  # what committed stands
                log.exception("a callback after a ledger write failed")


# How long a write that can wait (Ledger.soon) waits for another to ride with.
SOON_SECONDS = 1.0

# Writes deferred in this task until its next transaction (see Ledger.batching).
_deferred: ContextVar[list[_Rider] | None] = ContextVar("steward_deferred", default=None)


def _always() -> bool:
    return True


def utcnow() -> datetime:
    return datetime.now(UTC)


# Hot statements are built once and prepared (see prepared.py): SQLAlchemy spends more
# time building and executing a statement than SQLite spends running it.
_AUDIT_HEAD = select(t.audit_head.c.seq, t.audit_head.c.hash).where(t.audit_head.c.id == 1)
_AUDIT_END = select(t.audit_head.c.seq).where(t.audit_head.c.id == 1)
_READ_HEAD = Prepared(_AUDIT_HEAD)
_READ_HEAD_LOCKED = Prepared(_AUDIT_HEAD.with_for_update())
_INSERT_AUDIT = Prepared(insert(t.audit_events).returning(t.audit_events.c.seq))
_MOVE_HEAD = Prepared(
    update(t.audit_head)
    .where(t.audit_head.c.id == 1)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)
_INSERT_RUN = Prepared(insert(t.runs))
_GET_RUN = Prepared(select(t.runs).where(t.runs.c.id == bindparam("run_id")))
_RUN_STATUS = Prepared(select(t.runs.c.status).where(t.runs.c.id == bindparam("run_id")))
_RUN_HELD = Prepared(
    select(t.runs.c.status, t.runs.c.owner).where(t.runs.c.id == bindparam("run_id"))
)
# Runs the daily list looks at: not yet over.
OPEN_STATUSES = (RunStatus.WAITING, RunStatus.RUNNING, RunStatus.FAILED, RunStatus.PAUSED)
_UPDATE_RUN = update(t.runs).where(t.runs.c.id == bindparam("run_id"))
_MOVE_RUN = Prepared(_UPDATE_RUN)
_MOVE_HELD_RUN = Prepared(  # a running run, by the worker moving it
    _UPDATE_RUN.where(
        t.runs.c.status == RunStatus.RUNNING.value,
        or_(t.runs.c.owner == bindparam("worker"), t.runs.c.owner.is_(None)),
    )
)
_THE_CARD = (
    t.card_messages.c.channel == bindparam("in_channel"),
    t.card_messages.c.approval_id == bindparam("card"),
)
_LOCK_CARD = Prepared(
    select(t.card_messages.c.messages, t.card_messages.c.outcome)
    .where(*_THE_CARD)
    .with_for_update()
)
_KEEP_CARD = Prepared(update(t.card_messages).where(*_THE_CARD))
_DELETE_REPLY = Prepared(delete(t.replies).where(t.replies.c.key == bindparam("key")))
_INSERT_STEP = Prepared(insert(t.steps))
_INSERT_APPROVAL = Prepared(insert(t.approvals))
_GET_APPROVAL = Prepared(select(t.approvals).where(t.approvals.c.id == bindparam("approval_id")))
_GATE_APPROVAL = Prepared(
    select(t.approvals).where(
        t.approvals.c.run_id == bindparam("run_id"),
        t.approvals.c.step_id == bindparam("step_id"),
        t.approvals.c.visit == bindparam("visit"),
    )
)
_INSERT_TIMER = Prepared(insert(t.timers))
_GET_TIMER = Prepared(select(t.timers).where(t.timers.c.key == bindparam("timer_key")))
_INSERT_INBOX = Prepared(insert(t.inbox).returning(t.inbox.c.id))
_INSERT_ANSWERED = Prepared(insert(t.inbox))
_STORED_INBOX = Prepared(
    select(t.inbox.c.id).where(
        t.inbox.c.channel == bindparam("channel"),
        t.inbox.c.external_id == bindparam("external_id"),
    )
)
_GET_EFFECT = Prepared(select(t.idempotency).where(t.idempotency.c.key == bindparam("effect_key")))
_INSERT_EFFECT = Prepared(insert(t.idempotency))
_UPDATE_EFFECT = Prepared(
    update(t.idempotency).where(t.idempotency.c.key == bindparam("effect_key"))
)
_AUDIT_AFTER = (
    select(t.audit_events)
    .where(t.audit_events.c.seq > bindparam("after_seq"))
    .order_by(t.audit_events.c.seq)
)
# A record whose id is in the journal already stays as it is.
_JOURNAL_SQLITE = Prepared(
    sqlite_insert(t.memory_journal).on_conflict_do_nothing(index_elements=["record_id"])
)
_JOURNAL_POSTGRESQL = Prepared(
    postgresql_insert(t.memory_journal).on_conflict_do_nothing(index_elements=["record_id"])
)
# Journal writers take turns on PostgreSQL, so that entries commit in the order of their
# numbers and a reader never moves past one that commits later.
_JOURNAL_TURN = text("SELECT pg_advisory_xact_lock(7410235)")
_ENTITY_SQLITE = Prepared(
    sqlite_insert(t.entities).on_conflict_do_nothing(index_elements=["entity"])
)
_ENTITY_POSTGRESQL = Prepared(
    postgresql_insert(t.entities).on_conflict_do_nothing(index_elements=["entity"])
)
_FINISH_INBOX = Prepared(update(t.inbox).where(t.inbox.c.id == bindparam("inbox_id")))
_FINISH_HELD_INBOX = Prepared(
    update(t.inbox).where(
        t.inbox.c.id == bindparam("inbox_id"),
        t.inbox.c.owner == bindparam("worker"),
        t.inbox.c.status == "new",
    )
)
_OWE_REPLY = Prepared(insert(t.replies))
_REPLACE_REPLY = Prepared(
    update(t.replies)
    .where(t.replies.c.key == bindparam("reply_key"), t.replies.c.owner == bindparam("held_by"))
    .values(payload=bindparam("payload"), sent_steps=0)
)
_FORGET_REPLY = Prepared(
    delete(t.replies).where(
        t.replies.c.key == bindparam("reply_key"), t.replies.c.owner == bindparam("held_by")
    )
)
_ANNOUNCE = Prepared(
    update(t.approvals)
    .where(t.approvals.c.id == bindparam("approval_id"), t.approvals.c.announced_at.is_(None))
    .values(announced_at=bindparam("now"))
)


def _newest_runs(statuses: tuple[RunStatus, ...], limit: int | None, limit_each: bool) -> Subquery:
    """The ids and times of the newest runs in these statuses (any, if none). Each
    status's newest come from its own index range, so the cost stays that of the
    ``limit`` rows however many runs there are (equalities, not IN: an IN list is
    rendered at every execution).

    ``limit_each`` (PostgreSQL): each range has its own ORDER BY and LIMIT, which it
    merges in order (Merge Append) and stops at ``limit``; without them it reads and
    sorts every run in the statuses. SQLite merges the bare ranges in index order and
    stops at ``limit``; a LIMIT in each would have it sort each range, then the whole
    (five sorts of 31 rows: ~20 µs of /runs' ~110 µs in SQLite)."""
    r = t.runs
    if statuses:
        each = [select(r.c.id, r.c.created_at).where(r.c.status == s.value) for s in statuses]
        if limit_each:
            each = [
                select(*e.order_by(r.c.created_at.desc()).limit(limit).subquery().c) for e in each
            ]
        union = union_all(*each).subquery()
        runs = select(union.c.id, union.c.created_at).order_by(union.c.created_at.desc())
    else:
        runs = select(r.c.id, r.c.created_at).order_by(r.c.created_at.desc())
    return runs.limit(limit).subquery()


@cache
def _runs_newest_first(
    statuses: tuple[RunStatus, ...], limit: int | None, limit_each: bool
) -> Prepared:
    """Runs in these statuses (any, if none), newest first: one prepared statement for
    each of the few combinations asked for (/runs, /runs all, recovery)."""
    newest = _newest_runs(statuses, limit, limit_each)
    query = (
        select(t.runs)
        .select_from(newest.join(t.runs, t.runs.c.id == newest.c.id))
        .order_by(newest.c.created_at.desc(), newest.c.id)
    )
    return Prepared(query)


@cache
def _run_lines(statuses: tuple[RunStatus, ...], limit: int, limit_each: bool) -> Prepared:
    """The newest runs in these statuses (any, if none), each with its pending approval's
    id and summary: the columns a list shows, no JSON but the summary, taken out by SQL."""
    r, a = t.runs, t.approvals
    newest = _newest_runs(statuses, limit, limit_each)
    pending = and_(a.c.run_id == r.c.id, a.c.status == ApprovalStatus.PENDING.value)
    query = (
        select(
            r.c.id,
            r.c.process,
            r.c.status,
            r.c.current_step,
            r.c.error,
            r.c.error_class,
            a.c.id.label("approval_id"),
            a.c.card["summary"].as_string().label("approval_summary"),
        )
        .select_from(newest.join(r, r.c.id == newest.c.id).outerjoin(a, pending))
        .order_by(newest.c.created_at.desc(), newest.c.id, a.c.created_at, a.c.id)
    )
    return Prepared(query)


_EXPIRY_PREFIX = "expire:"
_LISTED = (RunStatus.FAILED.value, RunStatus.PAUSED.value)  # a run the daily list shows


def expiry_key(approval_id: str) -> str:
    """The key of the timer at which an approval expires."""
    return f"{_EXPIRY_PREFIX}{approval_id}"


def _insert_into(conn: Connection, table: Table) -> Any:
    """An INSERT into ``table`` in the dialect of ``conn``, which knows ON CONFLICT."""
    insert_of = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return insert_of(table)


def _locked_card(conn: Connection, channel: str, approval_id: str) -> tuple[list[Any], str | None]:
    """The messages of ``channel`` showing the card, and its outcome there, with the
    card's row locked until the transaction ends (made first, if need be)."""
    conn.execute(
        _insert_into(conn, t.card_messages)
        .values(channel=channel, approval_id=approval_id, messages=[], outcome=None)
        .on_conflict_do_nothing(index_elements=["channel", "approval_id"])
    )
    row = _LOCK_CARD.one(conn, {"in_channel": channel, "card": approval_id})
    return list(row.messages), row.outcome


def _keep_card(
    conn: Connection, channel: str, approval_id: str, messages: list[Any], outcome: str | None
) -> None:
    where = {"in_channel": channel, "card": approval_id}
    _KEEP_CARD.run(conn, {**where, "messages": messages, "outcome": outcome})


class LedgerTx:
    """Reads and writes inside one open transaction (runs on the database's side), for
    ``worker``: a run it sets running is its own to move (see ``take_over_runs``)."""

    def __init__(self, conn: Connection, worker: str | None = None) -> None:
        self.conn = conn
        self.worker = worker

    # -- audit ---------------------------------------------------------------------------

    def audit(self, new: NewAuditEvent, at: datetime | None = None) -> AuditEvent:
        at = at or utcnow()
        # On PostgreSQL appends queue on the head row's lock: one chain, never a fork.
        locked = self.conn.dialect.name == "postgresql"
        head = (_READ_HEAD_LOCKED if locked else _READ_HEAD).one(self.conn)
        data = as_stored(new.data)
        digest = event_hash(head.hash, at, new.actor, new.kind, new.subject, data)
        seq = _INSERT_AUDIT.scalar(
            self.conn,
            {
                "at": at,
                "actor": new.actor,
                "kind": new.kind,
                "subject": new.subject,
                "data": data,
                "prev_hash": head.hash,
                "hash": digest,
            },
        )
        _MOVE_HEAD.run(self.conn, {"new_seq": seq, "new_hash": digest})
        return AuditEvent(seq, at, new.actor, new.kind, new.subject, data, head.hash, digest)

    def audit_event(self, seq: int) -> AuditEvent | None:
        row = self.conn.execute(select(t.audit_events).where(t.audit_events.c.seq == seq)).first()
        return _audit(row) if row else None

    def audit_after(self, seq: int, limit: int) -> list[AuditEvent]:
        query = _AUDIT_AFTER.limit(limit)
        return [_audit(row) for row in self.conn.execute(query, {"after_seq": seq})]

    # -- long-term memory's journal --------------------------------------------------------

    def journal(self, records: Sequence[dict[str, Any]]) -> None:
        """Adds memory records (``MemoryRecord.to_dict()``) to the journal; a record whose
        id is there already is left as it is."""
        if not records:
            return
        rows = [
            {
                "record_id": record["id"],
                "entity": record.get("entity"),
                "at": datetime.fromisoformat(record["at"]),
                "body": record,
            }
            for record in records
        ]
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(_JOURNAL_TURN)
            _JOURNAL_POSTGRESQL.many(self.conn, rows)
        else:
            _JOURNAL_SQLITE.many(self.conn, rows)

    def note_entity(self, entity: str) -> None:
        """Records that a run was about ``entity``; known ones stay as they were."""
        postgresql = self.conn.dialect.name == "postgresql"
        statement = _ENTITY_POSTGRESQL if postgresql else _ENTITY_SQLITE
        statement.run(self.conn, {"entity": entity, "first_seen": utcnow()})

    # -- runs and steps ------------------------------------------------------------------

    def insert_run(self, run: Run) -> None:
        _INSERT_RUN.run(self.conn, self._held(_run_values(run)))

    def get_run(self, run_id: str) -> Run | None:
        row = _GET_RUN.first(self.conn, {"run_id": run_id})
        return _run(row) if row else None

    def run_status(self, run_id: str) -> RunStatus | None:
        status = _RUN_STATUS.scalar(self.conn, {"run_id": run_id})
        return RunStatus(status) if status is not None else None

    def update_run(self, run_id: str, **values: Any) -> None:
        values.setdefault("updated_at", utcnow())
        _MOVE_RUN.run(self.conn, {"run_id": run_id, **self._held(values)})
        self._listed_anew(run_id, values)

    def update_running_run(self, run_id: str, **values: Any) -> bool:
        """Updates a run only while it is running: a cancel that came first stands.
        Raises ``RunTakenOver`` when another worker took the run over meanwhile (this one
        looked gone): nothing this transaction wrote commits, and that worker's moving
        of the run stands alone."""
        values.setdefault("updated_at", utcnow())
        held = {"run_id": run_id, "worker": self.worker, **values}
        if _MOVE_HELD_RUN.run(self.conn, held) == 1:
            self._listed_anew(run_id, values)
            return True
        row = _RUN_HELD.first(self.conn, {"run_id": run_id})
        if row is not None and self._another_moved(row.status, row.owner):
            raise RunTakenOver(f"run {run_id} is no longer moved by {self.worker}")
        return False

    def may_act(self, run_id: str, key: str) -> None:
        """Raises ``RunCancelled`` for a cancelled run, and ``RunTakenOver`` for a running
        one another worker moves now (this one looked gone): ``key``'s effect is not for
        this worker to make. One read of the run."""
        row = _RUN_HELD.first(self.conn, {"run_id": run_id})
        if row is None:
            return
        if row.status == RunStatus.CANCELLED.value:
            raise RunCancelled(f"run {run_id} was cancelled; {key} was not performed")
        if self._another_moved(row.status, row.owner):
            raise RunTakenOver(f"run {run_id} is moved by another worker; {key} was not")

    def _another_moved(self, status: str, owner: str | None) -> bool:
        """Whether a run this worker was moving is another's: running in another worker,
        or moved on by one (to its next stop, or its end) after it took the run over."""
        return status != RunStatus.CANCELLED.value and owner not in (self.worker, None)

    def moves(self, run_id: str) -> bool:
        """Whether this worker still moves the running run ``run_id``."""
        owner = self.conn.execute(select(t.runs.c.owner).where(t.runs.c.id == run_id))
        return owner.scalar_one_or_none() in (self.worker, None)

    def _listed_anew(self, run_id: str, values: dict[str, Any]) -> None:
        """A run that fails or is paused is an item of the daily list again, its card
        keyed by the run: where the last one showed, and what it was settled with (Resume
        pressed), are forgotten, or the new one would show that outcome at once."""
        if values.get("status") in _LISTED:
            self.conn.execute(
                delete(t.card_messages).where(t.card_messages.c.approval_id == run_id)
            )

    def _held(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` of a run; one that sets it running makes it this worker's."""
        if values.get("status") == RunStatus.RUNNING.value:
            return {**values, "owner": self.worker}
        return values

    def claim_timer(self, timer_id: int, worker: str, woken: dict[str, Any] | None) -> bool:
        """Takes a pending timer; ``woken`` is kept with it so recovery can replay the wake."""
        timer = self.conn.execute(select(t.timers).where(t.timers.c.id == timer_id)).first()
        if timer is None or timer.status != "pending":
            return False
        payload = dict(timer.payload) | ({"woken": woken} if woken is not None else {})
        claimed = self.conn.execute(
            update(t.timers)
            .where(t.timers.c.id == timer_id, t.timers.c.status == "pending")
            .values(status="fired", claimed_by=worker, fired_at=utcnow(), payload=payload)
        )
        return claimed.rowcount == 1

    def append_steps(self, run_id: str, entries: Sequence[StepEntry]) -> None:
        if entries:
            _INSERT_STEP.many(
                self.conn,
                [
                    {
                        "run_id": run_id,
                        "seq": e.seq,
                        "step_id": e.step_id,
                        "kind": e.kind,
                        "status": e.status,
                        "detail": e.detail,
                        "at": e.at,
                    }
                    for e in entries
                ],
            )

    # -- approvals -----------------------------------------------------------------------

    def insert_approval(self, approval: Approval) -> None:
        _INSERT_APPROVAL.run(self.conn, _approval_values(approval))

    def get_approval(self, approval_id: str) -> Approval | None:
        row = _GET_APPROVAL.first(self.conn, {"approval_id": approval_id})
        return _approval(row) if row else None

    def approval_for_gate(self, run_id: str, step_id: str, visit: int) -> Approval | None:
        row = _GATE_APPROVAL.first(
            self.conn, {"run_id": run_id, "step_id": step_id, "visit": visit}
        )
        return _approval(row) if row else None

    def gate_visits(self, run_id: str) -> dict[str, int]:
        """The last visit of each gate a run has asked at, cancelled ones too."""
        gates = (
            select(t.approvals.c.step_id, func.max(t.approvals.c.visit))
            .where(t.approvals.c.run_id == run_id)
            .group_by(t.approvals.c.step_id)
        )
        return {str(step_id): int(visit) for step_id, visit in self.conn.execute(gates)}

    def timer_keys(self, run_id: str, kind: str) -> list[str]:
        """The keys of a run's timers of one kind, whatever their status."""
        keys = select(t.timers.c.key).where(t.timers.c.run_id == run_id, t.timers.c.kind == kind)
        return [str(key) for key in self.conn.execute(keys).scalars()]

    def cancel_pending_approvals(self, run_id: str, by: str) -> list[str]:
        """Cancels the run's pending approvals, as ``by`` did (cancelling the run, or
        replaying it); their ids."""
        rows = self.conn.execute(
            update(t.approvals)
            .where(t.approvals.c.run_id == run_id, t.approvals.c.status == "pending")
            .values(status=ApprovalStatus.CANCELLED.value, decided_by=by, decided_at=utcnow())
            .returning(t.approvals.c.id)
        )
        return list(rows.scalars())

    # -- timers --------------------------------------------------------------------------

    def add_timer(
        self, key: str, kind: str, due_at: datetime, run_id: str | None, payload: dict[str, Any]
    ) -> None:
        _INSERT_TIMER.run(
            self.conn,
            {
                "key": key,
                "kind": kind,
                "due_at": due_at,
                "run_id": run_id,
                "payload": payload,
                "status": "pending",
            },
        )

    def timer(self, key: str) -> Timer | None:
        row = _GET_TIMER.first(self.conn, {"timer_key": key})
        return _timer(row) if row else None

    def lock_run(self, run_id: str) -> Run | None:
        """The run, its row locked until the transaction ends (PostgreSQL; on SQLite
        every write transaction is the only one): whatever else moves it waits."""
        row = self.conn.execute(
            select(t.runs).where(t.runs.c.id == run_id).with_for_update()
        ).first()
        return _run(row) if row else None

    def open_wait(self, run_id: str) -> Timer | None:
        """The pending timer of the run's wait, if it is at one."""
        row = self.conn.execute(
            select(t.timers).where(
                t.timers.c.run_id == run_id,
                t.timers.c.kind == "wait",
                t.timers.c.status == "pending",
            )
        ).first()
        return _timer(row) if row else None

    def keep_event(self, run_id: str, kept: KeptEvent) -> None:
        """Keeps an event for a run that does not wait for it yet."""
        self.conn.execute(
            insert(t.kept_events).values(
                run_id=run_id,
                event=kept.event,
                data=kept.data,
                by=kept.by[:200],
                received_at=kept.received_at,
            )
        )

    def take_kept_event(self, run_id: str, event: str) -> KeptEvent | None:
        """The oldest event kept for the run's wait, taken: no other wait takes it."""
        k = t.kept_events
        row = self.conn.execute(
            select(k)
            .where(k.c.run_id == run_id, k.c.event == event, k.c.taken_at.is_(None))
            .order_by(k.c.id)
            .limit(1)
        ).first()
        if row is None:
            return None
        taken = self.conn.execute(
            update(k).where(k.c.id == row.id, k.c.taken_at.is_(None)).values(taken_at=utcnow())
        )
        if taken.rowcount != 1:
            return None
        return KeptEvent(row.event, dict(row.data), row.by, row.received_at)

    def postpone_deadlines(self, run_id: str, by: timedelta) -> None:
        """Moves the run's deadlines ``by`` later (the time it was paused): a gate's time
        to answer and a wait's time run only while its run does. A gate whose expiry has
        fired already (it was escalated) keeps the deadline that passed: nothing would
        fire at a later one."""
        a, timer = t.approvals, t.timers
        pending = (
            select(a.c.id, a.c.expires_at, timer.c.id)
            .join(timer, timer.c.key == _EXPIRY_PREFIX + a.c.id)
            .where(a.c.run_id == run_id, a.c.status == "pending", timer.c.status == "pending")
        )
        for approval_id, expires_at, timer_id in self.conn.execute(pending).all():
            self.conn.execute(
                update(a).where(a.c.id == approval_id).values(expires_at=expires_at + by)
            )
            self.set_aside_timer(timer_id, expires_at + by)  # set aside while paused: due again
        waits = select(timer.c.id, timer.c.due_at).where(
            timer.c.run_id == run_id,
            timer.c.kind == "wait",
            timer.c.status == "pending",
            timer.c.due_at < NEVER,
        )
        for timer_id, due_at in self.conn.execute(waits).all():
            self.set_aside_timer(timer_id, due_at + by)

    def set_aside_timer(self, timer_id: int, until: datetime) -> None:
        """A timer that must not fire yet, due again ``until`` (a paused run's gate)."""
        self.conn.execute(update(t.timers).where(t.timers.c.id == timer_id).values(due_at=until))

    def cancel_timers(self, run_id: str) -> None:
        self.conn.execute(
            update(t.timers)
            .where(t.timers.c.run_id == run_id, t.timers.c.status == "pending")
            .values(status="cancelled")
        )

    def get_effect(self, key: str) -> IdempotencyRecord | None:
        row = _GET_EFFECT.first(self.conn, {"effect_key": key})
        return _effect(row) if row else None

    # -- inbox ---------------------------------------------------------------------------

    def finish_inbox(self, inbox_id: int, status: str = "done") -> None:
        _FINISH_INBOX.run(
            self.conn, {"inbox_id": inbox_id, "status": status, "handled_at": utcnow()}
        )

    def finish_held_inbox(self, inbox_id: int, status: str, worker: str) -> None:
        """Marks a delivery ``worker`` holds handled; raises ``TakenOver`` when another
        worker took it meanwhile (or it is handled already), so that the transaction
        holding this handling's first write commits nothing."""
        values = {"inbox_id": inbox_id, "worker": worker, "status": status, "handled_at": utcnow()}
        if not _FINISH_HELD_INBOX.run(self.conn, values):
            raise TakenOver(f"delivery {inbox_id} is no longer {worker}'s to handle")

    def announce(self, approval_ids: Sequence[str]) -> None:
        """Notes that the cards of these approvals are handed to a channel (those not
        noted before)."""
        if approval_ids:
            now = utcnow()
            _ANNOUNCE.many(self.conn, [{"approval_id": id_, "now": now} for id_ in approval_ids])

    def replace_reply(self, reply: OwedReply, owner: str) -> bool:
        """Puts ``reply`` in place of the one ``owner`` keeps under its key (a word kept
        while its handling went on); False when ``owner`` keeps none there: it was never
        kept, or another worker took it over."""
        values = {"reply_key": reply.key, "held_by": owner, "payload": reply.payload}
        return bool(_REPLACE_REPLY.run(self.conn, values))

    def forget_reply(self, key: str, owner: str) -> None:
        """Forgets the reply ``owner`` keeps under ``key``, if it still keeps it."""
        _FORGET_REPLY.run(self.conn, {"reply_key": key, "held_by": owner})

    def note_once(self, once: str, channel: str, chat_id: str) -> bool:
        """Notes a reply under ``once`` owed to a chat; False if one was before."""
        noted = self.conn.execute(
            _insert_into(self.conn, t.replies_once)
            .values(key=once, channel=channel, chat_id=chat_id, at=utcnow())
            .on_conflict_do_nothing(index_elements=["key", "channel", "chat_id"])
            .returning(t.replies_once.c.key)
        )
        return noted.first() is not None

    def note_offer(self, inbox_id: int, run_id: str) -> bool:
        """Notes delivery ``inbox_id`` offered to ``run_id``; False if it was before."""
        noted = self.conn.execute(
            _insert_into(self.conn, t.offers)
            .values(inbox_id=inbox_id, run_id=run_id, at=utcnow())
            .on_conflict_do_nothing(index_elements=["inbox_id", "run_id"])
            .returning(t.offers.c.run_id)
        )
        return noted.first() is not None

    def owe_reply(self, reply: OwedReply, owner: str) -> None:
        """Keeps a reply for ``owner``, the worker that will send it."""
        _OWE_REPLY.run(
            self.conn,
            {
                "key": reply.key,
                "channel": reply.channel,
                "chat_id": reply.chat_id,
                "payload": reply.payload,
                "sent_steps": reply.sent_steps,
                "created_at": reply.created_at,
                "owner": owner,
            },
        )


# Taking work over, and a worker's registering, go one at a time. On PostgreSQL a
# transaction-scoped advisory lock does it: otherwise an UPDATE that waited on a row would
# judge it against the list of live workers from before it waited, and two workers could
# take one row. (SQLite's writes go one at a time anyway.)
_TAKING_OVER = 0x57_4F_52_4B  # "WORK"
RETIRED = "retired:"  # a run's owner once its worker stopped: no live worker's name


_HOLDING_ROOM = 0x4D_4F_44_4C  # "MODL": holds in the budgets are taken one at a time


def _spending_since(start: datetime, process: str | None) -> Select[Any]:
    """Model spend from ``start`` on: all of it, or one process's runs'."""
    query = select(func.coalesce(func.sum(t.model_calls.c.cost_usd), 0.0)).where(
        t.model_calls.c.at >= start
    )
    if process is not None:
        query = query.join(t.runs, t.runs.c.id == t.model_calls.c.run_id).where(
            t.runs.c.process == process
        )
    return query


def _one_taker_at_a_time(conn: Connection) -> None:
    _one_at_a_time(conn, _TAKING_OVER)


def _one_at_a_time(conn: Connection, key: int) -> None:
    """Holds ``key`` till the transaction ends, on PostgreSQL (SQLite writes one at a time)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(key)))


def _alive(now: datetime) -> Select[Any]:
    """The workers that said they live within a lease of ``now``."""
    return select(t.workers.c.id).where(t.workers.c.seen_at >= now - LEASE)


def _orphaned(table: Any, worker: str, now: datetime) -> ColumnElement[bool]:
    """Rows of ``table`` held by no worker, or by one gone (silent past LEASE), and not
    by ``worker``."""
    alive = _alive(now)
    return or_(table.c.owner.is_(None), and_(table.c.owner != worker, table.c.owner.not_in(alive)))


def _take_over(
    conn: Connection, key: Any, scope: Sequence[ColumnElement[bool]], worker: str, own: bool
) -> list[Row[Any]]:
    """Makes ``worker`` the owner of the orphaned rows within ``scope`` of ``key``'s
    table, and returns them, with (``own``) those it already holds, in ``key`` order."""
    _one_taker_at_a_time(conn)
    table = key.table
    taken = (
        conn.execute(
            update(table)
            .where(*scope, _orphaned(table, worker, utcnow()))
            .values(owner=worker)
            .returning(key)
        )
        .scalars()
        .all()
    )
    held = table.c.owner == worker if own else key.in_(list(taken))
    return list(conn.execute(select(table).where(*scope, held).order_by(key)))


def _beat(conn: Connection, worker: str, now: datetime, serves_platforms: bool) -> None:
    """Notes ``worker`` alive at ``now``; registers it again if its row is gone."""
    seen = update(t.workers).where(t.workers.c.id == worker).values(seen_at=now)
    if conn.execute(seen).rowcount == 0:
        _insert_worker(conn, worker, now, serves_platforms)


def _insert_worker(conn: Connection, worker: str, now: datetime, serves_platforms: bool) -> None:
    conn.execute(
        insert(t.workers).values(
            id=worker,
            pid=os.getpid(),
            started_at=now,
            seen_at=now,
            serves_platforms=serves_platforms,
        )
    )


class Ledger:
    """The single source of truth. Open with ``from_url``, then ``await setup()``."""

    def __init__(self, db: Database, url: DatabaseURL) -> None:
        self.db = db
        self.url = url
        # Who keeps the deliveries and replies written here. Until a service registers
        # this process as a worker, what it keeps is anyone's to take over.
        self.worker = f"unregistered:{uuid.uuid4().hex}"
        # When this worker last said it lives, by both clocks; None while it holds no lease.
        self._last_beat: tuple[float, datetime] | None = None
        # How often it said so only after a lapse: silent long enough that the others may
        # have taken over its work. Work it took up before a lapse is checked before use.
        self.lapses = 0
        self.serves_platforms = False
        self._soon: list[Deferred] = []  # writes that can wait (see soon())
        self._soon_timer: asyncio.TimerHandle | None = None
        self._soon_writing: set[asyncio.Future[Any]] = set()
        self._closing = False

    @classmethod
    def from_url(cls, url: DatabaseURL) -> Ledger:
        return cls(open_database(url), url)

    async def setup(self) -> None:
        """Creates or migrates the schema. Raises LedgerUnavailable with the cause."""
        try:
            if self.url.is_sqlite:
                self.url.sqlite_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            await self.db.run(_migrate)
        except UnknownRevision as exc:
            raise LedgerUnavailable(
                f"the ledger at {self.url} was set up by a newer steward ({exc}); "
                "upgrade this one to use it"
            ) from exc
        except (SQLAlchemyError, OSError) as exc:
            raise LedgerUnavailable(
                f"cannot open the ledger at {self.url}: {cause(exc)} (check STEWARD_DATABASE_URL)"
            ) from exc

    async def close(self) -> None:
        self._closing = True
        if self._soon:
            await self._take_soon_along()
        await asyncio.gather(*self._soon_writing, return_exceptions=True)
        await self.db.close()

    async def sync(self, everyone: bool = False) -> None:
        """Returns once every write so far is on disk, those that did not wait included;
        with ``everyone``, those of other processes that this one may have read, too."""
        await self.db.sync(everyone)

    async def write(self, fn: Callable[[LedgerTx], T], durable: bool = True) -> T:
        """Runs ``fn`` as one transaction: all of its writes commit together, or none.

        Writes deferred inside ``batching()`` commit in this same transaction. A write
        that is not ``durable`` commits without waiting for the disk (unless a rider
        must): the caller makes a durable write before anyone can learn of it, and that
        one puts every commit before it on disk too.
        """
        pending = _deferred.get()
        riders = list(pending) if pending else []
        if pending:
            pending.clear()
        durable = durable or any(rider.durable() for rider in riders)
        self._write_soon()  # queued first, it shares this write's commit on SQLite

        def transaction(conn: Connection) -> T:
            tx = LedgerTx(conn, self.worker)
            for rider in riders:
                rider.write(tx)
            return fn(tx)

        try:
            done = await self.db.run(transaction, durable=durable)
        except BaseException:
            if pending is not None:
                pending[:0] = riders
            raise
        _committed(riders)
        return done

    def soon(self, write: Deferred) -> None:
        """Queues a write that can wait, and whose loss costs only work done again (a
        card noted as shown is announced again): it goes with this process's next
        ``write`` — in a transaction of its own, which on SQLite shares that write's
        commit — or on its own within SOON_SECONDS, without waiting for the disk. One
        that fails is dropped, and logged."""
        if self._closing:
            return
        may_write(True)
        self._soon.append(write)
        if self._soon_timer is None:
            self._soon_timer = asyncio.get_running_loop().call_later(
                SOON_SECONDS, self._write_soon_alone
            )

    def _write_soon_alone(self) -> None:
        """No write came within SOON_SECONDS."""
        self._soon_timer = None
        if self._soon:
            task = asyncio.get_running_loop().create_task(self._take_soon_along())
            self._soon_writing.add(task)
            task.add_done_callback(self._soon_done)

    async def _take_soon_along(self) -> None:
        """A write of nothing, which takes the writes that can wait along."""
        await self.write(lambda tx: None, durable=False)

    def _write_soon(self) -> None:
        if self._soon_timer is not None:
            self._soon_timer.cancel()
            self._soon_timer = None
        if not self._soon:
            return
        writes, self._soon = self._soon, []

        def write(conn: Connection) -> None:
            tx = LedgerTx(conn, self.worker)
            for each in writes:
                each(tx)

        done = self.db.run_soon(write)
        self._soon_writing.add(done)
        done.add_done_callback(self._soon_done)

    def _soon_done(self, done: asyncio.Future[Any]) -> None:
        self._soon_writing.discard(done)
        if not done.cancelled() and (exc := done.exception()) is not None:
            log.warning("dropped ledger write(s) that could wait: %s", exc)

    def defer(
        self,
        write: Deferred,
        droppable: bool = False,
        durable: Callable[[], bool] | None = None,
        then: Callable[[], None] | None = None,
    ) -> bool:
        """Queues ``write`` for the next transaction of this ``batching()`` block, and
        ``then`` for when that has committed.

        A droppable write is one whose loss is no worse than a crash at that point
        (a checkpoint: the run recovers from the one before). Left to commit at the end
        of the block, a write commits without waiting for the disk when ``durable``
        says so then, and nothing durable commits with it. Returns False outside a
        ``batching()`` block: the caller then writes on its own.
        """
        pending = _deferred.get()
        if pending is None:
            return False
        pending.append(_Rider(write, droppable, durable or _always, then))
        return True

    @asynccontextmanager
    async def batching(self) -> AsyncIterator[None]:
        """Writes deferred in this block ride along with its next ``write``.

        What is still deferred when the block ends commits then, on its own. If the
        block raises, droppable writes are dropped; if it is cancelled, all are: nothing
        deferred may be needed beyond what a crash at that point would lose.
        """
        pending = _deferred.get()
        if pending is not None:  # an enclosing block commits them
            yield
            return
        pending = []
        token = _deferred.set(pending)
        try:
            yield
        except Exception:
            # What failed may have been the write these rode on: keep only what must stay.
            await self._flush([rider for rider in pending if not rider.droppable])
            raise
        finally:
            _deferred.reset(token)
        await self._flush(pending)

    def drop_droppable(self) -> None:
        """Inside a ``batching()`` block: forgets the droppable writes deferred so far —
        the checkpoints of a step whose stop could not be recorded, say, one of which may
        be what failed: the run goes on from the checkpoint before them."""
        pending = _deferred.get()
        if pending:
            pending[:] = [rider for rider in pending if not rider.droppable]

    @contextlib.contextmanager
    def unbatched(self) -> Iterator[None]:
        """Inside a ``batching()`` block: writes go to the database at once, not along
        with the block's next write — for one the next read must see (a run's state,
        updated before the run goes on from it)."""
        token = _deferred.set(None)
        try:
            yield
        finally:
            _deferred.reset(token)

    async def _flush(self, riders: list[_Rider]) -> None:
        if riders:
            flushed = list(riders)
            durable = any(rider.durable() for rider in flushed)
            riders.clear()

            def flush(conn: Connection) -> None:
                for rider in flushed:
                    rider.write(LedgerTx(conn, self.worker))

            await self.db.run(flush, durable=durable)
            _committed(flushed)

    @asynccontextmanager
    async def handling(
        self, inbox_id: int, failed: str | None = "failed"
    ) -> AsyncIterator[Handling]:
        """An inbound is done when its first durable consequence commits.

        The first ``write`` inside this block marks the inbox item done in the same
        transaction — a crash before it leaves the item to be handled again; a crash
        after it leaves its consequence for run recovery. If the handling writes
        nothing, the item is marked done when the block ends, without waiting for the
        disk: only a crash of the machine can lose that mark, and then the item is
        handled again, which repeats an answer that changed nothing. (A durable commit
        made meanwhile, such as a model call's cost, makes the mark wait too.) If its
        handler raises before it wrote, the item is set aside as ``failed``, never
        replayed in a loop; with ``failed`` None it stays this worker's, new, for the
        caller to handle again (``Handling.marked`` says which it is).

        The item must be this worker's: if another worker took it over meanwhile (this
        one looked gone), the transaction that would mark it raises ``TakenOver`` and
        commits nothing of this handling, and the other worker's handling stands alone.
        """
        outcome: dict[str, str | None] = {"status": "done"}
        durable_before = self.db.commits.durable
        handling = Handling()

        def wrote_meanwhile() -> bool:
            return self.db.commits.durable != durable_before

        worker = self.worker

        def mark(tx: LedgerTx) -> None:
            if (status := outcome["status"]) is not None:
                tx.finish_held_inbox(inbox_id, status, worker)

        def marked() -> None:
            handling.marked = outcome["status"]

        async with self.batching():
            self.defer(mark, durable=wrote_meanwhile, then=marked)
            try:
                yield handling
            except Exception:
                outcome["status"] = failed
                if failed is None:
                    # Nothing to write, so no transaction for the mark: one of nothing
                    # would wait for the lock that may be what failed the handling (the
                    # busy timeout over again), and raise in its error's place.
                    pending = _deferred.get()
                    if pending:
                        pending[:] = [rider for rider in pending if rider.write is not mark]
                raise

    async def read(self, fn: Callable[[LedgerTx], T]) -> T:
        return await self.db.run(lambda conn: fn(LedgerTx(conn, self.worker)), write=False)

    # -- definitions ---------------------------------------------------------------------

    async def save_definition(
        self, version: str, name: str, body: dict[str, Any], source: str
    ) -> None:
        def save(conn: Connection) -> None:
            # Once, however many stewards start together on a new database: the first.
            conn.execute(
                _insert_into(conn, t.definitions)
                .values(version=version, name=name, body=body, source=source, created_at=utcnow())
                .on_conflict_do_nothing(index_elements=["version"])
            )

        await self.db.run(save)

    async def get_definition(self, version: str) -> dict[str, Any] | None:
        def get(conn: Connection) -> Any:
            query = select(t.definitions.c.body).where(t.definitions.c.version == version)
            return conn.execute(query).scalar_one_or_none()

        body = await self.db.run(get, write=False)
        return dict(body) if body is not None else None

    # -- runs ----------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> Run | None:
        return await self.read(lambda tx: tx.get_run(run_id))

    async def list_runs(
        self, statuses: Sequence[RunStatus] | None = None, limit: int | None = 50
    ) -> list[Run]:
        statuses = tuple(dict.fromkeys(statuses or ()))
        query = _runs_newest_first(statuses, limit, not self.url.is_sqlite)
        return await self.db.run(lambda c: [_run(r) for r in query.rows(c)], write=False)

    async def run_lines(
        self, statuses: Sequence[RunStatus] | None = None, limit: int = 30
    ) -> list[RunLine]:
        """The newest runs as a list shows them, in one read: each with the approval it
        waits for (the newest, should it wait for more than one)."""
        query = _run_lines(tuple(dict.fromkeys(statuses or ())), limit, not self.url.is_sqlite)

        def read(conn: Connection) -> list[RunLine]:
            lines: dict[str, RunLine] = {}
            for row in query.rows(conn):
                lines[row.id] = RunLine(
                    row.id,
                    row.process,
                    RUN_STATUSES[row.status],
                    row.current_step,
                    row.error,
                    row.error_class,
                    row.approval_id,
                    row.approval_summary or "",
                )
            return list(lines.values())

        return await self.db.run(read, write=False)

    async def run_steps(self, run_id: str) -> list[StepEntry]:
        query = select(t.steps).where(t.steps.c.run_id == run_id).order_by(t.steps.c.seq)
        return await self.db.run(
            lambda c: [
                StepEntry(r.seq, r.step_id, r.kind, r.status, r.at, dict(r.detail))
                for r in c.execute(query)
            ],
            write=False,
        )

    # -- approvals -----------------------------------------------------------------------

    async def get_approval(self, approval_id: str) -> Approval | None:
        return await self.read(lambda tx: tx.get_approval(approval_id))

    async def approval_for_gate(self, run_id: str, step_id: str, visit: int) -> Approval | None:
        return await self.read(lambda tx: tx.approval_for_gate(run_id, step_id, visit))

    async def pending_approvals(self, run_ids: Sequence[str] | None = None) -> list[Approval]:
        query = (
            select(t.approvals)
            .where(t.approvals.c.status == ApprovalStatus.PENDING.value)
            .order_by(t.approvals.c.created_at)
        )
        if run_ids is not None:
            query = query.where(t.approvals.c.run_id.in_(list(run_ids)))
        return await self.db.run(lambda c: [_approval(r) for r in c.execute(query)], write=False)

    async def decide_approval(
        self,
        approval_id: str,
        status: ApprovalStatus,
        decided_by: str,
        reason: str | None = None,
        edited_text: str | None = None,
    ) -> tuple[Approval | None, bool]:
        """Records a decision if the approval is still pending: the first decision wins.

        Returns the approval as it now stands and whether this call decided it. The
        decision, the run's return to running and its audit event commit together.
        """
        approval, won, _ = await self.write(
            lambda tx: decide(tx, approval_id, status, decided_by, reason, edited_text)
        )
        return approval, won

    async def add_reason(self, approval_id: str, reason: str, actor: str) -> None:
        """Notes the reason for a decision, given after it: on the approval, and on the
        step the decision wrote in the run's timeline (its gate, at its visit)."""

        def add(tx: LedgerTx) -> None:
            approval = tx.conn.execute(
                update(t.approvals)
                .where(t.approvals.c.id == approval_id)
                .values(reason=reason)
                .returning(t.approvals.c.run_id, t.approvals.c.step_id, t.approvals.c.visit)
            ).first()
            if approval is not None:
                gate = tx.conn.execute(
                    select(t.steps.c.id, t.steps.c.detail)
                    .where(
                        t.steps.c.run_id == approval.run_id,
                        t.steps.c.step_id == approval.step_id,
                        t.steps.c.kind == "approval",
                    )
                    .order_by(t.steps.c.seq.desc())
                )
                decided = next((r for r in gate if r.detail.get("visit") == approval.visit), None)
                if decided is not None:  # its own visit: the gate may have been replayed since
                    detail = {**decided.detail, "reason": reason}
                    tx.conn.execute(
                        update(t.steps).where(t.steps.c.id == decided.id).values(detail=detail)
                    )
            tx.audit(NewAuditEvent(actor, "approval.reason", approval_id, {"reason": reason}))

        await self.write(add)

    # -- workers -------------------------------------------------------------------------
    # A delivery stored but not handled, a reply kept but not sent, and a run set running,
    # belong to the worker that took them. Another worker takes them over only once that
    # one is gone: retired at its stop, or silent for LEASE. So two services on one ledger
    # never handle one delivery, send one reply or move one run twice, and nothing a dead
    # one held is lost.

    async def register_worker(self, worker: str, serves_platforms: bool = False) -> None:
        """Makes this process ``worker``: what it keeps from now on is its own, and so is
        what a process of the same id (a crashed one it replaces) left. One that
        ``serves_platforms`` (Telegram, Slack) is where timers' news goes while it lives."""
        now, unnamed = utcnow(), self.worker

        def register(conn: Connection) -> None:
            _one_taker_at_a_time(conn)
            conn.execute(delete(t.workers).where(t.workers.c.id == worker))
            _insert_worker(conn, worker, now, serves_platforms)
            # The runs this process set running before it had a name are still its own.
            conn.execute(
                update(t.runs)
                .where(t.runs.c.status == RunStatus.RUNNING.value, t.runs.c.owner == unnamed)
                .values(owner=worker)
            )

        await self.db.run(register)
        self.worker = worker
        self.serves_platforms = serves_platforms
        self._last_beat = (monotonic(), now)

    async def heartbeat(self) -> None:
        """Notes this worker alive; registers it again if its row is gone (a process of
        the same name retired it)."""
        worker, now, began, lapsed = self.worker, utcnow(), monotonic(), self.lease_in_doubt()
        serves_platforms = self.serves_platforms
        await self.db.run(lambda conn: _beat(conn, worker, now, serves_platforms), durable=False)
        self._beaten(began, now, lapsed)

    def lease_in_doubt(self) -> bool:
        """Whether this worker's last beat is old enough (it was frozen, say, or the ledger
        was down) that the others may have judged it gone and taken over its work. A
        worker that never registered holds no lease, and is never in doubt."""
        if self._last_beat is None:
            return False
        began, at = self._last_beat
        doubt = (LEASE / 2).total_seconds()
        return monotonic() - began > doubt or (utcnow() - at).total_seconds() > doubt

    async def still_holds_reply(self, key: str) -> bool:
        """Says this worker lives, then whether it still holds the reply under ``key`` —
        in one transaction, one at a time with take-overs, so that no other worker takes
        the reply after this says it is held (until the lease runs out again)."""
        worker, now, began, lapsed = self.worker, utcnow(), monotonic(), self.lease_in_doubt()
        serves_platforms = self.serves_platforms

        def renew(conn: Connection) -> bool:
            _one_taker_at_a_time(conn)
            _beat(conn, worker, now, serves_platforms)
            owner = conn.execute(select(t.replies.c.owner).where(t.replies.c.key == key))
            return bool(owner.scalar_one_or_none() == worker)

        held = await self.db.run(renew, durable=False)
        self._beaten(began, now, lapsed)
        return held

    def _beaten(self, began: float, at: datetime, lapsed: bool) -> None:
        """A beat went through; one that came after a lapse counts it (see ``lapses``)."""
        self._last_beat = (began, at)
        if lapsed:
            self.lapses += 1

    async def forget_worker(self, worker: str) -> None:
        """Forgets ``worker``, known to be gone: what it held is anyone's at once."""

        def forget(conn: Connection) -> None:
            _one_taker_at_a_time(conn)
            conn.execute(delete(t.workers).where(t.workers.c.id == worker))

        await self.db.run(forget, durable=False)

    async def platforms_served(self) -> bool:
        """Whether a worker serving Telegram or Slack lives on this ledger."""
        query = _alive(utcnow()).where(t.workers.c.serves_platforms.is_(True)).limit(1)
        return await self.db.run(lambda c: c.execute(query).first() is not None, write=False)

    async def left_mid_step(self, listed: Sequence[Run | RunLine]) -> set[str]:
        """Of the runs ``listed``, the ids of those left running by a worker gone (killed,
        or stopped with nobody to take them): no live worker moves them until one takes
        them over."""
        running = [run.id for run in listed if run.status is RunStatus.RUNNING]
        if not running:  # asks nothing: a list of runs holds none running, most often
            return set()
        runs = t.runs.c
        query = select(runs.id).where(
            runs.id.in_(running),
            runs.status == RunStatus.RUNNING.value,
            runs.owner.is_not(None),
            runs.owner.not_in(_alive(utcnow())),
        )
        return await self.db.run(lambda c: set(c.execute(query).scalars()), write=False)

    async def live_workers(self) -> list[str]:
        """The workers that said they live within a lease (this one too, once registered)."""
        query = _alive(utcnow())
        return await self.db.run(lambda c: list(c.execute(query).scalars()), write=False)

    async def retire_worker(self) -> None:
        """Gives back what this worker still holds, for the others to take over at once,
        and forgets it."""
        worker = self.worker

        def retire(conn: Connection) -> None:
            conn.execute(
                update(t.inbox)
                .where(t.inbox.c.owner == worker, t.inbox.c.status == "new")
                .values(owner=None)
            )
            conn.execute(update(t.replies).where(t.replies.c.owner == worker).values(owner=None))
            conn.execute(
                update(t.runs)
                .where(t.runs.c.status == RunStatus.RUNNING.value, t.runs.c.owner == worker)
                .values(owner=f"{RETIRED}{worker}")  # nobody's: any worker takes it at a beat
            )
            conn.execute(delete(t.workers).where(t.workers.c.id == worker))

        await self.db.run(retire)
        self._last_beat = None

    async def moves(self, run_id: str) -> bool:
        """Whether this worker still moves the running run ``run_id``: no other worker
        took it over (this one looked gone)."""
        return await self.read(lambda tx: tx.moves(run_id))

    async def take_over_runs(self, own: bool = True, run_id: str | None = None) -> list[Run]:
        """Takes the running runs whose worker is gone — it died mid-step, or stopped
        with a run it could not finish — and returns them, with (``own``, at a start)
        those this worker already holds: a crashed process of the same id left them.
        A run with no owner was set running by a steward from before owners, which may
        be moving it still: only a start takes it, as such a steward's start did.
        With ``run_id``, that run alone, if it is one of them."""
        scope: tuple[ColumnElement[bool], ...] = (t.runs.c.status == RunStatus.RUNNING.value,)
        if not own:
            scope = (*scope, t.runs.c.owner.is_not(None))
        if run_id is not None:
            scope = (*scope, t.runs.c.id == run_id)

        def take(conn: Connection) -> list[Run]:
            return [_run(row) for row in _take_over(conn, t.runs.c.id, scope, self.worker, own)]

        return await self.db.run(take)

    async def take_over_inbound(
        self, channel: str, own: bool = True, prefix: str = ""
    ) -> list[InboxItem]:
        """Takes the deliveries of ``channel`` stored but not handled whose worker is gone,
        and returns them, with (``own``) those this worker already holds; oldest first.
        With ``prefix``, only those whose ids begin with it (a Telegram bot's)."""
        scope = (
            t.inbox.c.status == "new",
            t.inbox.c.channel == channel,
            t.inbox.c.external_id.startswith(prefix, autoescape=True),
        )

        def take(conn: Connection) -> list[InboxItem]:
            rows = _take_over(conn, t.inbox.c.id, scope, self.worker, own)
            return [_inbox_item(row) for row in rows]

        return await self.db.run(take)

    async def rename_replies(self, channel: str, named: str) -> int:
        """Keeps the replies owed under ``channel`` under ``named``; how many."""
        rename = update(t.replies).where(t.replies.c.channel == channel).values(channel=named)
        return await self.db.run(lambda conn: conn.execute(rename).rowcount)

    async def take_over_replies(self, channel: str, own: bool = True) -> list[OwedReply]:
        """Takes the replies ``channel`` owes whose worker is gone, and returns them, with
        (``own``) those this worker already holds; oldest first."""
        scope = (t.replies.c.channel == channel,)

        def take(conn: Connection) -> list[OwedReply]:
            rows = _take_over(conn, t.replies.c.seq, scope, self.worker, own)
            return [_owed_reply(row) for row in rows]

        return await self.db.run(take, durable=False)

    # -- inbox ---------------------------------------------------------------------------

    async def accept_inbound(
        self, channel: str, external_id: str, payload: dict[str, Any], durable: bool = True
    ) -> int | None:
        """Stores an inbound update; None when this delivery was stored before.

        Durable unless the caller says its sender was told nothing of the delivery
        before its handling commits (see ``Database.run``).
        """

        def accept(conn: Connection) -> int:
            row = {
                "channel": channel,
                "external_id": external_id,
                "payload": payload,
                "status": "new",
                "received_at": utcnow(),
                "owner": self.worker,
            }
            return int(_INSERT_INBOX.scalar(conn, row))

        try:
            return await self.db.run(accept, durable=durable)
        except IntegrityError:
            return None

    async def stored_inbound(self, channel: str, external_id: str) -> bool:
        """Whether a delivery is stored, handled or not."""
        key = {"channel": channel, "external_id": external_id}
        return (
            await self.db.run(lambda conn: _STORED_INBOX.first(conn, key), write=False) is not None
        )

    async def answered_inbound(
        self,
        channel: str,
        external_id: str,
        payload: dict[str, Any],
        reply: OwedReply | None = None,
    ) -> None:
        """Stores a delivery answered before it was stored (see ``reading_only``) as
        handled, and with ``reply`` what is left to send of its answer, kept for this
        worker. One stored meanwhile (by another steward) stays as it is. Not durable:
        the caller syncs before its platform is told the delivery arrived."""
        key = {"channel": channel, "external_id": external_id}

        def answered(conn: Connection) -> None:
            if _STORED_INBOX.first(conn, key) is None:
                now = utcnow()
                row = {**key, "payload": payload, "status": "done", "owner": self.worker}
                _INSERT_ANSWERED.run(conn, {**row, "received_at": now, "handled_at": now})
            if reply is not None:
                LedgerTx(conn, self.worker).owe_reply(reply, self.worker)

        try:
            await self.db.run(answered, durable=False)
        except IntegrityError:  # stored by another steward between the look and the insert
            await self.db.run(answered, durable=False)

    @staticmethod
    @contextlib.contextmanager
    def reading_only() -> Iterator[None]:
        """A block that is to write nothing: a ledger write in it (made by this task, or
        by one it starts) raises ``WroteWhileReading`` and writes nothing. A command that
        only shows something is answered in one before its delivery is stored."""
        token = reading_only.set(True)
        try:
            yield
        finally:
            reading_only.reset(token)

    async def take_up_failed_inbound(self, channel: str, external_id: str) -> int | None:
        """Takes up again a delivery stored before whose handling failed, as new, for
        this worker: its id; None when it was not stored, or did not fail."""
        inbox = t.inbox
        again = (
            update(inbox)
            .where(
                inbox.c.channel == channel,
                inbox.c.external_id == external_id,
                inbox.c.status == "failed",
            )
            .values(status="new", owner=self.worker, handled_at=None)
            .returning(inbox.c.id)
        )
        return await self.db.run(lambda conn: conn.execute(again).scalar())

    async def offered(self, inbox_id: int) -> set[str]:
        """The runs delivery ``inbox_id`` was offered to (``LedgerTx.note_offer``)."""
        query = select(t.offers.c.run_id).where(t.offers.c.inbox_id == inbox_id)
        return await self.db.run(lambda c: set(c.execute(query).scalars()), write=False)

    async def finish_held_inbound(self, inbox_id: int, status: str = "done") -> None:
        """Marks a delivery this worker holds handled; ``TakenOver`` when another worker
        took it meanwhile."""
        await self.write(lambda tx: tx.finish_held_inbox(inbox_id, status, self.worker))

    async def prefix_deliveries(
        self, channel: str, prefix: str, newest: int | None = 1000, kinds: Sequence[str] = ()
    ) -> int:
        """Puts ``prefix`` before the ids of ``channel``'s ``newest`` deliveries (None:
        all of them) stored before their ids had one; how many. Those are the ids without
        ``:`` or, given the ``kinds`` an id began with then (Slack's ``message:``, say),
        those beginning with one of them. A delivery its platform sends again is then
        known under its new id. One stored under its new id too (by a steward of each
        kind on the ledger at once) keeps its old one: the one delivery is handled once."""
        if kinds:
            bare = or_(*(t.inbox.c.external_id.startswith(k, autoescape=True) for k in kinds))
        else:
            bare = ~t.inbox.c.external_id.contains(":")
        named_too = t.inbox.alias("named_too")
        renamed = literal(prefix) + t.inbox.c.external_id
        twin = select(named_too.c.id).where(
            named_too.c.channel == channel, named_too.c.external_id == renamed
        )
        scope = t.inbox.c.channel == channel
        if newest is not None:
            recent = (
                select(t.inbox.c.id)
                .where(t.inbox.c.channel == channel)
                .order_by(t.inbox.c.id.desc())
                .limit(newest)
                .scalar_subquery()
            )
            scope = t.inbox.c.id.in_(recent)
        named = update(t.inbox).where(scope, bare, ~twin.exists()).values(external_id=renamed)
        return await self.db.run(lambda conn: conn.execute(named).rowcount)

    async def newest_bare_delivery(self, channel: str) -> datetime | None:
        """When the newest of ``channel``'s deliveries stored under an id without ``:``
        came (as they were stored before their ids had one); None when none was."""
        newest = select(func.max(t.inbox.c.received_at)).where(
            t.inbox.c.channel == channel, ~t.inbox.c.external_id.contains(":")
        )
        return await self.db.run(lambda conn: conn.execute(newest).scalar(), write=False)

    async def finish_inbound(self, inbox_id: int, status: str = "done") -> None:
        await self.db.run(lambda conn: LedgerTx(conn, self.worker).finish_inbox(inbox_id, status))

    async def unhandled_inbound(self, channel: str | None = None) -> list[InboxItem]:
        query = select(t.inbox).where(t.inbox.c.status == "new").order_by(t.inbox.c.id)
        if channel is not None:
            query = query.where(t.inbox.c.channel == channel)
        return await self.db.run(lambda c: [_inbox_item(r) for r in c.execute(query)], write=False)

    async def oldest_unhandled(self, channels: Sequence[str]) -> dict[str, datetime]:
        """When the oldest delivery of each of ``channels`` not yet handled was received;
        a channel with none is left out."""
        query = (
            select(t.inbox.c.channel, func.min(t.inbox.c.received_at))
            .where(t.inbox.c.status == "new", t.inbox.c.channel.in_(channels))
            .group_by(t.inbox.c.channel)
        )
        rows = await self.db.run(lambda c: c.execute(query).all(), write=False)
        return {channel: received for channel, received in rows}

    # -- replies owed ----------------------------------------------------------------------
    # A reply is kept until its channel has sent all of it. Keeping it, and forgetting it
    # once sent, need not wait for the disk: a crash of the process loses neither, and a
    # crash of the machine at worst sends a reply again, or loses one it had just made.

    async def owe_reply(
        self, reply: OwedReply, cards: Sequence[str] = (), once: str | None = None
    ) -> bool:
        """Keeps a reply, and notes the approvals whose ``cards`` it shows as announced.
        With ``once``, only if no reply under that key was owed to its chat before:
        False when one was."""

        def owe(conn: Connection) -> bool:
            tx = LedgerTx(conn, self.worker)
            if once is not None and not tx.note_once(once, reply.channel, reply.chat_id):
                return False
            tx.owe_reply(reply, self.worker)
            tx.announce(cards)
            return True

        return await self.db.run(owe, durable=False)

    async def unannounced_approvals(
        self, created_before: datetime, claimed_before: datetime
    ) -> list[Approval]:
        """Pending approvals older than ``created_before`` whose card no channel was
        handed and no scheduler has claimed since ``claimed_before``, oldest first."""
        query = (
            select(t.approvals)
            .where(t.approvals.c.created_at < created_before, *_unannounced(claimed_before))
            .order_by(t.approvals.c.created_at)
        )
        return await self.db.run(lambda c: [_approval(r) for r in c.execute(query)], write=False)

    async def claim_announcement(
        self, approval_id: str, now: datetime, claimed_before: datetime
    ) -> bool:
        """Claims the announcing of a card, until a channel notes it handed out; False
        when it was handed out, or another scheduler's claim is younger than
        ``claimed_before``. A claim whose card never went (a crash) lapses then."""
        query = (
            update(t.approvals)
            .where(t.approvals.c.id == approval_id, *_unannounced(claimed_before))
            .values(announce_claimed_at=now)
        )
        return await self.db.run(lambda conn: conn.execute(query).rowcount > 0)

    async def release_announcement(self, approval_id: str) -> None:
        """Takes a claim back: the card did not go out, and is announced again."""
        query = (
            update(t.approvals)
            .where(t.approvals.c.id == approval_id)
            .values(announce_claimed_at=None)
        )
        await self.db.run(lambda conn: conn.execute(query))

    async def note_once(self, once: str, channel: str, chat_id: str) -> bool:
        """Notes a reply under ``once`` shown in a chat that keeps no replies (the
        terminal); False if one was before."""
        return await self.write(lambda tx: tx.note_once(once, channel, chat_id))

    async def shown(self, approval_ids: Sequence[str]) -> None:
        """Notes cards shown outside the replies kept for channels (the terminal)."""
        await self.db.run(
            lambda conn: LedgerTx(conn, self.worker).announce(approval_ids), durable=False
        )

    async def reply_progress(self, key: str, sent_steps: int, payload: dict[str, Any]) -> None:
        query = (
            update(t.replies)
            .where(t.replies.c.key == key)
            .values(sent_steps=sent_steps, payload=payload)
        )
        await self.db.run(lambda conn: conn.execute(query), durable=False)

    async def reply_sent(self, key: str) -> None:
        await self.db.run(lambda conn: _DELETE_REPLY.run(conn, {"key": key}), durable=False)

    async def drop_reply(self, key: str, event: NewAuditEvent) -> None:
        """Forgets a reply that cannot be sent, with an audit event saying why."""
        query = delete(t.replies).where(t.replies.c.key == key)

        def drop(tx: LedgerTx) -> None:
            tx.conn.execute(query)
            tx.audit(event)

        await self.write(drop)

    # -- where approval cards show ------------------------------------------------------

    async def remember_card_message(
        self, channel: str, approval_id: str, message: CardMessage
    ) -> str | None:
        """Notes a message of ``channel`` showing the card. When the card was settled
        there while the message was on its way, returns the outcome to show on it."""

        def remember(conn: Connection) -> str | None:
            messages, outcome = _locked_card(conn, channel, approval_id)
            if outcome is not None:
                return outcome
            if list(message) not in messages:
                _keep_card(conn, channel, approval_id, [*messages, list(message)], None)
            return None

        return await self.db.run(remember, durable=False)

    async def rename_card_messages(self, channel: str, named: str) -> int:
        """Keeps the cards noted under ``channel`` under ``named``, for a channel that has
        since noted them more narrowly (a Telegram bot's, by its id); a card noted under
        both keeps ``named``'s. How many were renamed."""
        cards = t.card_messages.c
        theirs = select(cards.approval_id).where(cards.channel == named)
        rename = (
            update(t.card_messages)
            .where(cards.channel == channel, cards.approval_id.not_in(theirs))
            .values(channel=named)
        )
        return await self.db.run(lambda conn: conn.execute(rename).rowcount)

    async def card_shown(self, channel: str, approval_id: str) -> bool:
        """Whether a message of ``channel`` shows the card with its buttons."""
        query = select(t.card_messages.c.messages, t.card_messages.c.outcome).where(
            t.card_messages.c.channel == channel, t.card_messages.c.approval_id == approval_id
        )
        row = await self.db.run(lambda conn: conn.execute(query).first(), write=False)
        return row is not None and row.outcome is None and bool(row.messages)

    async def take_card_messages(
        self, channel: str, approval_id: str, outcome: str
    ) -> list[CardMessage]:
        """Every message of ``channel`` showing the card and not yet showing ``outcome``
        (see ``settle_card_messages``); one noted later learns ``outcome`` (see
        ``remember_card_message``)."""

        def take(conn: Connection) -> list[CardMessage]:
            messages, _ = _locked_card(conn, channel, approval_id)
            _keep_card(conn, channel, approval_id, messages, outcome)
            return [(str(chat), str(message)) for chat, message in messages]

        return await self.db.run(take, durable=False)

    async def settle_card_messages(
        self,
        channel: str,
        approval_id: str,
        settled: Sequence[CardMessage],
        unsettled: Sequence[CardMessage] = (),
    ) -> None:
        """Messages taken that show the card's outcome now (``settled``): the next
        ``take_card_messages`` hands them out no more; and those whose update the
        platform could not take now (``unsettled``): it hands them out (again)."""

        def settle(conn: Connection) -> None:
            messages, outcome = _locked_card(conn, channel, approval_id)
            done = [list(each) for each in settled]
            messages = [each for each in messages if each not in done]
            messages += [list(each) for each in unsettled if list(each) not in messages]
            _keep_card(conn, channel, approval_id, messages, outcome)

        await self.db.run(settle)

    # -- long-term memory's journal --------------------------------------------------------

    async def journal(self, records: Sequence[dict[str, Any]]) -> None:
        await self.write(lambda tx: tx.journal(records))

    async def journal_after(self, seq: int, limit: int = 500) -> list[tuple[int, dict[str, Any]]]:
        """Journal entries after ``seq``, in order: (seq, record as a dict)."""
        query = (
            select(t.memory_journal.c.seq, t.memory_journal.c.body)
            .where(t.memory_journal.c.seq > seq)
            .order_by(t.memory_journal.c.seq)
            .limit(limit)
        )
        return await self.db.run(
            lambda c: [(int(r.seq), dict(r.body)) for r in c.execute(query)], write=False
        )

    async def journal_end(self) -> int:
        """The journal's last sequence number (0 when it is empty)."""
        query = select(func.coalesce(func.max(t.memory_journal.c.seq), 0))
        return await self.db.run(lambda c: int(c.execute(query).scalar_one()), write=False)

    async def audit_end(self) -> int:
        """The audit log's last sequence number (0 when it is empty)."""
        return await self.db.run(
            lambda c: int(c.execute(_AUDIT_END).scalar_one_or_none() or 0), write=False
        )

    async def decided_after(
        self, seq: int, before: datetime | None = None
    ) -> tuple[int, list[str]]:
        """The approvals decided after audit event ``seq`` (and, given ``before``, before
        then), by whoever (a chat, a shell, a timer), and those cancelled with their run
        or by its replay, oldest first; and the seq to read on from: the audit log is
        the cursor."""
        decided = [f"approval.{s.value}" for s in ApprovalStatus if s is not ApprovalStatus.PENDING]
        ended = ["run.cancelled", "run.replayed"]  # their data names the approvals
        most = 500
        events = t.audit_events

        def read(conn: Connection) -> tuple[int, list[str]]:
            end = conn.execute(_AUDIT_END).scalar_one_or_none() or 0  # every event to it is there
            if before is not None:  # up to the first too new: times need not rise with seq
                young = conn.execute(
                    select(func.min(events.c.seq)).where(
                        events.c.seq > seq, events.c.seq <= end, events.c.at > before
                    )
                ).scalar()
                end = young - 1 if young is not None else end
            rows = conn.execute(
                select(events.c.seq, events.c.kind, events.c.subject, events.c.data)
                .where(events.c.seq > seq, events.c.seq <= end)
                .where(events.c.kind.in_(decided + ended))
                .order_by(events.c.seq)
                .limit(most)
            ).all()
            approvals = [
                approval
                for _, kind, subject, data in rows
                for approval in (data.get("approvals", []) if kind in ended else [subject])
            ]
            return (rows[-1][0] if len(rows) == most else max(seq, end)), approvals

        return await self.db.run(read, write=False)

    async def entities(self) -> list[str]:
        """Every entity runs were about, e.g. ``client:Acme Bakery``."""
        query = select(t.entities.c.entity).order_by(t.entities.c.entity)
        return await self.db.run(lambda c: list(c.execute(query).scalars()), write=False)

    async def cursor(self, reader: str, unread: int = 0) -> int:
        """How far ``reader`` has read the journal or the audit log; ``unread`` if it
        never has."""
        query = select(t.memory_cursors.c.seq).where(t.memory_cursors.c.store == reader)
        seq = await self.db.run(lambda c: c.execute(query).scalar_one_or_none(), write=False)
        return unread if seq is None else int(seq)

    async def move_cursor(self, reader: str, seq: int) -> None:
        def move(conn: Connection) -> None:
            upsert = _insert_into(conn, t.memory_cursors).values(store=reader, seq=seq)
            conn.execute(upsert.on_conflict_do_update(index_elements=["store"], set_={"seq": seq}))

        await self.db.run(move)

    async def place(self, reader: str) -> Place:
        """Where ``reader``'s cursor stands, with its rewinds (at 0 if it never moved)."""
        cursors = t.memory_cursors
        query = select(cursors.c.seq, cursors.c.rewinds).where(cursors.c.store == reader)
        row = await self.db.run(lambda c: c.execute(query).first(), write=False)
        return Place(row.seq, row.rewinds) if row is not None else Place(0)

    async def rewind_cursor(self, reader: str) -> None:
        """Sets ``reader``'s cursor back to 0, to read everything again: at another
        place than a 0 it stood at, so a move from where another feeder read it fails."""
        cursors = t.memory_cursors

        def rewind(conn: Connection) -> None:
            upsert = _insert_into(conn, cursors).values(store=reader, seq=0, rewinds=1)
            again = {"seq": 0, "rewinds": cursors.c.rewinds + 1}
            conn.execute(upsert.on_conflict_do_update(index_elements=["store"], set_=again))

        await self.db.run(rewind)

    async def move_cursor_from(self, reader: str, read: Place, seq: int) -> bool:
        """Moves ``reader``'s cursor to ``seq`` only if it is still where this reader read
        it (``read``); returns whether it moved. Another process that moved it meanwhile
        (a rebuild rewound it, another feeder went on) keeps its move."""
        cursors = t.memory_cursors

        def move(conn: Connection) -> bool:
            moved = conn.execute(
                update(cursors)
                .where(
                    cursors.c.store == reader,
                    cursors.c.seq == read.seq,
                    cursors.c.rewinds == read.rewinds,
                )
                .values(seq=seq)
            )
            if moved.rowcount == 1 or read != Place(0):
                return moved.rowcount == 1
            first = (
                _insert_into(conn, cursors)
                .values(store=reader, seq=seq)
                .on_conflict_do_nothing(index_elements=["store"])
                .returning(cursors.c.seq)
            )
            return conn.execute(first).first() is not None  # (its rowcount is -1 on psycopg)

        return await self.db.run(move)

    # -- audit ---------------------------------------------------------------------------

    async def audit(self, new: NewAuditEvent) -> AuditEvent:
        return await self.write(lambda tx: tx.audit(new))

    async def audit_events(self, after_seq: int = 0, limit: int | None = None) -> list[AuditEvent]:
        query = (
            select(t.audit_events)
            .where(t.audit_events.c.seq > after_seq)
            .order_by(t.audit_events.c.seq)
        )
        if limit is not None:
            query = query.limit(limit)
        return await self.db.run(lambda c: [_audit(r) for r in c.execute(query)], write=False)

    async def verify_audit(self) -> ChainReport:
        def read(conn: Connection) -> tuple[Any, list[AuditEvent]]:
            head = conn.execute(select(t.audit_head.c.seq, t.audit_head.c.hash)).first()
            query = select(t.audit_events).order_by(t.audit_events.c.seq)
            return head, [_audit(r) for r in conn.execute(query)]

        head, events = await self.db.run(read, write=False)
        if head is not None and head.seq == 0 and not events:
            return ChainReport(0, [])
        return verify_chain(events, (head.seq, head.hash) if head else None)

    # -- effects (idempotency records) ---------------------------------------------------

    async def get_effect(self, key: str) -> IdempotencyRecord | None:
        return await self.read(lambda tx: tx.get_effect(key))

    async def effects_of(self, run_id: str, step_id: str) -> list[IdempotencyRecord]:
        """Every attempt a step of a run made, one per visit, the newest first."""
        i = t.idempotency
        query = (
            select(i)
            .where(i.c.run_id == run_id, i.c.step_id == step_id)
            .order_by(i.c.created_at.desc(), i.c.key.desc())
        )
        return await self.db.run(lambda c: [_effect(row) for row in c.execute(query)], write=False)

    async def begin_effect(
        self, key: str, run_id: str, step_id: str, connector: str, request: dict[str, Any]
    ) -> IdempotencyRecord | None:
        """Durably records an attempt before the effect.

        Returns the record as it stood before this attempt, or None for a first attempt.
        A record that is already done is returned untouched. Raises ``RunCancelled`` for
        a cancelled run, and ``RunTakenOver`` when another worker moves the run now (this
        one was frozen past its lease): it acts there, not here.
        """

        def begin(conn: Connection) -> IdempotencyRecord | None:
            tx = LedgerTx(conn, self.worker)
            tx.may_act(run_id, key)
            previous = tx.get_effect(key)
            if previous is None:
                _INSERT_EFFECT.run(
                    conn,
                    {
                        "key": key,
                        "run_id": run_id,
                        "step_id": step_id,
                        "connector": connector,
                        "status": "started",
                        "request": request,
                        "attempts": 1,
                        "created_at": utcnow(),
                    },
                )
            elif previous.status != "done":
                _UPDATE_EFFECT.run(
                    conn,
                    {"effect_key": key, "attempts": previous.attempts + 1, "status": "started"},
                )
            return previous

        return await self.db.run(begin)

    async def may_still_act(self, run_id: str, key: str) -> None:
        """Before an effect is tried again: raises ``RunCancelled`` if the run was
        cancelled meanwhile (in another process: one here waits for the run), and
        ``RunTakenOver`` if another worker moves it now (this one looked gone)."""
        await self.db.run(
            lambda conn: LedgerTx(conn, self.worker).may_act(run_id, key), write=False
        )

    async def finish_effect(
        self,
        key: str,
        result: dict[str, Any] | None,
        error: str | None,
        audit: NewAuditEvent,
    ) -> None:
        def finish(tx: LedgerTx) -> None:
            _UPDATE_EFFECT.run(
                tx.conn,
                {
                    "effect_key": key,
                    "status": "done" if error is None else "failed",
                    "result": result,
                    "error": error,
                    "finished_at": utcnow(),
                },
            )
            tx.audit(audit)

        await self.write(finish)

    async def release_unfinished_effects(self, run_id: str, actor: str) -> list[str]:
        """The operator checked: the attempt the run stopped at did not happen."""
        released = {"status": "failed", "error": "released by the operator"}
        return await self._settle_unfinished(run_id, actor, "effect.released", lambda _: released)

    async def confirm_unfinished_effects(
        self,
        run_id: str,
        actor: str,
        result: Callable[[IdempotencyRecord], dict[str, Any]],
    ) -> list[str]:
        """The operator checked: the attempt the run stopped at did happen. ``result``
        makes, from its record, the answer it is recorded with."""
        return await self._settle_unfinished(
            run_id,
            actor,
            "effect.confirmed",
            lambda record: {"status": "done", "result": result(record)},
        )

    async def _settle_unfinished(
        self,
        run_id: str,
        actor: str,
        kind: str,
        outcome: Callable[[IdempotencyRecord], dict[str, Any]],
    ) -> list[str]:
        """Settles the newest attempt with no outcome: the one the run stopped at. An
        older one is an attempt a replay went past, still unknown: nobody checked it."""
        i = t.idempotency
        newest = (
            select(i)
            .where(i.c.run_id == run_id, i.c.status == "started")
            .order_by(i.c.created_at.desc(), i.c.key.desc())
            .limit(1)
        )

        def settle(tx: LedgerTx) -> list[str]:
            row = tx.conn.execute(newest).first()
            if row is None:
                return []
            record = _effect(row)
            settled = tx.conn.execute(
                update(i)
                .where(i.c.key == record.key, i.c.status == "started")
                .values(**outcome(record), finished_at=utcnow())
            )
            if settled.rowcount != 1:  # settled by another process meanwhile
                return []
            tx.audit(NewAuditEvent(actor, kind, record.key, {"run": run_id}))
            return [record.key]

        return await self.write(settle)

    # -- timers --------------------------------------------------------------------------

    async def due_timers(
        self, now: datetime, limit: int | None = 100, held: Mapping[str, datetime] | None = None
    ) -> list[Timer]:
        """The pending timers due by ``now``, oldest first; not those of a paused run,
        whose deadlines wait with it (``postpone_deadlines`` moves them at its resume),
        nor the waits for an event of ``held`` due after the time it names (an event
        that came then, not handled yet, may be theirs): left out here, not after the
        ``limit``, so that however many they are they hold up no other timer."""
        timers = t.timers
        query = (
            select(timers)
            .outerjoin(t.runs, t.runs.c.id == timers.c.run_id)
            .where(
                timers.c.status == "pending",
                timers.c.due_at <= now,
                or_(t.runs.c.status.is_(None), t.runs.c.status != RunStatus.PAUSED.value),
            )
            .order_by(timers.c.due_at)
            .limit(limit)
        )
        if held:
            event = func.coalesce(timers.c.payload["event"].as_string(), "")
            behind = [and_(event == e, timers.c.due_at > came) for e, came in held.items()]
            query = query.where(or_(timers.c.kind != "wait", ~or_(*behind)))
        return await self.db.run(lambda c: [_timer(r) for r in c.execute(query)], write=False)

    async def get_timer(self, key: str) -> Timer | None:
        return await self.read(lambda tx: tx.timer(key))

    async def open_wait(self, run_id: str) -> Timer | None:
        """The pending timer of a run's current wait step, if it is waiting."""
        return await self.read(lambda tx: tx.open_wait(run_id))

    async def plan_timer(self, key: str, kind: str, due_at: datetime) -> None:
        """A timer with no run, due at ``due_at``: added, or moved there while it has not
        fired (a time of day changed in the settings)."""

        def plan(tx: LedgerTx) -> None:
            timer = tx.timer(key)
            if timer is None:
                tx.add_timer(key, kind, due_at, None, {})
            elif timer.status == "pending" and timer.due_at != due_at:
                tx.set_aside_timer(timer.id, due_at)

        with contextlib.suppress(IntegrityError):  # another process added it meanwhile
            await self.write(plan)

    async def claim_timer(self, timer_id: int, worker: str) -> bool:
        """Atomically takes a due timer; exactly one claimant gets True."""
        return await self.write(lambda tx: tx.claim_timer(timer_id, worker, None))

    async def cancel_timer(self, timer_id: int) -> bool:
        """A pending timer that is to fire no more: cancelled. True for the one caller
        that cancels it; False when it fired or was cancelled meanwhile."""
        statement = (
            update(t.timers)
            .where(t.timers.c.id == timer_id, t.timers.c.status == "pending")
            .values(status="cancelled")
        )
        return await self.write(lambda tx: tx.conn.execute(statement).rowcount == 1)

    async def release_timer(self, timer_id: int) -> None:
        """A timer claimed whose work could not be done: due again, for anyone."""
        statement = (
            update(t.timers)
            .where(t.timers.c.id == timer_id, t.timers.c.status == "fired")
            .values(status="pending", claimed_by=None, fired_at=None)
        )
        await self.write(lambda tx: tx.conn.execute(statement))

    # -- model calls ---------------------------------------------------------------------

    async def record_model_call(self, call: ModelCall) -> None:
        statement = insert(t.model_calls).values(
            at=utcnow(),
            run_id=call.run_id,
            step_id=call.step_id,
            purpose=call.purpose,
            model=call.model,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            latency_ms=call.latency_ms,
            cost_usd=call.cost_usd,
        )
        await self.db.run(lambda c: c.execute(statement))

    async def hold_model_room(
        self, hold: ModelHold, limits: Sequence[SpendLimit], now: datetime
    ) -> NoHold | None:
        """Holds room for a model call in every budget of ``limits``, for all the stewards
        on this ledger, or says why not: a limit is spent, or the calls under way against
        it (holds not lapsed) leave it less than the call's worst cost. A call with none
        under way against a limit goes alone, however near the limit (the call that spends
        a budget may take it past). One hold at a time (an advisory lock on PostgreSQL):
        two stewards cannot both take the last room."""

        def take(conn: Connection) -> NoHold | None:
            _one_at_a_time(conn, _HOLDING_ROOM)
            holds = t.model_holds.c
            for limit in limits:
                held = select(func.count(), func.coalesce(func.sum(holds.worst_usd), 0.0))
                held = held.where(holds.until > now)
                if limit.process is not None:
                    held = held.where(holds.process == limit.process)
                spending = _spending_since(limit.since, limit.process).scalar_subquery()
                count, worst, recorded = conn.execute(held.add_columns(spending)).one()
                spent = float(recorded)
                if spent >= limit.limit:
                    return NoHold(limit, spent, spent_out=True)
                if count and spent + float(worst) + hold.worst_usd > limit.limit:
                    return NoHold(limit, spent, spent_out=False)
            conn.execute(
                insert(t.model_holds).values(
                    id=hold.id, process=hold.process, worst_usd=hold.worst_usd, until=hold.until
                )
            )
            return None

        return await self.db.run(take, durable=False)  # a hold lost in a crash: its call too

    async def let_go_model_hold(self, hold_id: str, now: datetime) -> None:
        """Lets a call's hold go, and any that lapsed by ``now``."""
        holds = t.model_holds.c
        statement = delete(t.model_holds).where(or_(holds.id == hold_id, holds.until <= now))
        await self.db.run(lambda c: c.execute(statement), durable=False)

    async def model_spend_since(self, start: datetime, process: str | None = None) -> float:
        """Model spend from ``start`` on: all of it, or one process's runs'."""
        query = _spending_since(start, process)
        return float(await self.db.run(lambda c: c.execute(query).scalar_one(), write=False))

    async def model_calls_since(
        self, start: datetime
    ) -> list[tuple[datetime, str | None, str, float, str]]:
        """Each model call from ``start`` on: when, its run's process (None: no run), the
        model, its cost, its purpose."""
        calls = t.model_calls.c
        query = (
            select(calls.at, t.runs.c.process, calls.model, calls.cost_usd, calls.purpose)
            .select_from(t.model_calls.outerjoin(t.runs, t.runs.c.id == calls.run_id))
            .where(calls.at >= start)
            .order_by(calls.at)
        )
        return await self.db.run(
            lambda c: [
                (r.at, r.process, r.model, float(r.cost_usd), r.purpose) for r in c.execute(query)
            ],
            write=False,
        )

    async def open_work(
        self,
        until: datetime,
        money: dict[str, list[str]] | None = None,
        amount_of: Callable[[str], float] = float,
    ) -> OpenWork:
        """What the daily list ranks, lean: every pending approval and every wait due
        before ``until`` of a run not paused, each with its run's money at stake
        (``money``: each process's money input names, each counted as what is still owed
        of it where a part is paid, else whole; ``amount_of`` reads one as a number,
        raising ValueError), and every failed, running or paused run. Times come
        as seconds since the epoch, computed by the database, and JSON fields are read
        there too: one trip, no per-row parsing."""
        money = money or {}
        names = sorted({name for fields in money.values() for name in fields})
        at_stake = [
            t.runs.c.process,
            *(t.runs.c.inputs[name].as_string() for name in names),
            *(t.runs.c.owed[name].as_string() for name in names),
        ]
        approvals = (
            select(
                t.approvals.c.id,
                t.approvals.c.run_id,
                _Epoch(t.approvals.c.created_at),
                _Epoch(t.approvals.c.expires_at),
                t.approvals.c.card["risk"].as_string(),
                *at_stake,
            )
            .select_from(t.approvals.outerjoin(t.runs, t.runs.c.id == t.approvals.c.run_id))
            .where(
                t.approvals.c.status == ApprovalStatus.PENDING.value,
                or_(t.runs.c.status.is_(None), t.runs.c.status != RunStatus.PAUSED.value),
            )
        )
        stopped = [RunStatus.FAILED.value, RunStatus.RUNNING.value, RunStatus.PAUSED.value]
        runs = select(t.runs.c.id, t.runs.c.status, _Epoch(t.runs.c.updated_at), *at_stake).where(
            t.runs.c.status.in_(stopped)
        )
        timers = (
            select(t.timers.c.key, t.timers.c.run_id, _Epoch(t.timers.c.due_at), *at_stake)
            .select_from(t.timers.join(t.runs, t.runs.c.id == t.timers.c.run_id))
            .where(
                t.timers.c.status == "pending",
                t.timers.c.kind == "wait",
                t.timers.c.due_at < until,
                t.runs.c.status.in_([s.value for s in OPEN_STATUSES if s is not RunStatus.PAUSED]),
            )
        )
        position = {name: 1 + index for index, name in enumerate(names)}

        def worth(row: Any, start: int) -> float:
            """The run's money at stake, summed: its process is at ``start``, then its
            inputs, then what is still owed of them."""
            total = 0.0
            for name in money.get(row[start], ()):
                owed = row[start + len(names) + position[name]]
                value = owed if owed is not None else row[start + position[name]]
                if value:
                    with contextlib.suppress(ValueError):
                        total += amount_of(value)
            return total

        def rows(conn: Connection, query: Any) -> list[Any]:
            """Plain tuples straight from the driver: these columns need no conversion,
            and ten thousand rows read this way cost a fraction of Row objects."""
            result = conn.execute(query)
            try:
                return list(result.cursor.fetchall())
            finally:
                result.close()

        def read(conn: Connection) -> OpenWork:
            return OpenWork(
                approvals=[
                    (r[0], r[1], float(r[2]), float(r[3]), r[4] or "medium", worth(r, 5))
                    for r in rows(conn, approvals)
                ],
                runs=[(r[0], r[1], float(r[2]), worth(r, 3)) for r in rows(conn, runs)],
                timers=[(r[0], r[1], float(r[2]), worth(r, 3)) for r in rows(conn, timers)],
            )

        return await self.db.run(read, write=False)

    async def step_costs(self, run_id: str) -> list[tuple[str, datetime, float]]:
        """A run's model calls made for its steps, oldest first: the step, when, the cost."""
        calls = t.model_calls.c
        query = (
            select(calls.step_id, calls.at, calls.cost_usd)
            .where(calls.run_id == run_id, calls.step_id.is_not(None))
            .order_by(calls.at, calls.id)
        )
        return await self.db.run(
            lambda c: [(str(step), at, float(cost)) for step, at, cost in c.execute(query)],
            write=False,
        )

    async def model_spend(self, run_id: str | None = None) -> float:
        query = select(func.coalesce(func.sum(t.model_calls.c.cost_usd), 0.0))
        if run_id is not None:
            query = query.where(t.model_calls.c.run_id == run_id)
        return float(await self.db.run(lambda c: c.execute(query).scalar_one(), write=False))


_DECIDE = Prepared(
    update(t.approvals)
    .where(t.approvals.c.id == bindparam("approval_id"))
    .where(t.approvals.c.status == ApprovalStatus.PENDING.value)
    .returning(*t.approvals.c)
)


def decide(
    tx: LedgerTx,
    approval_id: str,
    status: ApprovalStatus,
    decided_by: str,
    reason: str | None = None,
    edited_text: str | None = None,
    check: Callable[[Approval, Run], None] | None = None,
) -> tuple[Approval | None, bool, Run | None]:
    """The first decision wins: (approval as it stands, decided now?, its run as it stands).

    ``check`` may refuse a decision that would win (by raising); nothing is written then.
    """
    now = utcnow()
    if tx.conn.dialect.name == "postgresql":  # the run before its gate, as every write takes them
        owner = tx.conn.execute(
            select(t.approvals.c.run_id).where(t.approvals.c.id == approval_id)
        ).scalar()
        if owner is not None:
            tx.lock_run(owner)
    won = _DECIDE.first(
        tx.conn,
        {
            "approval_id": approval_id,
            "status": status.value,
            "decided_by": decided_by,
            "decided_at": now,
            "reason": reason,
            "edited_text": edited_text,
        },
    )
    if won is None:
        approval = tx.get_approval(approval_id)
        return approval, False, tx.get_run(approval.run_id) if approval else None
    decided = _approval(won)
    run = tx.get_run(decided.run_id)
    if check is not None and run is not None:
        check(decided, run)
    tx.update_run(decided.run_id, status=RunStatus.RUNNING.value, updated_at=now)
    tx.audit(
        NewAuditEvent(
            decided_by,
            f"approval.{status.value}",
            approval_id,
            {"run": decided.run_id, "reason": reason, "edited": edited_text is not None},
        ),
        at=now,
    )
    resumed = replace(run, status=RunStatus.RUNNING, updated_at=now) if run else None
    return decided, True, resumed


class _Epoch(FunctionElement[float]):
    """A timestamp column as seconds since the epoch, computed by the database."""

    type = Float()
    inherit_cache = True


@compiles(_Epoch, "sqlite")
def _epoch_sqlite(element: _Epoch, compiler: Any, **kw: Any) -> str:
    return f"((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0)"


@compiles(_Epoch, "postgresql")
def _epoch_postgresql(element: _Epoch, compiler: Any, **kw: Any) -> str:
    return f"extract(epoch from {compiler.process(element.clauses, **kw)})"


def _unannounced(claimed_before: datetime) -> list[Any]:
    """A pending card no channel was handed, and no claim to announce it younger than
    ``claimed_before``."""
    claimed_at = t.approvals.c.announce_claimed_at
    return [
        t.approvals.c.status == ApprovalStatus.PENDING.value,
        t.approvals.c.announced_at.is_(None),
        or_(claimed_at.is_(None), claimed_at < claimed_before),
    ]


# Processes starting together on a new PostgreSQL database migrate it one at a time:
# each would create the same tables, and all but one fail.
_MIGRATING = 0x4D_49_47_52  # "MIGR"


def _migrate(conn: Connection) -> None:
    _one_at_a_time(conn, _MIGRATING)
    upgrade_to_head(conn)
    if conn.execute(select(t.audit_head.c.id)).first() is None:
        conn.execute(insert(t.audit_head).values(id=1, seq=0, hash=GENESIS))


def _run_values(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "process": run.process,
        "version": run.version,
        "status": run.status.value,
        "inputs": run.inputs,
        "started_by": run.started_by,
        "reply_to": run.reply_to,
        "current_step": run.current_step,
        "steps_logged": run.steps_logged,
        "error": run.error,
        "error_class": run.error_class,
        "replaying": run.replaying,
        "inputs_since": run.inputs_since,
        "owed": run.owed,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
    }


def _run(row: Row[Any]) -> Run:
    return Run(
        id=row.id,
        process=row.process,
        version=row.version,
        status=RunStatus(row.status),
        inputs=dict(row.inputs),
        started_by=row.started_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        reply_to=dict(row.reply_to) if row.reply_to else None,
        current_step=row.current_step,
        steps_logged=row.steps_logged,
        error=row.error,
        error_class=row.error_class,
        replaying=row.replaying,
        inputs_since=row.inputs_since,
        owed=dict(row.owed) if row.owed else None,
    )


def _approval_values(a: Approval) -> dict[str, Any]:
    return {
        "id": a.id,
        "run_id": a.run_id,
        "step_id": a.step_id,
        "visit": a.visit,
        "status": a.status.value,
        "card": a.card,
        "editable": a.editable,
        "created_at": a.created_at,
        "expires_at": a.expires_at,
        "on_expiry": a.on_expiry,
        "decided_by": a.decided_by,
        "decided_at": a.decided_at,
        "reason": a.reason,
        "edited_text": a.edited_text,
    }


def _inbox_item(row: Row[Any]) -> InboxItem:
    return InboxItem(
        row.id, row.channel, row.external_id, dict(row.payload), row.status, row.received_at
    )


def _owed_reply(row: Row[Any]) -> OwedReply:
    return OwedReply(
        row.key, row.channel, row.chat_id, dict(row.payload), row.sent_steps, row.created_at
    )


def _approval(row: Row[Any]) -> Approval:
    return Approval(
        id=row.id,
        run_id=row.run_id,
        step_id=row.step_id,
        visit=row.visit,
        status=ApprovalStatus(row.status),
        card=dict(row.card),
        created_at=row.created_at,
        expires_at=row.expires_at,
        on_expiry=row.on_expiry,
        editable=row.editable,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        reason=row.reason,
        edited_text=row.edited_text,
    )


def _audit(row: Row[Any]) -> AuditEvent:
    return AuditEvent(
        row.seq, row.at, row.actor, row.kind, row.subject, dict(row.data), row.prev_hash, row.hash
    )


def _timer(row: Row[Any]) -> Timer:
    return Timer(row.id, row.key, row.kind, row.due_at, row.run_id, dict(row.payload), row.status)


def _effect(row: Row[Any]) -> IdempotencyRecord:
    return IdempotencyRecord(
        key=row.key,
        run_id=row.run_id,
        step_id=row.step_id,
        connector=row.connector,
        status=row.status,
        request=dict(row.request),
        result=dict(row.result) if row.result is not None else None,
        error=row.error,
        attempts=row.attempts,
    )


__all__ = ["Ledger", "LedgerError", "LedgerTx", "LedgerUnavailable", "decide", "utcnow"]
