"""Incoming webhooks at ``/hooks/{source}``: verified, stored, then handled.

A delivery must carry ``sha256=<hex>``, the HMAC-SHA256 of its body under the source's
secret, in the source's signature header; one that does not gets 401 and an audit
event, and nothing else happens. A signed delivery is stored in the ledger's inbox
(keyed by ``X-Steward-Delivery`` when the sender gives one, else by the body's hash, so
a retried delivery is handled once) before the 200, and handled after it; what it did
goes to the operators as news.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from aiohttp import web

from bot.channel import Notify
from bot.http import HttpServer
from bot.in_order import InOrder
from graph.hooks import HookRouter, HookSource
from graph.messages import Reply
from memory.ledger import Ledger, NewAuditEvent, TakenOver, storable

log = logging.getLogger(__name__)

DELIVERY_HEADER = "X-Steward-Delivery"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class HookEndpoint:
    def __init__(
        self,
        ledger: Ledger,
        router: HookRouter,
        sources: dict[str, HookSource],
        notify: Notify,
    ) -> None:
        self.ledger = ledger
        self.router = router
        self.sources = sources
        self.notify = notify
        self.queue: InOrder[tuple[int, str, dict[str, Any]]] = InOrder("hooks", self._handle)

    def mount(self, http: HttpServer) -> None:
        http.add_post("/hooks/{source}", self.receive)

    async def queue_stored(self, own: bool = True) -> None:
        """Queues what a crash left stored, and what a worker gone left; at start (with
        ``own``) before the endpoint takes new deliveries, so that none is queued twice."""
        for name in self.sources:
            for item in await self.ledger.take_over_inbound(f"hook:{name}", own):
                self.queue.put((item.id, name, item.payload))

    async def start(self) -> None:
        """Handles deliveries, the stored ones first, as they come."""
        self.queue.start()

    async def stop(self) -> None:
        await self.queue.stop()

    async def idle(self) -> None:
        await self.queue.idle()

    async def receive(self, request: web.Request) -> web.Response:
        name = request.match_info["source"]
        source = self.sources.get(name)
        if source is None:
            return web.Response(status=404, text="no such hook")
        body = await request.read()
        given = request.headers.get(source.signature_header, "")
        expected = signature(source.secret, body)
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
            await self._audit(name, "hook.refused", {"reason": "bad or missing signature"})
            return web.Response(status=401, text="bad signature")
        try:
            payload = storable(json.loads(body))
        except (ValueError, UnicodeDecodeError, RecursionError):  # nested beyond reason
            payload = None
        if not isinstance(payload, dict):
            await self._audit(name, "hook.invalid", {"reason": "not a JSON object"})
            return web.Response(status=400, text="expected a JSON object")
        given_id = request.headers.get(DELIVERY_HEADER)  # a stray byte decodes to a surrogate
        delivery = storable(given_id) if given_id else hashlib.sha256(body).hexdigest()
        inbox_id = await self.ledger.accept_inbound(f"hook:{name}", delivery[:200], payload)
        if inbox_id is not None:
            self.queue.put((inbox_id, name, payload))
        return web.json_response({"ok": True, "duplicate": inbox_id is None})

    async def _handle(self, item: tuple[int, str, dict[str, Any]]) -> None:
        inbox_id, name, payload = item
        try:
            async with self.ledger.handling(inbox_id):
                reply = await self.router.handle(name, self.sources[name], payload)
            await self.notify(reply, None)
        except TakenOver as exc:
            log.warning("%s: the worker that took it over handles it", exc)
        except Exception as exc:
            log.exception("handling a delivery from hook %s failed", name)
            failure = f"A delivery from {name} (inbox {inbox_id}) failed: {exc}. It is kept."
            await self.notify(Reply().say(failure), None)

    async def _audit(self, name: str, kind: str, data: dict[str, Any]) -> None:
        log.warning("hook %s: %s", name, data["reason"])
        await self.ledger.audit(NewAuditEvent(f"hook:{name}", kind, name, data))
