"""The guard around every connector call: exactly once, after approval, on the record.

Before acting it durably records the attempt under the step's idempotency key; after,
the outcome. A repeated execution returns the stored result. An attempt without an
outcome is repeated only for connectors that dedup by key themselves; otherwise the
run stops as uncertain and asks the operator. Transient failures are retried with
exponential backoff and jitter, each call under a timeout.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from connectors import ConnectorRegistry, OutcomeUnknown, TransientError
from connectors.base import ConnectorError, validated
from graph.errors import UncertainEffect
from memory.ledger import Ledger, NewAuditEvent


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
                raise UncertainEffect(key, connector_name)
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout(self.policy.timeout):
                    result = await connector.perform(action, params, key)
            except TimeoutError:
                if not connector.idempotent:
                    raise UncertainEffect(key, connector_name) from None
                error: ConnectorError = TransientError(
                    f"{connector_name} did not answer within {self.policy.timeout:g}s"
                )
            except OutcomeUnknown as exc:  # the record stays "started": the operator looks
                if not connector.idempotent:
                    raise UncertainEffect(key, connector_name, str(exc)) from None
                error = TransientError(str(exc))
            except TransientError as exc:
                error = exc
            except ConnectorError as exc:
                await self._finish(key, run_id, step_id, connector_name, action, None, exc)
                raise
            else:
                await self._finish(key, run_id, step_id, connector_name, action, result, None)
                return result
            if attempt >= self.policy.attempts:
                await self._finish(key, run_id, step_id, connector_name, action, None, error)
                raise error
            await self._sleep(self.policy.delay(attempt))

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
        await self.ledger.finish_effect(
            key,
            result,
            None if error is None else str(error),
            NewAuditEvent(
                "steward",
                kind,
                key,
                {"run": run_id, "step": step_id, "connector": connector, "action": action}
                | ({"error": str(error)} if error else {}),
            ),
        )
