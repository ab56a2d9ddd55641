"""Expo push client: exponent-server-sdk, adapted where it falls short.

The SDK (2.2.0) only accepts the ``ExponentPushToken[...]`` prefix, while apps
also produce ``ExpoPushToken[...]``; it does no retries and mixes transport
failures into several exception types. This module validates tokens itself,
keeps the SDK for the wire format, and sorts every failure into the two kinds
the workflow's retry policy needs: worth retrying, or not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests
from exponent_server_sdk import (
    PushClient,
    PushMessage,
    PushServerError,
    PushTicket,
)

EXPO_TOKEN = re.compile(r"^Expo(nent)?PushToken\[[A-Za-z0-9_\-]{1,190}\]$")
MAX_MESSAGES_PER_REQUEST = 100
MAX_PAYLOAD_BYTES = 4096

# A placeholder the SDK's prefix check accepts; the real token is put back
# into the payload right after the SDK has built it.
_SDK_ACCEPTED_TOKEN = "ExponentPushToken[placeholder]"


def is_expo_token(token: str) -> bool:
    return bool(EXPO_TOKEN.match(token))


class _Message(PushMessage):
    def get_payload(self) -> dict[str, Any]:
        if not is_expo_token(self.to):
            raise ValueError("invalid Expo push token")
        payload = PushMessage.get_payload(self._replace(to=_SDK_ACCEPTED_TOKEN))
        payload["to"] = self.to
        return payload


class ExpoError(Exception):
    """A whole request failed. ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, code: str, retryable: bool, status: int | None):
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.status = status


@dataclass
class Ticket:
    token: str
    ok: bool
    ticket_id: str | None
    error: str | None
    message: str | None


@dataclass
class Receipt:
    ticket_id: str
    ok: bool
    error: str | None
    message: str | None


class ExpoClient:
    def __init__(
        self, base_url: str, access_token: str | None = None, timeout: float = 15
    ):
        session = requests.Session()
        session.headers.update(
            {
                "accept": "application/json",
                "accept-encoding": "gzip, deflate",
                "content-type": "application/json",
            }
        )
        if access_token:
            session.headers["authorization"] = f"Bearer {access_token}"
        self._sdk = PushClient(
            host=base_url.rstrip("/"), session=session, timeout=timeout
        )

    def send(self, messages: Sequence[dict[str, Any]]) -> list[Ticket]:
        """Send up to 100 messages in one request; tickets come back in order."""
        if len(messages) > MAX_MESSAGES_PER_REQUEST:
            raise ValueError("at most 100 messages per Expo request")
        sdk_messages = [_to_sdk_message(m) for m in messages]
        tickets: list[PushTicket] = self._call(
            self._sdk._publish_internal, sdk_messages
        )
        return [
            Ticket(
                token=m["to"],
                ok=t.is_success(),
                ticket_id=t.id or None,
                error=(t.details or {}).get("error") if not t.is_success() else None,
                message=t.message or None,
            )
            for m, t in zip(messages, tickets, strict=True)
        ]

    def receipts(self, ticket_ids: Sequence[str]) -> list[Receipt]:
        tickets = [
            PushTicket(push_message=None, status="ok", message="", details=None, id=i)
            for i in ticket_ids
        ]
        receipts = self._call(self._sdk.check_receipts_multiple, tickets)
        return [
            Receipt(
                ticket_id=r.id,
                ok=r.is_success(),
                error=(r.details or {}).get("error") if not r.is_success() else None,
                message=r.message or None,
            )
            for r in receipts
        ]

    def _call(self, method: Any, argument: Any) -> Any:
        try:
            return method(argument)
        except PushServerError as error:
            raise _classify(error.response, error.errors) from error
        except requests.HTTPError as error:
            raise _classify(error.response, None) from error
        except (requests.ConnectionError, requests.Timeout) as error:
            raise ExpoError(
                f"Expo unreachable: {type(error).__name__}",
                code="NETWORK",
                retryable=True,
                status=None,
            ) from error


def _to_sdk_message(message: dict[str, Any]) -> _Message:
    return _Message(
        to=message["to"],
        title=message.get("title"),
        body=message.get("body"),
        data=message.get("data"),
        sound=message.get("sound"),
        ttl=message.get("ttl"),
        priority=message.get("priority"),
        channel_id=message.get("channelId"),
    )


def _classify(
    response: requests.Response | None, errors: list[dict] | None
) -> ExpoError:
    status = response.status_code if response is not None else None
    code = (errors or [{}])[0].get("code") or f"HTTP_{status}"
    detail = (errors or [{}])[0].get("message") or "Expo request failed"
    # 429 and 5xx are Expo telling us to come back later; a 200 with a body we
    # cannot read is as likely a proxy hiccup. Other 4xx will fail the same way
    # again, and credential errors need an operator.
    retryable = status is None or status == 429 or status >= 500 or status == 200
    if code in ("INVALID_CREDENTIALS", "UNAUTHORIZED") or status in (401, 403):
        code, retryable = "InvalidCredentials", False
    return ExpoError(f"{code}: {detail}", code=code, retryable=retryable, status=status)
