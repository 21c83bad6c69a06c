"""What can go wrong with the ledger, in words an operator can act on."""


class LedgerError(Exception):
    """The ledger could not do what was asked."""


class LedgerUnavailable(LedgerError):
    """The database cannot be opened or migrated; steward cannot start without it."""


class RunCancelled(LedgerError):
    """An effect was about to start for a run that the operator has cancelled."""
