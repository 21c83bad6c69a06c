"""Outgoing webhooks (httpx): a JSON POST carrying the step's idempotency key.

Every call has an ``Idempotency-Key`` header (the step's key), so a receiver that
honours it acts once however often a retry delivers the call: this connector may be
retried even when a call's outcome is unknown. With ``STEWARD_WEBHOOK_SECRET`` set,
``X-Steward-Signature: sha256=<hex>`` signs the body (HMAC-SHA256), the same scheme
steward's own incoming webhooks check.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from connectors.base import DataError, PermissionDenied, TransientError, validated


class PostWebhook(BaseModel):
    """``url``, and every other parameter becomes a field of the JSON body."""

    model_config = ConfigDict(extra="allow")

    url: str = Field(pattern=r"^https?://\S+$")


class WebhookConnector:
    name = "webhook"
    actions = frozenset({"post"})
    idempotent = True  # the receiver dedups by Idempotency-Key
    schemas: ClassVar[Mapping[str, type[BaseModel]]] = {"post": PostWebhook}

    def __init__(self, secret: str | None = None, timeout: float = 15.0) -> None:
        self.secret = secret
        self.timeout = timeout

    async def perform(self, action: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        if action not in self.actions:
            raise DataError(f"webhook cannot {action!r}; it can post", reached=False)
        call = validated(PostWebhook, action, params)
        body = json.dumps(call.model_extra or {}, sort_keys=True, default=str).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        if self.secret:
            digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Steward-Signature"] = f"sha256={digest}"
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(call.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TransientError(f"cannot reach {call.url}: {exc!r}") from None
        status = response.status_code
        text = response.text[:500]
        if status in (401, 403):
            raise PermissionDenied(f"{call.url} refused steward ({status}): {text}")
        if status == 429 or status >= 500:
            raise TransientError(f"{call.url} answered {status}: {text}")
        if status >= 300:  # a redirect is not followed: the call was not received
            raise DataError(f"{call.url} rejected the call ({status}): {text}")
        return {"status": status, "body": text}
