"""Incoming webhooks at ``/hooks/{source}``: verified, stored, then handled.

A delivery must carry ``sha256=<hex>``, the HMAC-SHA256 of its body under the source's
secret, in the source's signature header; one that does not gets 401 and an audit
event (one a minute per address, as for a chat platform's unverified requests), and
nothing else happens. A name no source has gets the same 401, after the same work, so
that a stranger cannot find the names that exist; the log and the audit name it. A
signed delivery is stored in the ledger's inbox, keyed by the hash of its body, before
the 200, and handled after it; what it did goes to the operators as news. The body is
all that is signed, so it is all that tells one delivery from another: a retry, or a
captured delivery sent again under any header, is handled once. An event is offered to
each run it matches once (``HookRouter.handle``): a delivery some of whose runs could
not take it stays stored and is handled again after RETRY_SECONDS, or at the next start
after a crash, reaching those runs alone; past the last try, its body sent again does.
A delivery that starts a process and whose start failed before it was recorded is tried
again alike, and started once.

The body must be a JSON object that a run can keep as it is: numbers finite and whole
ones within 64 bits, nested no deeper than MAX_DEPTH; anything else gets 400 and an
audit event.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import secrets
from typing import Any, NamedTuple

from aiohttp import web

from bot.channel import Notify
from bot.http import HttpServer
from bot.in_order import InOrder
from graph.front_door import FrontDoor
from graph.hooks import SIGNATURE_HEADER, Handled, HookRouter, HookSource, hook_channel
from graph.messages import Reply, cut
from memory.ledger import Handling, NewAuditEvent, TakenOver, cause, storable

log = logging.getLogger(__name__)

# A delivery some of whose runs could not take its event is offered to them again after
# each of these seconds in turn: a moment's failure (the database restarting, a lock)
# passes within the first, an outage within the last. Then it is set aside as failed.
RETRY_SECONDS = (1.0, 5.0, 30.0, 120.0, 600.0)
MAX_DEPTH = 32  # levels of objects and lists in a delivery; a form or a payment has 3 or 4
# The channel a request to a hook nobody configured is refused on, in the audit log; not
# the name it gave, which a stranger may vary to flood it.
NO_SUCH_HOOK = "hooks"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Unfit(ValueError):
    """A signed body a run cannot keep as it is."""


def parse_delivery(body: bytes) -> dict[str, Any]:
    """The JSON object a delivery carries, as the ledger stores it; ``Unfit`` says why
    not (not JSON, not an object, a number no JSON store holds, nested too deeply)."""
    try:
        payload = json.loads(
            body, parse_constant=_no_constant, parse_float=_finite, parse_int=_within_64_bits
        )
    except RecursionError:
        raise Unfit(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # UnicodeDecodeError too
        raise Unfit(str(exc) if isinstance(exc, Unfit) else "not JSON") from None
    if not isinstance(payload, dict):
        raise Unfit("not a JSON object")
    if _depth(payload) > MAX_DEPTH:
        raise Unfit(f"nested deeper than {MAX_DEPTH} levels")
    return storable(payload)


def _no_constant(name: str) -> Any:
    raise Unfit(f"{name} is no number JSON stores")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise Unfit(f"{text[:20]} is too large a number")
    return number


def _within_64_bits(text: str) -> int:
    number = int(text)
    if not -(2**63) <= number < 2**64:  # what a run's checkpoint keeps
        raise Unfit(f"{text[:20]}… is too large a number")
    return number


def _depth(value: Any) -> int:
    """Levels of objects and lists in ``value``, counted without recursion."""
    deepest, waiting = 0, [(value, 1)]
    while waiting:
        item, depth = waiting.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:  # one level past the most is enough to know
                waiting.extend((child, depth + 1) for child in item)
    return deepest


class Queued(NamedTuple):
    """A stored delivery waiting for its turn, and how often it was tried before."""

    inbox_id: int
    name: str
    payload: dict[str, Any]
    tries: int = 0


class HookEndpoint:
    def __init__(
        self,
        door: FrontDoor,
        router: HookRouter,
        sources: dict[str, HookSource],
        notify: Notify,
    ) -> None:
        self.door = door
        self.ledger = door.ledger
        self.router = router
        self.sources = sources
        self.notify = notify
        self.nobodys_secret = secrets.token_hex(32)  # what a name no source has is checked by
        self.queue: InOrder[Queued] = InOrder("hooks", self._handle)
        self._retries: dict[int, asyncio.TimerHandle] = {}  # by inbox id

    def mount(self, http: HttpServer) -> None:
        http.add_post("/hooks/{source}", self.receive, NO_SUCH_HOOK)

    async def queue_stored(self, own: bool = True) -> None:
        """Queues what a crash left stored, and what a worker gone left; at start (with
        ``own``) before the endpoint takes new deliveries, so that none is queued twice."""
        for name in self.sources:
            for item in await self.ledger.take_over_inbound(hook_channel(name), own):
                if item.id not in self._retries:  # already to be tried again
                    self.queue.put(Queued(item.id, name, item.payload))

    async def start(self) -> None:
        """Handles deliveries, the stored ones first, as they come."""
        self.queue.start()

    async def stop(self, drain_seconds: float = 0.0) -> None:
        """Handles what is queued for up to ``drain_seconds``; the rest stays stored."""
        for handle in self._retries.values():  # stored: tried at the next start
            handle.cancel()
        self._retries.clear()
        await self.queue.stop(drain_seconds)

    async def idle(self) -> None:
        await self.queue.idle()

    async def receive(self, request: web.Request) -> web.Response:
        name = request.match_info["source"]
        source = self.sources.get(name)
        body = await request.read()
        # A name no source has is checked as a source's signature is, against a secret
        # nobody holds, and refused alike: a stranger cannot tell which names exist.
        header = source.signature_header if source is not None else SIGNATURE_HEADER
        given = request.headers.get(header, "")
        expected = signature(source.secret if source is not None else self.nobodys_secret, body)
        signed = hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())
        if source is None or not signed:
            return self._refuse_unsigned(name, source is not None, request.remote or "")
        try:
            payload = parse_delivery(body)
        except Unfit as exc:
            self._audit(name, "hook.invalid", {"reason": str(exc)})
            return web.Response(status=400, text=f"expected a JSON object: {exc}")
        delivery = hashlib.sha256(body).hexdigest()
        inbox_id = await self.ledger.accept_inbound(hook_channel(name), delivery, payload)
        if inbox_id is None:  # offered, or started, in vain before?
            inbox_id = await self.ledger.take_up_failed_inbound(hook_channel(name), delivery)
        if inbox_id is not None:
            self.queue.put(Queued(inbox_id, name, payload))
        return web.json_response({"ok": True, "duplicate": inbox_id is None})

    def _refuse_unsigned(self, name: str, known: bool, remote: str) -> web.Response:
        """The one answer to a delivery without a source's signature, whether the source
        exists or not; the log and the audit say which."""
        if known:
            log.warning("hook %s: bad or missing signature", name)
            self.door.refuse_unverified(
                hook_channel(name), "bad or missing signature", {"remote": remote}
            )
        else:
            shown = storable(repr(name[:40]))
            log.warning("hook %s: no such hook", shown)
            self.door.refuse_unverified(
                NO_SUCH_HOOK, "no such hook", {"remote": remote, "hook": shown}
            )
        return web.Response(status=401, text="bad signature")

    async def _handle(self, item: Queued) -> None:
        source = self.sources[item.name]
        if source.start is not None:
            await self._start(item)
        else:
            await self._offer(item)

    async def _start(self, item: Queued) -> None:
        """A delivery that starts a process: done with the run's start, in its first
        write. One whose start failed before it was recorded (the ledger locked or away)
        stays stored, and is handled again after RETRY_SECONDS (a crash leaves it stored
        too); past the last try it is set aside as failed, and the same body sent again
        takes it up again."""
        last = item.tries >= len(RETRY_SECONDS)
        handling = Handling()
        try:
            async with self.ledger.handling(item.inbox_id, "failed" if last else None) as handling:
                handled = await self.router.handle(item.name, self.sources[item.name], item.payload)
            await self.notify(handled.reply, None)
        except TakenOver as exc:
            log.warning("%s: the worker that took it over handles it", exc)
        except Exception as exc:
            log.exception("handling a delivery from hook %s failed", item.name)
            failure = f"A delivery from {item.name} failed: {cut(cause(exc), 200)}."
            if handling.marked == "done":  # after the run's start: it goes on as runs do
                failure += f" Its data is item {item.inbox_id} of the ledger's inbox."
            elif not last:
                self._retry_later(item._replace(tries=item.tries + 1))
                if item.tries:  # told at the first try, and at the last
                    return
                failure += (
                    f" It is logged; steward tries to start it again in {RETRY_SECONDS[0]:g} s."
                )
            else:
                tried = "once" if item.tries == 0 else f"{item.tries + 1} times"
                failure += f" Tried {tried}, it is tried no more"
                failure += (
                    "; the same body sent again (a retry by its sender) starts it."
                    if handling.marked == "failed"
                    else ": it stays stored, and is tried again when steward next starts."
                )
            await self.notify(Reply().say(failure), None)

    async def _offer(self, item: Queued) -> None:
        """A delivery that brings an event: done once every run it matches was offered
        it, each in the offer's own transaction. Until then it stays stored, and is
        handled again after RETRY_SECONDS, reaching the runs it missed and no other (a
        crash leaves it stored too); past the last try it is set aside as failed, and
        the same body sent again takes it up again."""
        last = item.tries >= len(RETRY_SECONDS)
        try:
            handled = await self.router.handle(
                item.name, self.sources[item.name], item.payload, item.inbox_id
            )
        except TakenOver as exc:
            log.warning("%s: the worker that took it over handles it", exc)
            return
        except Exception as exc:
            log.exception("handling a delivery from hook %s failed", item.name)
            failed = f"A delivery from {item.name} failed: {cut(str(exc), 200)}."
            handled = Handled(Reply(), (failed,))
        reply = handled.reply
        if handled.missed and (item.tries == 0 or last):
            for line in handled.missed:
                reply.say(line)
            reply.say(self._next_for(item, last))
        try:
            if not handled.missed:
                await self.ledger.finish_held_inbound(item.inbox_id)
            elif last:
                await self.ledger.finish_held_inbound(item.inbox_id, "failed")
            else:
                self._retry_later(item._replace(tries=item.tries + 1))
        except TakenOver as exc:
            log.warning("%s: the worker that took it over handles the rest", exc)
        except Exception:  # the ledger away: a later try offers nothing twice, and ends it
            log.exception("could not note delivery %s from hook %s", item.inbox_id, item.name)
            if not last:
                self._retry_later(item._replace(tries=item.tries + 1))
        if reply.items:
            await self.notify(reply, None)

    def _next_for(self, item: Queued, last: bool) -> str:
        """What happens to a delivery not all of whose runs could take it."""
        if last:
            tried = "once" if item.tries == 0 else f"{item.tries + 1} times"
            return (
                f"Tried {tried}, it is tried no more; its data is item "
                f"{item.inbox_id} of the ledger's inbox. The same body sent again (a retry by "
                "its sender) offers it to the runs that did not take it, and to no other."
            )
        return (
            f"It is logged; steward offers it again in {RETRY_SECONDS[item.tries]:g} s, "
            "to the runs that did not take it, and to no other."
        )

    def _retry_later(self, item: Queued) -> None:
        delay = RETRY_SECONDS[item.tries - 1]
        handle = asyncio.get_running_loop().call_later(delay, self._retry_now, item)
        self._retries[item.inbox_id] = handle

    def _retry_now(self, item: Queued) -> None:
        del self._retries[item.inbox_id]
        self.queue.put(item)

    def _audit(self, name: str, kind: str, data: dict[str, Any]) -> None:
        """Logs a delivery refused, and audits it without waiting (never raising): its
        sender is answered at once, whatever the ledger does."""
        log.warning("hook %s: %s", name, data["reason"])
        event = NewAuditEvent(hook_channel(name), kind, name, data)
        self.door.audit_later(event, f"a delivery from hook {name} refused ({kind})")
