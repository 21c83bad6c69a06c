"""Where connectors are found by name; built-in and user connectors register alike."""

from __future__ import annotations

from connectors.base import Connector


class UnknownConnector(LookupError):
    pass


class ConnectorRegistry:
    def __init__(self) -> None:
        self._connectors: dict[str, Connector] = {}

    def register(self, connector: Connector) -> None:
        if connector.name in self._connectors:
            raise ValueError(f"a connector named {connector.name!r} is already registered")
        self._connectors[connector.name] = connector

    def get(self, name: str) -> Connector:
        try:
            return self._connectors[name]
        except KeyError:
            known = ", ".join(sorted(self._connectors)) or "none"
            raise UnknownConnector(f"no connector named {name!r} (registered: {known})") from None
