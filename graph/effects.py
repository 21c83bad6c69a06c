"""The guard around every connector call: exactly once, after approval, on the record.

Before acting it durably records the attempt under the step's idempotency key; after,
the outcome. A repeated execution returns the stored result. An attempt without an
outcome is repeated only for connectors that dedup by key themselves; otherwise the
run stops as uncertain and asks the operator. Transient failures are retried with
exponential backoff and jitter, each call under a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from connectors import ConnectorRegistry, OutcomeUnknown, TransientError
from connectors.base import Connector, ConnectorError, validated
from connectors.registry import UnknownConnector
from graph.errors import UncertainEffect
from memory.ledger import IdempotencyRecord, Ledger, NewAuditEvent, RunCancelled, storable

log = logging.getLogger(__name__)


class CircuitBreaker:
    """One per connector: after ``threshold`` transient failures in a row the circuit
    opens and calls fail at once, without reaching the connector; after ``cool_down``
    seconds one call goes through as a probe (half-open): its success closes the
    circuit, its failure opens it again. Only a call that reached the service counts:
    one that ended before (a local error, a bug, a cancel) is no verdict."""

    def __init__(
        self,
        name: str,
        threshold: int = 5,
        cool_down: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.cool_down = cool_down
        self._clock = clock
        self.state: Literal["closed", "open", "half-open"] = "closed"
        self.failures = 0
        self.opened_at = 0.0

    def allow(self) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open" and self._clock() - self.opened_at >= self.cool_down:
            self.state = "half-open"  # this caller is the probe
            log.info("circuit for %s half-open: probing", self.name)
            return True
        return False

    def succeeded(self) -> None:
        if self.state != "closed":
            log.warning("circuit for %s closed: it answers again", self.name)
        self.state, self.failures = "closed", 0

    def released(self) -> None:
        """A call ended before the service could answer it: the circuit stays as it
        was, and a probe's turn passes to the next call."""
        if self.state == "half-open":
            self.state = "open"  # its cool-down is over: the next call probes

    def failed(self) -> None:
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.threshold:
            if self.state != "open":
                log.warning(
                    "circuit for %s opened after %d failures in a row; calls wait %gs",
                    self.name,
                    self.failures,
                    self.cool_down,
                )
            self.state, self.opened_at = "open", self._clock()

    @property
    def retry_in(self) -> float:
        return max(0.0, self.cool_down - (self._clock() - self.opened_at))

    def describe(self) -> str:
        if self.state == "open":
            wait = self.retry_in
            return f"{self.name}: circuit open after {self.failures} failures in a row; " + (
                f"calls wait {wait:.0f}s more" if wait >= 0.5 else "the next call tries it again"
            )
        return f"{self.name}: circuit {self.state}"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 10.0
    timeout: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


class EffectGuard:
    def __init__(
        self,
        ledger: Ledger,
        connectors: ConnectorRegistry,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.ledger = ledger
        self.connectors = connectors
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self.breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, connector: str) -> CircuitBreaker:
        if connector not in self.breakers:
            self.breakers[connector] = CircuitBreaker(connector)
        return self.breakers[connector]

    def open_circuits(self) -> list[CircuitBreaker]:
        return [b for b in self.breakers.values() if b.state != "closed"]

    async def perform(
        self,
        *,
        key: str,
        run_id: str,
        step_id: str,
        connector_name: str,
        action: str,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        connector = self.connectors.get(connector_name)
        schema = connector.schemas.get(action)
        if schema is not None:  # a wrong parameter is the operator's to fix: nothing is tried
            validated(schema, action, params)
        previous = await self.ledger.begin_effect(key, run_id, step_id, connector_name, params)
        if previous is not None:
            if previous.status == "done":
                return previous.result or {}
            if previous.status == "started" and not connector.idempotent:
                raise UncertainEffect(key, connector_name, look=_where_to_look(connector, key))
        breaker = self.breaker(connector_name)
        attempt = 0
        while True:
            attempt += 1
            if not breaker.allow():
                error: ConnectorError = TransientError(
                    f"{connector_name} has failed {breaker.failures} times in a row; "
                    f"not calling it for {breaker.retry_in:.0f}s more"
                )
            else:
                try:
                    async with asyncio.timeout(self.policy.timeout):
                        result = await connector.perform(action, params, key)
                except TimeoutError:
                    breaker.failed()
                    if not connector.idempotent:
                        look = _where_to_look(connector, key)
                        raise UncertainEffect(key, connector_name, look=look) from None
                    error = TransientError(
                        f"{connector_name} did not answer within {self.policy.timeout:g}s"
                    )
                except OutcomeUnknown as exc:  # the record stays "started": the operator looks
                    breaker.failed()
                    if not connector.idempotent:
                        raise UncertainEffect(key, connector_name, str(exc)) from None
                    error = TransientError(str(exc))
                except TransientError as exc:
                    if exc.reached:
                        breaker.failed()
                    else:
                        breaker.released()
                    error = exc
                except ConnectorError as exc:  # it answered, if only to say no
                    if exc.reached:
                        breaker.succeeded()
                    else:
                        breaker.released()
                    await self._finish(key, run_id, step_id, connector_name, action, None, exc)
                    raise
                except BaseException:  # a bug, or cancelled: no verdict (see released)
                    breaker.released()
                    raise
                else:
                    breaker.succeeded()
                    result = _as_json(storable(result))  # what a ledger cannot hold, as text
                    await self._finish(key, run_id, step_id, connector_name, action, result, None)
                    return result
            if attempt >= self.policy.attempts:
                await self._finish(key, run_id, step_id, connector_name, action, None, error)
                raise error
            await self._sleep(self.policy.delay(attempt))
            try:  # a cancel from another process, or a take-over, landed while it waited
                await self.ledger.may_still_act(run_id, key)
            except RunCancelled:  # a take-over leaves the record to the worker moving the run
                await self._finish(key, run_id, step_id, connector_name, action, None, error)
                raise

    def confirmed(self, record: IdempotencyRecord, action: str, actor: str) -> dict[str, Any]:
        """What an attempt the operator confirms went out is recorded as answering, for
        the steps after it to read as a real answer: what its connector knows that answer
        holds without it (``result_of``: the email's Message-ID), and who confirmed it."""
        result: dict[str, Any] = {}
        try:
            known = getattr(self.connectors.get(record.connector), "result_of", None)
            if callable(known):
                result = known(action, record.request, record.key)
        except (UnknownConnector, ConnectorError) as exc:  # gone, or a request it cannot read
            log.warning("confirmed %s with nothing of its answer known: %s", record.key, exc)
        return _as_json(storable({**result, "confirmed_by": actor}))

    async def _finish(
        self,
        key: str,
        run_id: str,
        step_id: str,
        connector: str,
        action: str,
        result: dict[str, Any] | None,
        error: ConnectorError | None,
    ) -> None:
        kind = "effect.done" if error is None else f"effect.failed.{error.kind}"
        message = None if error is None else storable(str(error))
        await self.ledger.finish_effect(
            key,
            result,
            message,
            NewAuditEvent(
                "steward",
                kind,
                key,
                {"run": run_id, "step": step_id, "connector": connector, "action": action}
                | ({"error": message} if message is not None else {}),
            ),
        )


def _as_json(result: dict[str, Any]) -> dict[str, Any]:
    """A connector's answer as JSON holds it: a datetime, a Decimal or a UUID in it
    failed its record after the effect, which then looked unfinished."""
    return json.loads(json.dumps(result, default=str))  # type: ignore[no-any-return]


def _where_to_look(connector: Connector, key: str) -> str | None:
    """How the operator finds out whether an attempt reached the outside world, where
    the connector can say (``where_to_look(key)``: the email's Message-ID)."""
    where = getattr(connector, "where_to_look", None)
    return str(where(key)) if callable(where) else None
