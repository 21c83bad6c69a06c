"""Side effects on the outside world: each connector is one async call per action."""

from connectors.base import (
    Connector,
    ConnectorError,
    DataError,
    OutcomeUnknown,
    PermissionDenied,
    TransientError,
)
from connectors.registry import ConnectorRegistry, load_user_connectors

__all__ = [
    "Connector",
    "ConnectorError",
    "ConnectorRegistry",
    "DataError",
    "OutcomeUnknown",
    "PermissionDenied",
    "TransientError",
    "load_user_connectors",
]
