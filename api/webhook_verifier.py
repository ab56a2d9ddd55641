"""Verifies Composio's signed webhooks (the Standard Webhooks scheme).

The signature is HMAC-SHA256 over ``"{webhook-id}.{webhook-timestamp}.{raw body}"``
and arrives as one or more space-separated ``v1,<base64>`` entries. Composio's
own SDKs key the HMAC with the whole secret as UTF-8, while the Standard
Webhooks convention strips ``whsec_`` and base64-decodes the rest; we accept
either key, as DESIGN.md asks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

SIGNATURE_VERSION = "v1"


class WebhookVerificationError(Exception):
    """The request is not a genuine, fresh webhook; the message says why."""


def signing_keys(secret: str) -> list[bytes]:
    keys = [secret.encode()]
    if secret.startswith("whsec_"):
        try:
            keys.append(base64.b64decode(secret.removeprefix("whsec_"), validate=True))
        except (binascii.Error, ValueError):
            pass
    return keys


def sign(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(
    secret: str,
    *,
    webhook_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    tolerance_seconds: int = 300,
    now: float | None = None,
) -> None:
    if not webhook_id or not timestamp or not signature:
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a Unix time") from None
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too far from now")

    offered = [
        entry.removeprefix(f"{SIGNATURE_VERSION},")
        for entry in signature.split()
        if entry.startswith(f"{SIGNATURE_VERSION},")
    ]
    for key in signing_keys(secret):
        expected = sign(key, webhook_id, timestamp, body).removeprefix(
            f"{SIGNATURE_VERSION},"
        )
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return
    raise WebhookVerificationError("webhook-signature does not match")
