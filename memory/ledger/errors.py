"""What can go wrong with the ledger, in words an operator can act on."""

from sqlalchemy.exc import DataError


class LedgerError(Exception):
    """The ledger could not do what was asked."""


class LedgerUnavailable(LedgerError):
    """The database cannot be opened or migrated; steward cannot start without it."""


class RunCancelled(LedgerError):
    """An effect was about to start for a run that the operator has cancelled."""


def cannot_store(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing the values given — longer than their
    column, or text it cannot hold — rather than failing: trying the same again would
    fail again."""
    return isinstance(exc, DataError)
