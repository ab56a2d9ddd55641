"""The event store: every status change goes through here, conditionally.

Status updates are ``UPDATE ... WHERE status IN (allowed sources)``, so two
racing writers (a timeout and an ACK, say) cannot move an event backwards and
``acked`` stays final without any lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cortex.models import (
    ALLOWED_FROM,
    UNACKED,
    Event,
    EventStatus,
    EventTransition,
    utcnow,
)
from cortex.shared import StatusResult, StoredEvent, StoreEventInput


def store_event(session: Session, request: StoreEventInput) -> StoredEvent:
    """Insert the event once; a repeat returns the stored row untouched."""
    existing = _by_key(session, request.event.idempotency_key)
    if existing is None:
        new = request.event
        received_at = datetime.fromisoformat(new.received_at) if new.received_at else utcnow()
        event = Event(
            idempotency_key=new.idempotency_key,
            user_id=new.user_id,
            type=new.type,
            title=new.title,
            body=new.body,
            urgency=new.urgency,
            data=new.data,
            source=new.source,
            status=EventStatus.STORED,
            workflow_id=request.workflow_id,
            workflow_run_id=request.workflow_run_id,
            received_at=received_at,
        )
        session.add(event)
        try:
            session.flush()
            session.add(
                EventTransition(
                    event_id=event.id, status=EventStatus.RECEIVED, at=received_at
                )
            )
            session.add(EventTransition(event_id=event.id, status=EventStatus.STORED))
            session.commit()
        except IntegrityError:
            # A concurrent attempt stored it first; fall through to the reread.
            session.rollback()
        existing = _by_key(session, request.event.idempotency_key)
        assert existing is not None
    return StoredEvent(
        event_id=existing.id,  # type: ignore[arg-type]
        status=existing.status,
        owned=existing.workflow_run_id == request.workflow_run_id,
        app_event=existing.to_app(),
    )


def transition(
    session: Session,
    event_id: int,
    status: EventStatus,
    *,
    channel: str | None = None,
    detail: str | None = None,
) -> StatusResult:
    """Move an event to ``status`` if the life cycle allows it from where it is."""
    now = utcnow()
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if channel is not None:
        values["channel"] = channel
    if status == EventStatus.ACKED:
        values["acked_at"] = now
    result = session.exec(  # type: ignore[call-overload]
        update(Event)
        .where(col(Event.id) == event_id)
        .where(col(Event.status).in_(ALLOWED_FROM[status]))
        .values(**values)
    )
    changed = result.rowcount == 1
    if changed:
        session.add(EventTransition(event_id=event_id, status=status, at=now, detail=detail))
    elif channel is not None:
        # The status moved on first (an ACK can beat the "live" record), but
        # which channel carried the event is still worth keeping.
        session.exec(  # type: ignore[call-overload]
            update(Event)
            .where(col(Event.id) == event_id)
            .where(col(Event.channel).is_(None))
            .values(channel=channel)
        )
    session.commit()
    current = session.get(Event, event_id)
    if current is None:
        raise LookupError(f"event {event_id} does not exist")
    session.refresh(current)
    return StatusResult(status=current.status, changed=changed)


@dataclass
class AckOutcome:
    acked: list[Event]  # newly acked or already acked: both are fine for the app
    unknown: list[str]  # not an event of this user


def ack_events(session: Session, user_id: str, event_ids: list[str]) -> AckOutcome:
    numeric = {int(i) for i in event_ids if i.isdigit()}
    own = session.exec(
        select(Event).where(col(Event.id).in_(numeric)).where(Event.user_id == user_id)
    ).all()
    found = {str(e.id) for e in own}
    for event in own:
        if event.status != EventStatus.ACKED:
            transition(session, event.id, EventStatus.ACKED, detail="app")  # type: ignore[arg-type]
    return AckOutcome(
        acked=list(own), unknown=[i for i in dict.fromkeys(event_ids) if i not in found]
    )


def list_events(
    session: Session,
    user_id: str,
    *,
    statuses: list[str] | None = None,
    after_id: int | None = None,
    before_id: int | None = None,
    limit: int = 100,
    newest_first: bool = True,
) -> list[Event]:
    query = select(Event).where(Event.user_id == user_id)
    if statuses:
        query = query.where(col(Event.status).in_(statuses))
    if after_id is not None:
        query = query.where(col(Event.id) > after_id)
    if before_id is not None:
        query = query.where(col(Event.id) < before_id)
    order = col(Event.id).desc() if newest_first else col(Event.id).asc()
    return list(session.exec(query.order_by(order).limit(limit)).all())


def unacked_after(
    session: Session, user_id: str, after_id: int | None, limit: int
) -> list[Event]:
    """Unacked events after ``after_id``, oldest first (stream replay)."""
    return list_events(
        session,
        user_id,
        statuses=list(UNACKED),
        after_id=after_id,
        limit=limit,
        newest_first=False,
    )


def event_of_user(session: Session, user_id: str, event_id: int) -> Event | None:
    event = session.get(Event, event_id)
    return event if event is not None and event.user_id == user_id else None


def _by_key(session: Session, key: str) -> Event | None:
    return session.exec(select(Event).where(Event.idempotency_key == key)).first()
