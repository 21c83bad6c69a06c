"""Outgoing webhooks against a real local HTTP server: keyed, signed, classified."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.app import Steward
from bot.settings import load_settings
from connectors import DataError, PermissionDenied, TransientError
from graph.effects import RetryPolicy
from tests.net import free_port

SECRET = "outgoing-secret-0123456789"
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, timeout=5)


class Target:
    """An HTTP endpoint that answers with the statuses it is told, in turn."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.calls: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text=f"answered {status}")


@pytest.fixture
async def target() -> AsyncIterator[tuple[Target, str]]:
    endpoint = Target()
    app = web.Application()
    app.router.add_post("/hook", endpoint.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield endpoint, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Steward]:
    settings = load_settings(home=tmp_path / "home", webhook_secret=SECRET)
    async with Steward.open(settings, retry=FAST_RETRY) as steward:
        yield steward


async def post(app: Steward, key: str, params: dict[str, Any]) -> dict[str, Any]:
    view = await app.engine.start(
        "onboarding", {"client": "Acme", "email": "j@acme.com", "package": "basic"}, "cli:x"
    )
    return await app.engine.effects.perform(
        key=f"{view.run.id}:{key}",
        run_id=view.run.id,
        step_id="notify",
        connector_name="webhook",
        action="post",
        params=params,
    )


async def test_a_call_carries_its_key_and_signature_and_is_made_once(
    app: Steward, target: tuple[Target, str]
) -> None:
    endpoint, url = target
    endpoint.statuses = [503, 200]  # a blip first: retried under the same key
    result = await post(app, "hook", {"url": url, "client": "Acme", "event": "onboarded"})
    assert result["status"] == 200
    (first_headers, first_body), (headers, body) = endpoint.calls
    assert json.loads(body) == {"client": "Acme", "event": "onboarded"} and first_body == body
    assert headers["Idempotency-Key"] == first_headers["Idempotency-Key"]
    assert headers["Idempotency-Key"].endswith(":hook")
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Steward-Signature"] == f"sha256={expected}"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (422, DataError),
        (302, DataError),  # not followed: the receiver never got the call
        (403, PermissionDenied),
        (500, TransientError),
        (429, TransientError),
    ],
)
async def test_each_refusal_gets_its_class(
    app: Steward, target: tuple[Target, str], status: int, error: type[Exception]
) -> None:
    endpoint, url = target
    endpoint.statuses = [status] * 5
    with pytest.raises(error, match=str(status)):
        await post(app, "hook", {"url": url})
    retried = 3 if error is TransientError else 1
    assert len(endpoint.calls) == retried


async def test_an_unreachable_target_is_transient(app: Steward) -> None:
    port = free_port()
    with pytest.raises(TransientError, match="cannot reach"):
        await post(app, "hook", {"url": f"http://127.0.0.1:{port}/nothing"})
