"""Turns a verified Composio webhook body into an event for the app.

V3 bodies carry the trigger in ``metadata``; V2 bodies name the trigger slug,
lower-cased, in ``type`` and keep the ids inside ``data``. Anything that is not
a trigger message (``composio.trigger.disabled``, an expired account...) is
acknowledged and ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

TRIGGER_MESSAGE = "composio.trigger.message"
PREVIEW_CHARS = 280


class MalformedWebhook(ValueError):
    pass


@dataclass
class TriggerEvent:
    user_id: str
    slug: str
    type: str
    title: str
    body: str
    data: dict[str, Any]


@dataclass
class Ignored:
    reason: str


def parse(payload: Any) -> TriggerEvent | Ignored:
    if not isinstance(payload, dict):
        raise MalformedWebhook("body must be a JSON object")
    kind = payload.get("type")
    if not isinstance(kind, str) or not kind:
        raise MalformedWebhook("body has no 'type'")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise MalformedWebhook("body has no 'data' object")

    if kind == TRIGGER_MESSAGE:
        metadata = payload.get("metadata")
        if not isinstance(metadata, dict):
            raise MalformedWebhook("V3 trigger message has no 'metadata' object")
        slug = metadata.get("trigger_slug")
        user_id = metadata.get("user_id")
        ids = {
            "connectedAccountId": metadata.get("connected_account_id"),
            "triggerId": metadata.get("trigger_id"),
            "logId": metadata.get("log_id"),
        }
    elif kind.startswith("composio."):
        return Ignored(f"{kind} is not a trigger message")
    elif re.fullmatch(r"[a-z0-9_]+", kind):
        # V2: the type is the trigger slug, lower-cased.
        slug = kind.upper()
        user_id = data.get("user_id")
        ids = {
            "connectedAccountId": data.get("connection_nano_id")
            or data.get("connection_id"),
            "triggerId": data.get("trigger_nano_id") or data.get("trigger_id"),
            "logId": payload.get("log_id"),
        }
    else:
        raise MalformedWebhook(f"unknown webhook type {kind!r}")

    if not isinstance(slug, str) or not re.fullmatch(r"[A-Z0-9_]{1,120}", slug):
        raise MalformedWebhook("trigger slug is missing or invalid")
    if user_id is None:
        return Ignored("trigger has no user_id")
    if not isinstance(user_id, str) or not 0 < len(user_id) <= 200:
        raise MalformedWebhook("user_id must be a non-empty string")

    kind_of_event, title, body, fields = _describe(slug, data)
    return TriggerEvent(
        user_id=user_id,
        slug=slug,
        type=kind_of_event,
        title=title,
        body=body,
        data={"triggerSlug": slug, **{k: v for k, v in ids.items() if v}, **fields},
    )


def _describe(slug: str, data: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    if slug == "GMAIL_NEW_GMAIL_MESSAGE":
        name, address = parseaddr(_text(data.get("sender")))
        sender = name or address or "someone"
        subject = _text(data.get("subject")) or "(no subject)"
        return (
            "gmail.new_message",
            f"Gmail from {sender}",
            subject,
            {
                "messageId": data.get("message_id"),
                "threadId": data.get("thread_id"),
                "sender": _text(data.get("sender")),
                "subject": subject,
                "preview": _text(data.get("message_text"))[:PREVIEW_CHARS],
            },
        )
    if slug == "SLACK_RECEIVE_MESSAGE":
        text = _text(data.get("text"))
        return (
            "slack.message",
            "Slack message",
            text[:PREVIEW_CHARS],
            {
                "channel": data.get("channel"),
                "ts": data.get("ts"),
                "user": data.get("user"),
            },
        )
    toolkit, _, rest = slug.partition("_")
    return (
        f"{toolkit.lower()}.{rest.lower() or 'event'}",
        f"{toolkit.title()}: {rest.replace('_', ' ').lower() or 'event'}",
        "",
        {"trigger": data},
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
