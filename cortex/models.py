"""Database tables (SQLModel) and the event life cycle.

An event's ``id`` is an autoincrementing integer: it grows with every stored
event, so it also grows per user, which is what lets ``Last-Event-ID`` resume.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class EventStatus(StrEnum):
    RECEIVED = "received"
    STORED = "stored"
    LIVE = "live"
    PUSHED = "pushed"
    QUEUED = "queued"
    ACKED = "acked"
    UNDELIVERED = "undelivered"


# The only moves an event may make (DESIGN.md section 3). ``acked`` has no way
# out, so whatever order a timeout, a retry and an ACK arrive in, it stays.
ALLOWED_FROM: dict[EventStatus, frozenset[EventStatus]] = {
    # Only an operator's re-drive takes an undelivered event back to the start.
    EventStatus.STORED: frozenset({EventStatus.UNDELIVERED}),
    EventStatus.LIVE: frozenset({EventStatus.STORED}),
    EventStatus.PUSHED: frozenset({EventStatus.STORED}),
    EventStatus.QUEUED: frozenset({EventStatus.STORED}),
    EventStatus.UNDELIVERED: frozenset(
        {EventStatus.STORED, EventStatus.LIVE, EventStatus.PUSHED, EventStatus.QUEUED}
    ),
    EventStatus.ACKED: frozenset(
        {
            EventStatus.STORED,
            EventStatus.LIVE,
            EventStatus.PUSHED,
            EventStatus.QUEUED,
            EventStatus.UNDELIVERED,
        }
    ),
}

UNACKED = tuple(s for s in EventStatus if s not in (EventStatus.ACKED,))

URGENCIES = ("low", "normal", "high", "critical")


class Event(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_user_status", "user_id", "status"),
        UniqueConstraint("user_id", "seq"),
    )

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=300)
    user_id: str = Field(index=True, max_length=200)
    # 1, 2, 3 ... per user, in the order events were stored: lets a stream hand
    # events on in order even when their deliveries finish out of order.
    seq: int
    type: str = Field(max_length=200)
    title: str = Field(sa_column=Column(Text, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    urgency: str = Field(default="normal", max_length=16)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    source: str = Field(max_length=64)
    status: str = Field(default=EventStatus.STORED, max_length=16)
    channel: str | None = Field(default=None, max_length=16)
    workflow_id: str = Field(max_length=400)
    workflow_run_id: str = Field(max_length=64)
    received_at: datetime
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    acked_at: datetime | None = None

    def to_app(self) -> dict[str, Any]:
        """The event as the app sees it (DESIGN.md section 5)."""
        return {
            "id": str(self.id),
            "type": self.type,
            "title": self.title,
            "body": self.body,
            "urgency": self.urgency,
            "data": self.data,
            "source": self.source,
            "createdAt": _iso(self.created_at),
            "status": self.status,
        }


class EventTransition(SQLModel, table=True):
    __tablename__ = "event_transitions"

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="events.id", index=True)
    status: str = Field(max_length=16)
    at: datetime = Field(default_factory=utcnow)
    detail: str | None = Field(default=None, max_length=500)


class PushToken(SQLModel, table=True):
    __tablename__ = "push_tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(index=True, max_length=200)
    token: str = Field(unique=True, max_length=200)
    platform: str = Field(max_length=16)
    device_name: str | None = Field(default=None, max_length=200)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
    deactivated_at: datetime | None = None
    deactivated_reason: str | None = Field(default=None, max_length=64)


class PushDelivery(SQLModel, table=True):
    """One push of one event to one token: the push delivery log."""

    __tablename__ = "push_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "token"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="events.id", index=True)
    user_id: str = Field(max_length=200)
    token: str = Field(max_length=200)
    # sending: written before the request, so a crash mid-send is visible;
    # ok / error: the ticket; failed: the whole request failed, nothing sent.
    status: str = Field(max_length=16)
    ticket_id: str | None = Field(default=None, max_length=100, index=True)
    error: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=500)
    receipt_status: str | None = Field(default=None, max_length=16)
    receipt_error: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class StreamHolder(SQLModel, table=True):
    """An API process that holds streams, found by its own task queue."""

    __tablename__ = "stream_holders"

    task_queue: str = Field(primary_key=True, max_length=200)
    started_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow, index=True)


class StreamConnection(SQLModel, table=True):
    __tablename__ = "stream_connections"

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(index=True, max_length=200)
    task_queue: str = Field(index=True, max_length=200)
    connected_at: datetime = Field(default_factory=utcnow)


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


class PushReservation(SQLModel, table=True):
    """Notifications a worker is about to hand to Expo, and when."""

    __tablename__ = "push_reservations"

    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)  # Unix time
    count: int
