"""Who may command steward: the operators in STEWARD_OPERATORS, and the local shell."""

from __future__ import annotations

from collections.abc import Iterable

from graph.messages import Sender

# The terminal and the CLI run as the operator's own OS user: whoever can run them
# can already read the ledger.
LOCAL_CHANNELS = frozenset({"console", "cli"})


class Allowlist:
    def __init__(self, operators: Iterable[str]) -> None:
        self.operators = frozenset(o.strip() for o in operators if o.strip())

    def allows(self, sender: Sender) -> bool:
        return sender.channel in LOCAL_CHANNELS or sender.key in self.operators
