"""Where connectors are found by name; built-in and user connectors register alike.

A user connector is a Python package that declares an entry point in the
``steward.connectors`` group: a callable taking no arguments (it reads its own settings
from the environment) that returns a connector. Installed beside steward, it is
registered at start; one that fails to load is skipped and reported, and never stops
steward from starting.
"""

from __future__ import annotations

import inspect
import logging
from importlib.metadata import entry_points

from connectors.base import Connector

ENTRY_POINTS = "steward.connectors"
log = logging.getLogger(__name__)


class UnknownConnector(LookupError):
    pass


class ConnectorRegistry:
    def __init__(self) -> None:
        self._connectors: dict[str, Connector] = {}

    def register(self, connector: Connector) -> None:
        if connector.name in self._connectors:
            raise ValueError(f"a connector named {connector.name!r} is already registered")
        self._connectors[connector.name] = connector

    def actions(self) -> dict[str, frozenset[str]]:
        """Each registered connector's actions, by its name."""
        return {name: connector.actions for name, connector in self._connectors.items()}

    def get(self, name: str) -> Connector:
        try:
            return self._connectors[name]
        except KeyError:
            known = ", ".join(sorted(self._connectors)) or "none"
            raise UnknownConnector(f"no connector named {name!r} (registered: {known})") from None


def load_user_connectors(registry: ConnectorRegistry) -> list[str]:
    """Registers every installed user connector; returns a line for each one skipped."""
    problems = []
    for entry in entry_points(group=ENTRY_POINTS):
        where = f"connector {entry.name!r} ({entry.value})"
        try:
            connector = entry.load()()
            if not isinstance(connector, Connector):
                raise TypeError(
                    "it returned no connector: one needs name, actions, idempotent, "
                    "schemas and perform"
                )
            if not inspect.iscoroutinefunction(connector.perform):
                # awaited, a plain one acts and then fails the step: its effect unrecorded,
                # and made again by each /retry
                raise TypeError("its perform is not a coroutine: write it `async def perform`")
            registry.register(connector)
        except Exception as exc:  # a user's plugin: whatever it raises, steward starts
            problems.append(f"{where}: {exc}")
            log.warning("skipped %s: %s", where, exc)
    return problems
