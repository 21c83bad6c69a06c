"""What can go wrong with the ledger, in words an operator can act on."""

import logging
import sqlite3

import psycopg
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError


class LedgerError(Exception):
    """The ledger could not do what was asked."""


class LedgerUnavailable(LedgerError):
    """The database cannot be opened or migrated; steward cannot start without it."""


class TakenOver(LedgerError):
    """A delivery this worker was handling is no longer its own: another worker took it
    over (this one looked gone, silent past its lease) and handles it instead. The
    transaction that would have marked it handled — the handling's first ledger write,
    or its end — commits nothing; what the handling did outside the ledger (working
    memory, a model call) stays done."""


class RunTakenOver(TakenOver):
    """A run this worker was moving is no longer its own: another worker took it over
    (this one looked gone) and moves it on from its last checkpoint. The transaction
    that would have recorded the step's stop commits nothing. Only this run's: a
    delivery that led to it (a decision, an event for several runs) stays handled."""


class WroteWhileReading(LedgerError):
    """Something tried to write to the ledger while a handling that was to write nothing
    ran (``Ledger.reading_only``): nothing was written, and the caller handles the
    delivery the usual way, stored first."""


class RunCancelled(LedgerError):
    """An effect was about to start for a run that the operator has cancelled."""


def cannot_store(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing the values given — longer than their
    column, or text it cannot hold — rather than failing: trying the same again would
    fail again."""
    return isinstance(exc, DataError)


def cause(exc: BaseException) -> str:
    """What went wrong, in the first line of the database's own words: never the
    statement or its parameters, which SQLAlchemy's message goes on to show."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return str(exc.orig).strip().splitlines()[0]
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def ledger_down(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot take a write now — down, out of reach,
    out of disk, locked past waiting — rather than that the write is wrong: the same
    write may go through later."""
    down = (
        OperationalError,
        InterfaceError,
        LedgerUnavailable,
        sqlite3.OperationalError,  # from LangGraph's savers, on the driver itself
        psycopg.OperationalError,
        OSError,
    )
    return isinstance(exc, down)


class Outage:
    """For a loop that tries again each tick: the ledger going down is logged once, in
    one line, and its return; any other failure with its traceback, each time. (A
    traceback a tick from each loop was some fifty lines a second while it was down.)"""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.down = False

    def failed(self, exc: BaseException) -> None:
        if not ledger_down(exc):
            self.log.error("%s failed; trying again", self.what, exc_info=exc)
        elif not self.down:
            self.down = True
            self.log.warning("%s: the ledger is down, trying again: %s", self.what, cause(exc))

    def worked(self) -> None:
        if self.down:
            self.down = False
            self.log.warning("%s works again", self.what)
