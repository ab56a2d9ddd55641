"""Names and payload types shared by the API, the workflows and the activities.

Every workflow and activity takes and returns one dataclass, so fields can be
added without breaking workflows already running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from temporalio.common import SearchAttributeKey

DELIVERY_WORKFLOW = "DeliveryWorkflow"
ACK_SIGNAL = "ack"

# Custom search attributes, registered when the embedded server starts.
SA_USER_ID = SearchAttributeKey.for_keyword("CortexUserId")
SA_EVENT_TYPE = SearchAttributeKey.for_keyword("CortexEventType")
SA_URGENCY = SearchAttributeKey.for_keyword("CortexUrgency")
SA_STATUS = SearchAttributeKey.for_keyword("CortexDeliveryStatus")
SA_CHANNEL = SearchAttributeKey.for_keyword("CortexChannel")
SEARCH_ATTRIBUTES = (SA_USER_ID, SA_EVENT_TYPE, SA_URGENCY, SA_STATUS, SA_CHANNEL)


def delivery_workflow_id(idempotency_key: str) -> str:
    return f"event-{idempotency_key}"


@dataclass
class NewEvent:
    """An event as a producer hands it in, before it is stored."""

    idempotency_key: str
    user_id: str
    type: str
    title: str
    body: str
    source: str
    urgency: str = "normal"
    data: dict[str, Any] = field(default_factory=dict)
    received_at: str = ""  # ISO time the API accepted it


@dataclass
class Redrive:
    """An operator's order to deliver a stored, undelivered event again."""

    event_id: int
    reason: str = ""


@dataclass
class DeliveryInput:
    event: NewEvent
    ack_timeout_seconds: float
    receipt_delay_seconds: float
    redrive: Redrive | None = None


@dataclass
class DeliveryResult:
    event_id: int
    status: str
    channel: str | None
    streams: int = 0
    pushes_ok: int = 0


@dataclass
class StoreEventInput:
    event: NewEvent
    workflow_id: str
    workflow_run_id: str


@dataclass
class TakeOverInput:
    event_id: int
    workflow_id: str
    workflow_run_id: str
    reason: str


@dataclass
class StoredEvent:
    event_id: int
    status: str
    # False when another delivery already owns this idempotency key.
    owned: bool
    app_event: dict[str, Any]
    seq: int | None = None


@dataclass
class StatusInput:
    event_id: int
    status: str
    channel: str | None = None
    detail: str | None = None


@dataclass
class StatusResult:
    status: str  # the event's status after the attempt, which may be ``acked``
    changed: bool


@dataclass
class HoldersInput:
    user_id: str


@dataclass
class HoldersResult:
    task_queues: list[str]


@dataclass
class StreamDeliveryInput:
    user_id: str
    app_event: dict[str, Any]
    seq: int | None = None
    received_at: str | None = None  # when the API accepted it, for the latency metric


@dataclass
class StreamDeliveryResult:
    streams: int


@dataclass
class PushInput:
    event_id: int


@dataclass
class PushResult:
    ok: int
    errors: int
    ticket_ids: list[str]
    no_tokens: bool
    # Sends whose outcome a crash hid: possibly delivered, never repeated.
    unknown: int = 0


@dataclass
class ReceiptsInput:
    event_id: int
    ticket_ids: list[str]
    delay_seconds: float


@dataclass
class ReceiptsResult:
    checked: int
    errors: int
    tokens_deactivated: int
