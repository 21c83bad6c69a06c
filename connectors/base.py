"""The connector contract: one async call per action, raising classified errors.

Retries, idempotency records, timeouts and audit live once, in the guard that wraps
every connector (``graph.effects``); a connector is only its call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# An email address as SMTP without SMTPUTF8 carries it: one bare address of printable
# ASCII, no list, no display name, no comment ("billing,jane@acme.com" went to "billing"
# alone). What the email connector sends to, and what an email input takes.
ADDRESS = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}$"
)


class ConnectorError(Exception):
    """An action failed. ``kind`` tells the run what to do about it. ``reached`` is
    False for one found before any call to the service (a template that fails, a bad
    address): it says nothing of the service, whose circuit breaker leaves it out."""

    kind: ClassVar[str] = "error"

    def __init__(self, message: str = "", *, reached: bool = True) -> None:
        super().__init__(message)
        self.reached = reached


class TransientError(ConnectorError):
    """Worth retrying: a timeout, a refused connection, a 5xx."""

    kind = "transient"


class DataError(ConnectorError):
    """The request itself is wrong (a bad address, a rejected field): ask the operator."""

    kind = "data"


class PermissionDenied(ConnectorError):
    """Credentials or rights are missing: stop and tell the operator what to fix."""

    kind = "permission"


class OutcomeUnknown(ConnectorError):
    """The call may or may not have reached the outside world (a connection broke after
    the request went out). Acting again could repeat it: the operator must look."""

    kind = "uncertain"


@runtime_checkable
class Connector(Protocol):
    """A way to act on the outside world.

    ``idempotent`` is True when calling ``perform`` twice with the same key has the
    effect of calling it once (the target dedups by key). Only then may the guard
    repeat an attempt whose outcome it never recorded.

    Two methods are optional, used where a connector has them: ``where_to_look(key)``,
    a sentence that tells the operator how to find out whether an attempt whose outcome
    is unknown happened, and ``result_of(action, params, key)``, what ``perform`` would
    have answered, as far as it is known without the answer, for an attempt the
    operator confirms went out.
    """

    name: str
    actions: frozenset[str]
    idempotent: bool

    @property
    def schemas(self) -> Mapping[str, type[BaseModel]]:
        """Each action's parameters, checked before anything is tried."""
        ...

    async def perform(self, action: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        """Acts once and returns what the outside world answered."""
        ...


def validated(schema: type[M], action: str, params: dict[str, Any]) -> M:
    """``params`` as ``schema``; a DataError naming the first wrong field otherwise."""
    try:
        return schema.model_validate(params)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"]) or "parameters"
        raise DataError(f"{action} {field}: {problem['msg']}", reached=False) from None
