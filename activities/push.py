"""Push activities: send an event to every active Expo token, check receipts.

A row in the push delivery log is written *before* each request (``sending``)
and settled after it. A retry skips every token that already has a settled or
unsettled row, so a crash between Expo accepting a push and us recording it
costs at most a missing push, never a second one.
"""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.expo_client import (
    MAX_MESSAGES_PER_REQUEST,
    MAX_PAYLOAD_BYTES,
    ExpoClient,
    ExpoError,
    Ticket,
)
from activities.push_rate import PushRateLimiter
from cortex.db import session_for
from cortex.models import Event, PushDelivery, PushToken, utcnow
from cortex.settings import DEFAULT_PUSH_URGENCY, PushOptions
from cortex.shared import PushInput, PushResult, ReceiptsInput, ReceiptsResult

# Rows that block another send to the same token for the same event. A row
# still "sending" when a new attempt starts is one whose attempt died mid-request:
# Expo may have accepted it, so it is marked "unknown" and never sent again.
TRIED = ("sending", "unknown", "ok", "error")
RETRYABLE_ERROR_TYPE = "ExpoUnavailable"
PERMANENT_ERROR_TYPE = "ExpoRequestRejected"


def build_message(
    event: Event, token: str, urgency: dict[str, PushOptions]
) -> dict[str, Any]:
    options = urgency.get(event.urgency, urgency["normal"])
    message: dict[str, Any] = {
        "to": token,
        "title": event.title,
        "body": event.body,
        # The event id lets the app drop a push for an event it already has.
        "data": {
            "eventId": str(event.id),
            "type": event.type,
            "urgency": event.urgency,
        },
        "priority": options.priority,
        "channelId": options.channel_id,
        "ttl": options.ttl,
    }
    if options.sound:
        message["sound"] = options.sound
    return _fit_payload(message)


def _fit_payload(message: dict[str, Any]) -> dict[str, Any]:
    """Trim the body (then the title) until the message fits Expo's limit."""
    for field in ("body", "title"):
        overflow = _size(message) - MAX_PAYLOAD_BYTES
        if overflow <= 0:
            break
        text = message[field]
        encoded = text.encode()
        keep = max(0, len(encoded) - overflow - len("…".encode()))
        message[field] = encoded[:keep].decode(errors="ignore") + "…"
    return message


def _size(message: dict[str, Any]) -> int:
    return len(json.dumps(message, ensure_ascii=False).encode())


class PushActivities:
    def __init__(
        self,
        database_url: str,
        expo: ExpoClient,
        limiter: PushRateLimiter,
        urgency: dict[str, PushOptions] = DEFAULT_PUSH_URGENCY,
    ) -> None:
        self._database_url = database_url
        self._expo = expo
        self._limiter = limiter
        self._urgency = urgency

    @activity.defn
    def send_push(self, request: PushInput) -> PushResult:
        with session_for(self._database_url) as session:
            event = session.get(Event, request.event_id)
            if event is None:
                raise ApplicationError(
                    f"event {request.event_id} not found",
                    type="EventNotFound",
                    non_retryable=True,
                )
            pending = self._claim_tokens(session, event)
            for start in range(0, len(pending), MAX_MESSAGES_PER_REQUEST):
                chunk = pending[start : start + MAX_MESSAGES_PER_REQUEST]
                activity.heartbeat(start)
                self._limiter.acquire(len(chunk), on_wait=activity.heartbeat)
                self._send_chunk(session, event, chunk)
            return self._summary(session, event)

    def _claim_tokens(self, session: Session, event: Event) -> list[str]:
        """Write a ``sending`` row for each token that has not been tried yet."""
        tokens = session.exec(
            select(PushToken.token)
            .where(PushToken.user_id == event.user_id)
            .where(col(PushToken.active).is_(True))
            .order_by(col(PushToken.id))
        ).all()
        rows = {
            row.token: row
            for row in session.exec(
                select(PushDelivery).where(PushDelivery.event_id == event.id)
            ).all()
        }
        pending = []
        for token in tokens:
            row = rows.get(token)
            if row is not None and row.status == "sending":
                row.status, row.updated_at = "unknown", utcnow()
                session.add(row)
                activity.logger.warning(
                    "event %s: an earlier attempt died while pushing; not sending again",
                    event.id,
                )
            if row is not None and row.status in TRIED:
                continue
            if row is None:
                row = PushDelivery(
                    event_id=event.id,
                    user_id=event.user_id,
                    token=token,
                    status="sending",
                )  # type: ignore[arg-type]
            row.status, row.updated_at = "sending", utcnow()
            session.add(row)
            pending.append(token)
        session.commit()
        return pending

    def _send_chunk(self, session: Session, event: Event, tokens: list[str]) -> None:
        messages = [build_message(event, token, self._urgency) for token in tokens]
        try:
            tickets = self._expo.send(messages)
        except ExpoError as error:
            # The whole request failed, so Expo took none of it: free the
            # tokens for the next attempt.
            self._settle_failed(session, event, tokens, error)
            log = activity.logger.warning if error.retryable else activity.logger.error
            log("event %s: Expo refused the request: %s", event.id, error)
            raise ApplicationError(
                str(error),
                type=RETRYABLE_ERROR_TYPE if error.retryable else PERMANENT_ERROR_TYPE,
                non_retryable=not error.retryable,
            ) from error
        for ticket in tickets:
            self._settle_ticket(session, event, ticket)
        session.commit()
        activity.logger.info(
            "event %s pushed to %d tokens (%d ok)",
            event.id,
            len(tickets),
            sum(t.ok for t in tickets),
            extra={"event_id": event.id, "user_id": event.user_id},
        )

    def _settle_failed(
        self, session: Session, event: Event, tokens: list[str], error: ExpoError
    ) -> None:
        for row in session.exec(
            select(PushDelivery)
            .where(PushDelivery.event_id == event.id)
            .where(col(PushDelivery.token).in_(tokens))
        ).all():
            row.status, row.error, row.updated_at = "failed", error.code, utcnow()
            row.message = str(error)[:500]
            session.add(row)
        session.commit()

    def _settle_ticket(self, session: Session, event: Event, ticket: Ticket) -> None:
        row = session.exec(
            select(PushDelivery)
            .where(PushDelivery.event_id == event.id)
            .where(PushDelivery.token == ticket.token)
        ).one()
        row.status = "ok" if ticket.ok else "error"
        row.ticket_id, row.error = ticket.ticket_id, ticket.error
        row.message = (ticket.message or "")[:500] or None
        row.updated_at = utcnow()
        session.add(row)
        if ticket.error == "DeviceNotRegistered":
            deactivate_token(session, ticket.token, "DeviceNotRegistered")

    def _summary(self, session: Session, event: Event) -> PushResult:
        rows = session.exec(
            select(PushDelivery).where(PushDelivery.event_id == event.id)
        ).all()
        ok = [r for r in rows if r.status == "ok"]
        return PushResult(
            ok=len(ok),
            errors=sum(r.status == "error" for r in rows),
            ticket_ids=[r.ticket_id for r in ok if r.ticket_id],
            no_tokens=not rows,
            unknown=sum(r.status == "unknown" for r in rows),
        )

    @activity.defn
    def check_receipts(self, request: ReceiptsInput) -> ReceiptsResult:
        try:
            receipts = self._expo.receipts(request.ticket_ids)
        except ExpoError as error:
            raise ApplicationError(
                str(error),
                type=RETRYABLE_ERROR_TYPE if error.retryable else PERMANENT_ERROR_TYPE,
                non_retryable=not error.retryable,
            ) from error
        deactivated = 0
        with session_for(self._database_url) as session:
            for receipt in receipts:
                row = session.exec(
                    select(PushDelivery).where(
                        PushDelivery.ticket_id == receipt.ticket_id
                    )
                ).first()
                if row is None:
                    continue
                row.receipt_status = "ok" if receipt.ok else "error"
                row.receipt_error = receipt.error
                row.updated_at = utcnow()
                session.add(row)
                if receipt.error == "DeviceNotRegistered":
                    deactivated += deactivate_token(
                        session, row.token, "DeviceNotRegistered"
                    )
            session.commit()
        return ReceiptsResult(
            checked=len(receipts),
            errors=sum(not r.ok for r in receipts),
            tokens_deactivated=deactivated,
        )


def deactivate_token(session: Session, token: str, reason: str) -> int:
    row = session.exec(select(PushToken).where(PushToken.token == token)).first()
    if row is None or not row.active:
        return 0
    row.active, row.deactivated_at, row.deactivated_reason = False, utcnow(), reason
    session.add(row)
    return 1
