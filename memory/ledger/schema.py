"""The ledger's tables: the single source of truth for everything steward did."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import false


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the ledger stores timezone-aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


Json: Any = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants a bigint.
Serial: Any = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

definitions = Table(
    "definitions",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("name", String(100), nullable=False, index=True),
    Column("body", Json, nullable=False),
    Column("source", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("process", String(100), nullable=False),
    Column("version", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("inputs", Json, nullable=False),
    Column("started_by", String(200), nullable=False),
    Column("reply_to", Json, nullable=True),
    Column("current_step", String(100), nullable=True),
    Column("steps_logged", Integer, nullable=False, default=0),
    Column("error", Text, nullable=True),
    Column("error_class", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("owner", String(300), nullable=True),  # the worker moving it while it runs
    # The step a replay goes on from, from its record until it first stops: recovery
    # replays again from there, and never goes on from the state before the replay.
    Column("replaying", String(100), nullable=True),
    # The audit event of the replay that gave the run the inputs it has; none: its own.
    Column("inputs_since", BigInteger, nullable=True),
    # What is still owed of each money input a part of which is paid, as the run last
    # stopped: the money the daily list shows at stake, where an input holds it all.
    Column("owed", Json, nullable=True),
    Index("ix_runs_status_updated", "status", "updated_at"),
    Index("ix_runs_created", "created_at"),
    Index("ix_runs_status_created", "status", "created_at"),
)

steps = Table(
    "steps",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("step_id", String(100), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("detail", Json, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("run_id", "seq", name="uq_steps_run_seq"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("run_id", String(32), nullable=False),
    Column("step_id", String(100), nullable=False),
    Column("visit", Integer, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("card", Json, nullable=False),
    Column("editable", String(100), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("on_expiry", String(16), nullable=False),
    Column("decided_by", String(200), nullable=True),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("reason", Text, nullable=True),
    Column("edited_text", Text, nullable=True),
    # When its card was first handed to a channel; a pending card never handed out (a
    # crash came first, or the run was started from a shell) is announced by the scheduler.
    Column("announced_at", UTCDateTime, nullable=True),
    Column("announce_claimed_at", UTCDateTime, nullable=True),  # a scheduler is announcing it
    UniqueConstraint("run_id", "step_id", "visit", name="uq_approvals_gate"),
    Index("ix_approvals_run_status", "run_id", "status"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("channel", String(32), nullable=False),
    Column("external_id", String(200), nullable=False),
    Column("payload", Json, nullable=False),
    Column("status", String(16), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("handled_at", UTCDateTime, nullable=True),
    Column("owner", String(300), nullable=True),  # the worker handling it; see workers
    UniqueConstraint("channel", "external_id", name="uq_inbox_delivery"),
    Index("ix_inbox_status", "status"),
)

# Replies a channel owes a chat, each kept until all of it is sent: a crash, a stop or
# an outage of the platform delays a reply and never loses it.
replies = Table(
    "replies",
    metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("channel", String(32), nullable=False, index=True),
    Column("chat_id", String(200), nullable=False),
    Column("payload", Json, nullable=False),
    Column("sent_steps", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("owner", String(300), nullable=True),  # the worker sending it; see workers
)

# The processes serving channels (``steward run``, ``steward chat``) and the shell
# commands that move runs, each beating while it lives. A delivery, a reply or a running
# run belongs to the worker that took it; another worker takes it over only once its
# owner is gone: stopped, or silent past its lease.
workers = Table(
    "workers",
    metadata,
    Column("id", String(300), primary_key=True),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
    # ``steward run`` with Telegram or Slack: while one lives, timers and the daily list
    # are for its chats, and a terminal beside it leaves them to it.
    Column("serves_platforms", Boolean, nullable=False, server_default=false()),
)

# The messages showing each approval card in a channel — for Telegram one bot's,
# ``telegram:`` and its id; for Slack one app's, ``slack:`` and its bot id — (a chat and
# a message in it, as the platform names them), so that its outcome replaces them in
# place — however long it waits, and across restarts; ``outcome`` once it has (a message
# posted later shows it).
card_messages = Table(
    "card_messages",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("approval_id", String(16), primary_key=True),
    Column("messages", Json, nullable=False),
    Column("outcome", Text, nullable=True),
)

# The chats a reply meant once per chat (the daily list of a day: ``digest:2026-10-24``)
# was owed to, kept in the transaction that owes it: however often its sending starts
# again (a crash, a stop, two schedulers), each chat is owed it once.
replies_once = Table(
    "replies_once",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("channel", String(32), primary_key=True),
    Column("chat_id", String(200), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("data", Json, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# One row: the newest event's seq and hash, so deleting the tail of the log shows too.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

idempotency = Table(
    "idempotency",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("run_id", String(32), nullable=False, index=True),
    Column("step_id", String(100), nullable=False),
    Column("connector", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("request", Json, nullable=False),
    Column("result", Json, nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=1),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
)

timers = Table(
    "timers",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("key", String(200), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("run_id", String(32), nullable=True, index=True),
    Column("payload", Json, nullable=False),
    Column("status", String(16), nullable=False),
    Column("claimed_by", String(100), nullable=True),
    Column("fired_at", UTCDateTime, nullable=True),
    Index("ix_timers_status_due", "status", "due_at"),
)

# An event a run will wait for, delivered before it waits (a payment while its reminder
# waits for approval): kept until the run's wait takes it.
kept_events = Table(
    "kept_events",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("event", String(100), nullable=False),
    Column("data", Json, nullable=False),
    Column("by", String(200), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("taken_at", UTCDateTime, nullable=True),
    Index("ix_kept_events_run_event", "run_id", "event"),
)

# Room in the budgets held by a model call under way, by any steward on this ledger, at
# the call's worst cost: calls made at once, in one steward or several, cannot together
# spend past a budget. A hold is let go when its call is recorded; one whose steward died
# with it lapses at ``until``.
model_holds = Table(
    "model_holds",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("process", String(100), nullable=True),
    Column("worst_usd", Float, nullable=False),
    Column("until", UTCDateTime, nullable=False),
)

# The runs each delivery was offered to (an event a webhook brought), noted in the
# transaction of the offer: a delivery handled again, after an offer failed or a crash
# cut its handling short, is offered to the runs it did not reach, and never twice to one.
offers = Table(
    "offers",
    metadata,
    Column("inbox_id", BigInteger, primary_key=True),
    Column("run_id", String(32), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
)

model_calls = Table(
    "model_calls",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("run_id", String(32), nullable=True, index=True),
    Column("step_id", String(100), nullable=True),
    Column("purpose", String(32), nullable=False),
    Column("model", String(100), nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("cost_usd", Float, nullable=False),
)

# Long-term memory's journal: every record as it happened, kept for good, so that the
# long-term store can be rebuilt from here and a store that is down loses nothing.
memory_journal = Table(
    "memory_journal",
    metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("record_id", String(36), nullable=False, unique=True),
    Column("entity", Text, nullable=True, index=True),
    Column("at", UTCDateTime, nullable=False),
    Column("body", Json, nullable=False),
)

# What runs were about: clients, invoices, topics ("client:Acme Bakery"), as their
# inputs named them; a question that names one is filtered by it.
entities = Table(
    "entities",
    metadata,
    Column("entity", Text, primary_key=True),
    Column("first_seen", UTCDateTime, nullable=False),
)

# How far each reader of the journal and the audit log has read: each long-term store,
# fed from both, and the watcher that settles cards decided in another process.
memory_cursors = Table(
    "memory_cursors",
    metadata,
    Column("store", String(300), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("rewinds", Integer, nullable=False, server_default="0"),
)
