"""The circuit breaker per connector: open after failures in a row, probe, close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from bot.app import Steward
from bot.settings import load_settings
from connectors import DataError, OutcomeUnknown, TransientError
from graph.effects import CircuitBreaker
from graph.messages import Inbound, Sender
from memory.ledger import RunStatus
from tests.connectors.test_email import Inbox, approve_onboarding, open_steward
from tests.graph.test_engine import FAST_RETRY, ONBOARD, Flaky, use_connector
from tests.net import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_failures_in_a_row_then_probes_once_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker("email", threshold=3, cool_down=30, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    breaker.succeeded()  # a success in between: the count starts again
    for _ in range(3):
        assert breaker.allow()
        breaker.failed()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 29
    assert not breaker.allow() and "1s more" in breaker.describe()
    clock.now += 1
    assert "the next call tries it again" in breaker.describe()
    assert breaker.allow() and breaker.state == "half-open"
    assert not breaker.allow()  # one probe at a time
    breaker.failed()
    assert breaker.state == "open"  # the probe failed: open again, for the full cool-down
    clock.now += 30
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.allow()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Steward]:
    settings = load_settings(home=tmp_path / "home", operators="telegram:1")
    async with Steward.open(settings, retry=FAST_RETRY) as steward:
        yield steward


async def test_an_open_circuit_fails_runs_fast_shows_in_runs_and_heals(app: Steward) -> None:
    clock = Clock()
    app.engine.effects.breakers["flaky"] = CircuitBreaker("flaky", 5, 30, clock)
    flaky = Flaky([TransientError("503")] * 6)
    use_connector(app, flaky)

    async def approve() -> RunStatus:
        view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
        assert view.approval is not None
        decision = await app.engine.decide(view.approval.id, True, "cli:shell")
        assert decision.view is not None
        return decision.view.run.status

    assert await approve() is RunStatus.FAILED  # 3 attempts, 3 failures
    assert await approve() is RunStatus.FAILED  # 2 more failures open it; the 3rd never calls
    assert flaky.calls == 5
    assert await approve() is RunStatus.FAILED
    assert flaky.calls == 5  # open: nobody called it

    operator = Sender("telegram", "1")
    reply = await app.door.receive(Inbound(operator, "c", "u1", text="/runs"))
    assert reply is not None
    assert "⚠ flaky: circuit open after 5 failures in a row" in "\n".join(reply.texts)

    clock.now += 30  # the probe meets the last failure: open again, for the whole wait
    assert await approve() is RunStatus.FAILED
    assert flaky.calls == 6
    clock.now += 30  # the next probe gets through, and the circuit closes
    assert await approve() is RunStatus.SUCCEEDED
    assert flaky.calls == 7
    assert app.engine.effects.breakers["flaky"].state == "closed"


async def test_a_refusal_is_an_answer_and_never_opens_the_circuit(app: Steward) -> None:
    flaky = Flaky([DataError("550 no such user")] * 8)
    use_connector(app, flaky)
    for _ in range(8):
        view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
        assert view.approval is not None
        await app.engine.decide(view.approval.id, True, "cli:shell")
    assert flaky.calls == 8
    assert app.engine.effects.breakers["flaky"].state == "closed"


async def test_a_probe_that_ends_any_other_way_is_never_stuck_half_open(app: Steward) -> None:
    clock = Clock()
    breaker = app.engine.effects.breakers["flaky"] = CircuitBreaker("flaky", 1, 30, clock)
    flaky = Flaky([TransientError("503")])
    use_connector(app, flaky)

    async def approve() -> None:
        view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
        assert view.approval is not None
        await app.engine.decide(view.approval.id, True, "cli:shell")

    await approve()
    assert breaker.state == "open"
    clock.now += 30
    flaky.failures = [OutcomeUnknown("line dropped after DATA")]  # the service's: a verdict
    await approve()
    assert flaky.calls == 2 and breaker.state == "open" and breaker.retry_in == 30
    clock.now += 30
    flaky.failures = [RuntimeError("a bug")]  # no verdict: the next call probes
    await approve()
    assert flaky.calls == 3 and breaker.state == "open" and breaker.retry_in == 0
    await approve()
    assert flaky.calls == 4 and breaker.state == "closed"


async def test_only_a_call_that_reached_the_smtp_server_closes_or_opens_its_circuit(
    tmp_path: Path,
) -> None:
    """A half-open circuit's probe that failed before any call to the server (a meeting
    passed, an email that cannot be composed) closed the circuit: the calls after it went
    to a server still down, three tries each, until it opened again."""
    clock = Clock()
    port = free_port()  # nothing listens here yet
    async for steward in open_steward(tmp_path / "home", port):
        breaker = CircuitBreaker("email", 3, 30, clock)
        steward.engine.effects.breakers["email"] = breaker
        down = await approve_onboarding(steward)
        assert down.error_class == "transient" and breaker.state == "open"

        clock.now += 30
        passed = f"{datetime.now(UTC) - timedelta(hours=1):%Y-%m-%d %H:%M}"
        invitation = {"to": "jane@acme.com", "subject": "s", "body": "b", "title": "Kick-off"}
        with pytest.raises(DataError, match="has passed"):
            await steward.engine.effects.perform(
                key=f"{down.id}:send_kickoff",
                run_id=down.id,
                step_id="send_kickoff",
                connector_name="email",
                action="send_invitation",
                params={**invitation, "start": passed},
            )
        assert breaker.state == "open" and breaker.failures == 3  # no verdict either way
        assert "the next call tries it again" in breaker.describe()

        still_down = await approve_onboarding(steward)  # the probe: the server, still down
        assert "email has failed 4 times in a row" in (still_down.error or "")
        assert breaker.state == "open" and breaker.retry_in == 30

        clock.now += 30
        inbox = Inbox()
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            assert (await approve_onboarding(steward)).status is RunStatus.SUCCEEDED
        finally:
            controller.stop()
        assert breaker.state == "closed" and len(inbox.received) == 1
