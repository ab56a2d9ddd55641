"""The event store: every status change goes through here, conditionally.

Status updates are ``UPDATE ... WHERE status IN (allowed sources)``, so two
racing writers (a timeout and an ACK, say) cannot move an event backwards and
``acked`` stays final without any lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
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
from cortex.shared import StatusResult, StoredEvent, StoreEventInput, TakeOverInput


def store_event(session: Session, request: StoreEventInput) -> StoredEvent:
    """Insert the event once; a repeat returns the stored row untouched.

    Each event also gets the next number in its user's sequence. Two events of
    one user stored at once race for the same number; the loser of the unique
    constraint takes the next one.
    """
    for _ in range(SEQ_ATTEMPTS):
        existing = _by_key(session, request.event.idempotency_key)
        if existing is not None:
            return _stored(existing, request)
        event = _new_event(request, seq=_next_seq(session, request.event.user_id))
        session.add(event)
        try:
            session.flush()
            session.add(
                EventTransition(
                    event_id=event.id, status=EventStatus.RECEIVED, at=event.received_at
                )
            )
            session.add(EventTransition(event_id=event.id, status=EventStatus.STORED))
            session.commit()
            return _stored(event, request)
        except IntegrityError:
            # Someone else took the key (a concurrent attempt) or the number.
            session.rollback()
    raise RuntimeError(f"could not store event {request.event.idempotency_key}")


SEQ_ATTEMPTS = 20


def _new_event(request: StoreEventInput, seq: int) -> Event:
    new = request.event
    return Event(
        idempotency_key=new.idempotency_key,
        user_id=new.user_id,
        seq=seq,
        type=new.type,
        title=new.title,
        body=new.body,
        urgency=new.urgency,
        data=new.data,
        source=new.source,
        status=EventStatus.STORED,
        workflow_id=request.workflow_id,
        workflow_run_id=request.workflow_run_id,
        received_at=datetime.fromisoformat(new.received_at)
        if new.received_at
        else utcnow(),
    )


def _next_seq(session: Session, user_id: str) -> int:
    return (last_seq(session, user_id) or 0) + 1


def last_seq(session: Session, user_id: str) -> int | None:
    return session.exec(
        select(func.max(Event.seq)).where(Event.user_id == user_id)
    ).one()


def _stored(event: Event, request: StoreEventInput) -> StoredEvent:
    return StoredEvent(
        event_id=event.id,  # type: ignore[arg-type]
        status=event.status,
        owned=event.workflow_run_id == request.workflow_run_id,
        app_event=event.to_app(),
        seq=event.seq,
    )


def take_over(session: Session, request: TakeOverInput) -> StoredEvent:
    """Hand an undelivered event to a re-drive workflow: back to ``stored``,
    owned by the new run. Anything but ``undelivered`` (an ACK came first)
    leaves it alone and the re-drive ends."""
    moved = transition(
        session,
        request.event_id,
        EventStatus.STORED,
        detail=f"re-drive: {request.reason}"[:500],
    )
    if moved.changed:
        session.exec(  # type: ignore[call-overload]
            update(Event)
            .where(col(Event.id) == request.event_id)
            .values(
                workflow_id=request.workflow_id, workflow_run_id=request.workflow_run_id
            )
        )
        session.commit()
    event = session.get(Event, request.event_id)
    assert event is not None
    session.refresh(event)
    return StoredEvent(
        event_id=request.event_id,
        status=event.status,
        owned=moved.changed,
        app_event=event.to_app(),
        seq=event.seq,
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
        session.add(
            EventTransition(event_id=event_id, status=status, at=now, detail=detail)
        )
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
    newly_acked: list[Event] = field(default_factory=list)


def ack_events(session: Session, user_id: str, event_ids: list[str]) -> AckOutcome:
    numeric = {int(i) for i in event_ids if i.isdigit()}
    own = session.exec(
        select(Event)
        .where(col(Event.id).in_(numeric))
        .where(Event.user_id == user_id)
        .order_by(col(Event.id))
    ).all()
    found = {str(e.id) for e in own}
    newly = []
    for event in own:
        if event.status != EventStatus.ACKED:
            assert event.id is not None
            if transition(session, event.id, EventStatus.ACKED, detail="app").changed:
                session.refresh(event)
                newly.append(event)
    return AckOutcome(
        acked=list(own),
        unknown=[i for i in dict.fromkeys(event_ids) if i not in found],
        newly_acked=newly,
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
    session: Session, user_id: str, after_seq: int | None, limit: int
) -> list[Event]:
    """Unacked events after the user's ``after_seq``, in order (stream replay)."""
    query = (
        select(Event)
        .where(Event.user_id == user_id)
        .where(col(Event.status).in_(UNACKED))
        .order_by(col(Event.seq))
        .limit(limit)
    )
    if after_seq is not None:
        query = query.where(col(Event.seq) > after_seq)
    return list(session.exec(query).all())


def unacked_with_seqs(session: Session, user_id: str, seqs: range) -> list[Event]:
    return list(
        session.exec(
            select(Event)
            .where(Event.user_id == user_id)
            .where(col(Event.seq) >= seqs.start, col(Event.seq) < seqs.stop)
            .where(col(Event.status).in_(UNACKED))
        ).all()
    )


def event_of_user(session: Session, user_id: str, event_id: int) -> Event | None:
    event = session.get(Event, event_id)
    return event if event is not None and event.user_id == user_id else None


def _by_key(session: Session, key: str) -> Event | None:
    return session.exec(select(Event).where(Event.idempotency_key == key)).first()
