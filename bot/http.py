"""The app's one HTTP server (aiohttp): channels mount their endpoints on it.

``steward run`` starts it when something needs it — the Telegram webhook at
``/telegram/webhook`` — at STEWARD_HTTP_HOST:STEWARD_HTTP_PORT, with ``/healthz``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A request under way at a stop gets this long to finish: one that is answered stores and
# answers in milliseconds, and a sender that has not sent its body yet sends it again.
STOP_SECONDS = 2.0


class HttpServer:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.app = web.Application()
        self.app.router.add_get("/healthz", _healthz)
        self._runner: web.AppRunner | None = None

    def add_post(self, path: str, handler: Handler) -> None:
        self.app.router.add_post(path, handler)

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=STOP_SECONDS
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # a free port was asked for: remember which one
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def started(self) -> bool:
        return self._runner is not None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})
