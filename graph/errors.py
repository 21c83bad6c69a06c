"""steward's coordinator errors: each says what happened and what to do about it."""

from __future__ import annotations

from graph.messages import cut


class StewardError(Exception):
    """Base for errors the operator should see as a clear sentence."""


class NotFound(StewardError):
    """No such process, run or approval. ``listing`` names what lists the right ones
    ("runs", "approvals"); each surface says how to ask for it in its own words."""

    def __init__(self, what: str, listing: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.listing = listing

    def told(self, listings: dict[str, str]) -> str:
        """``what``, then where to look: ``listings`` maps a listing to its words."""
        where = listings.get(self.listing or "")
        return f"{self.what}; {where}" if where else self.what


class InvalidState(StewardError):
    """The request does not fit the run's or approval's current state."""


class OfferedBefore(InvalidState):
    """The run was offered this delivery's event before: it took it, or kept it, then."""


class UncertainEffect(StewardError):
    """An earlier attempt at an effect has no recorded outcome; acting again could repeat it."""

    kind = "uncertain"

    def __init__(
        self, key: str, connector: str, detail: str | None = None, look: str | None = None
    ) -> None:
        self.key = key
        what = detail or (
            f"an earlier attempt of {connector} (key {key}) may or may not have reached the "
            "outside world" + (f": {look}" if look else "")
        )
        super().__init__(
            f"{what}; check it there, then /confirm the run if it happened, /retry to try "
            "again, or /cancel the run"
        )


class UncountedPayment(StewardError):
    """A payment steward cannot set against what is owed: it counts it as nothing paid,
    and the run waits on. ``said`` is what the payment says that keeps it from counting,
    its values as Python writes them where they may be any text."""

    def __init__(self, given: object, said: str) -> None:
        super().__init__(f"the payment {said}")
        self.given = given
        self.said = said


# What the operator is told beside a payment's amount steward cannot read: the forms it
# reads, a decimal comma's among them, and why "1.000" is none of them.
AMOUNTS_READ = (
    "Amounts read like 1000.00, 1,000.00, 1.000,00 or €1,000; 1.000 alone is 1,000 to some "
    "and 1.00 to others: write 1000 or 1,00."
)


class UnreadableAmount(UncountedPayment):
    """A payment names an amount steward cannot read ("1.000", "-500")."""

    def __init__(self, given: object) -> None:
        super().__init__(given, f"names an amount steward cannot read: {cut(repr(given), 80)}")


class NothingPaid(UncountedPayment):
    """A payment of nothing ("0", "€0.00"): no part of what is owed, and nothing to
    thank the client for."""

    def __init__(self, given: object) -> None:
        super().__init__(given, f"pays nothing: its amount is {cut(repr(given), 40)}")


class PaymentInAnotherCurrency(UncountedPayment):
    """A payment in a currency other than the one owed: steward converts none."""

    def __init__(self, given: object, currency: str, owed_in: str) -> None:
        super().__init__(
            given, f"pays in {currency} ({given}), where {owed_in} is owed: steward converts none"
        )
        self.currency = currency
        self.owed_in = owed_in


class PaymentInTwoCurrencies(UncountedPayment):
    """A payment whose amount names one currency and its ``currency`` another
    (``"amount": "€1,000", "currency": "USD"``): steward cannot tell which was paid."""

    def __init__(self, given: object, currency: object) -> None:
        super().__init__(
            given,
            f"names two currencies, its amount {cut(repr(given), 40)} and its currency "
            f"{cut(repr(currency), 20)}: steward cannot tell which was paid",
        )


class DecisionForAnotherGate(Exception):
    """A decision reached a gate it was not made for: the run moved on meanwhile (another
    process resumed it with the same decision). Nothing of this resume is kept."""


class GateNotApproved(StewardError):
    """An action was reached without its gate's approval: a definition or engine bug."""

    kind = "permission"


class LoopLimit(StewardError):
    kind = "data"
