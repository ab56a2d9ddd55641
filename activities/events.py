"""Event store activities, run as local activities by the delivery workflow.

They are idempotent (a local activity may run again after a worker crash):
storing is keyed by the idempotency key, status changes are conditional.
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import col, select
from temporalio import activity

from cortex import events
from cortex.db import session_for
from cortex.models import EventStatus, StreamConnection, StreamHolder, utcnow
from cortex.shared import (
    HoldersInput,
    HoldersResult,
    StatusInput,
    StatusResult,
    StoredEvent,
    StoreEventInput,
    TakeOverInput,
)


class EventActivities:
    def __init__(self, database_url: str, holder_ttl_seconds: float) -> None:
        self._database_url = database_url
        self._holder_ttl = timedelta(seconds=holder_ttl_seconds)

    @activity.defn
    def store_event(self, request: StoreEventInput) -> StoredEvent:
        with session_for(self._database_url) as session:
            stored = events.store_event(session, request)
        activity.logger.info(
            "stored event %s for user %s (owned=%s)",
            stored.event_id,
            request.event.user_id,
            stored.owned,
            extra={"event_id": stored.event_id, "user_id": request.event.user_id},
        )
        return stored

    @activity.defn
    def take_over_event(self, request: TakeOverInput) -> StoredEvent:
        with session_for(self._database_url) as session:
            stored = events.take_over(session, request)
        activity.logger.info(
            "re-drive of event %s: %s",
            request.event_id,
            "taken" if stored.owned else stored.status,
        )
        return stored

    @activity.defn
    def record_status(self, request: StatusInput) -> StatusResult:
        with session_for(self._database_url) as session:
            return events.transition(
                session,
                request.event_id,
                EventStatus(request.status),
                channel=request.channel,
                detail=request.detail,
            )

    @activity.defn
    def find_stream_holders(self, request: HoldersInput) -> HoldersResult:
        """Task queues of the API processes that hold an open stream of the user.

        A process that stopped refreshing its row is taken as dead, so its
        streams stop counting without anyone cleaning up after it.
        """
        fresh_after = utcnow() - self._holder_ttl
        with session_for(self._database_url) as session:
            rows = session.exec(
                select(StreamConnection.task_queue)
                .join(
                    StreamHolder,
                    col(StreamHolder.task_queue) == col(StreamConnection.task_queue),
                )
                .where(StreamConnection.user_id == request.user_id)
                .where(col(StreamHolder.last_seen_at) > fresh_after)
                .distinct()
            ).all()
        return HoldersResult(task_queues=sorted(rows))
