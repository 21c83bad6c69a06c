"""The app's one HTTP server (aiohttp): channels mount their endpoints on it.

``steward run`` starts it when something needs it — Slack's HTTP mode at
``/slack/events``, the Telegram webhook at ``/telegram/webhook``, incoming webhooks at
``/hooks/{source}`` — at STEWARD_HTTP_HOST:STEWARD_HTTP_PORT, with ``/healthz``.

It may face the internet with no reverse proxy in front, so it closes what a proxy
would: a connection that has not sent a request's headers within HEADERS_SECONDS (of
its start, or of its last answer), and a request whose body has not all come within
BODY_SECONDS of its headers (408). Left open, a few hundred such connections use up
the process's file descriptors. And it holds at most MOST_CONNECTIONS at once: one more
is answered 503 and closed as it comes, so that a flood of slow connections, each held
for those seconds, cannot use them up either.

A body over MOST_BYTES is answered 413 before any handler sees it, and that refusal, as
a 408's, is audited (``refused``) under the endpoint's owner, as a request whose
signature fails is: nothing of it was read, so nobody can say who sent it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from memory.ledger import storable

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Audits a request refused before it was read: its endpoint's owner (a channel), the
# reason, and where it came from (``FrontDoor.refuse_unverified``). It neither waits for
# the audit nor raises: a refusal is answered 408 or 413 at once, whatever its audit does.
Refused = Callable[[str, str, dict[str, str]], None]
# A request under way at a stop gets this long to finish: one that is answered stores and
# answers in milliseconds, and a sender that has not sent its body yet sends it again.
STOP_SECONDS = 2.0
HEADERS_SECONDS = 10.0  # an idle connection is closed as soon
BODY_SECONDS = 10.0  # a webhook's body is a few kilobytes, at most a megabyte
# Connections open at once. A one-person company's platforms and hooks use a handful; the
# process's other files (the ledger, Redis, the chat platforms' clients) keep the rest of
# the usual 1,024 file descriptors.
MOST_CONNECTIONS = 256
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)
BUSY_LOGGED_EVERY = 60.0  # seconds: a flood is logged once a minute, not per connection
MOST_BYTES = 1024**2  # of a request's body: aiohttp's own limit; a webhook's is kilobytes
TOO_LARGE = f"request body over {MOST_BYTES // 1024**2} MiB"


class CannotServe(Exception):
    """The HTTP server could not start: its port taken, say, or its host not this machine's."""


class HttpServer:
    def __init__(
        self,
        host: str,
        port: int,
        headers_seconds: float = HEADERS_SECONDS,
        body_seconds: float = BODY_SECONDS,
        most_connections: int = MOST_CONNECTIONS,
        refused: Refused | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.headers_seconds = headers_seconds
        self.body_seconds = body_seconds
        self.most_connections = most_connections
        self.refused = refused
        self.app = web.Application(middlewares=[self._body_in_time], client_max_size=MOST_BYTES)
        self.app.router.add_get("/healthz", _healthz)
        self._owners: dict[str, str] = {}  # a route's path: whose endpoint it is
        self._runner: web.AppRunner | None = None

    def add_post(self, path: str, handler: Handler, owner: str) -> None:
        """Serves ``path`` with ``handler``; ``owner`` (a channel's name) is whose the
        requests refused there are, in the audit log."""
        self.app.router.add_post(path, handler)
        self._owners[path] = owner

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=STOP_SECONDS,
            keepalive_timeout=self.headers_seconds,  # also closes one whose headers stall
            lingering_time=0,  # what is left unread once answered is a stalled or huge body
        )
        await self._runner.setup()
        site = _CappedSite(self._runner, self.host, self.port, self.most_connections)
        try:
            await site.start()
        except OSError as exc:  # told as the server's, and no other failure is
            raise CannotServe(f"cannot serve HTTP on {self.url}: {exc.strerror or exc}") from exc
        if self.port == 0:  # a free port was asked for: remember which one
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _body_in_time(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Reads the body before ``handler`` does (it reads the copy kept), for up to
        ``body_seconds``."""
        try:
            async with asyncio.timeout(self.body_seconds):
                await request.read()
        except TimeoutError:
            late = f"request body not all sent within {self.body_seconds:g} s"
            return await self._refuse(request, 408, late)
        except web.HTTPRequestEntityTooLarge:
            return await self._refuse(request, 413, TOO_LARGE)
        return await handler(request)

    async def _refuse(self, request: web.Request, status: int, reason: str) -> web.Response:
        """Answers a request refused before it was read, and closes its connection (what
        is left of its body is not read); the refusal is audited under the endpoint's
        owner."""
        log.warning("refused a request to %s: %s", request.path, reason)
        resource = request.match_info.route.resource
        owner = self._owners.get(resource.canonical if resource else "", "http")
        if self.refused is not None:
            path = storable(request.path[:200])  # a stranger's: a hook's name, say
            self.refused(owner, reason, {"path": path, "remote": request.remote or ""})
        response = web.Response(status=status, text=reason)
        response.force_close()
        return response

    @property
    def started(self) -> bool:
        return self._runner is not None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


class _CappedSite(web.BaseSite):
    """A TCP site that hands at most ``most`` connections at once to the app's server;
    one more is answered 503 and closed."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, most: int) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._most = most
        self._open = 0  # connections handed to the app's server and not lost yet
        self._busy_logged_at = -BUSY_LOGGED_EVERY

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._connection, self._host, self._port, reuse_address=True
        )

    def _connection(self) -> asyncio.BaseProtocol:
        # Counted here, not by the server's own list: the connections accepted at one
        # moment (up to the listen backlog) are all made before any of them joins it.
        server = self._runner.server
        assert server is not None
        if self._open < self._most:
            self._open += 1
            return _Counted(server(), self._lost)
        now = asyncio.get_running_loop().time()
        if now - self._busy_logged_at >= BUSY_LOGGED_EVERY:
            self._busy_logged_at = now
            log.warning("%d connections are open, the most taken: answering 503", self._most)
        return _Busy()

    def _lost(self) -> None:
        self._open -= 1


class _Counted(asyncio.Protocol):
    """The app server's protocol for one connection, counted open until it is lost."""

    def __init__(self, inner: asyncio.Protocol, lost: Callable[[], None]) -> None:
        self._inner = inner
        self._lost = lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()
        self._inner.connection_lost(exc)


class _Busy(asyncio.Protocol):
    """A connection over the most: answered 503 and closed, its request unread."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(BUSY)
        transport.close()
