"""``GET /v3/realtime/stream``: the user's events over Server-Sent Events.

Frame order on a connect: ``connected`` (with a ``retry:`` hint), then the
replay of unacked events after ``Last-Event-ID`` (or ``resync`` when the
server cannot vouch for the gap), then live events, each at most once per
stream. Heartbeats are SSE comments.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.auth import AppSettings, CurrentUser, StreamUser, issue_stream_ticket
from api.metrics import WEBHOOK_TO_STREAM
from api.stream_hub import Offer, Stream, StreamHub, StreamLimitReached
from cortex import events
from cortex.db import session_for
from cortex.models import Event, utcnow
from cortex.settings import Settings

router = APIRouter()

RETRY_MILLISECONDS = 3000
RETRY_AFTER_SECONDS = 30
STREAM_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: pass each frame on at once
}


def event_frame(app_event: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(
        data=json.dumps(app_event, separators=(",", ":")),
        event=app_event["type"],
        id=app_event["id"],
    )


@router.post("/v3/realtime/ticket")
def stream_ticket(user: CurrentUser, settings: AppSettings) -> dict[str, Any]:
    """A short-lived ticket for ``?ticket=`` on the stream, for browsers."""
    return {
        "ticket": issue_stream_ticket(settings, user),
        "expiresIn": settings.stream_ticket_seconds,
    }


@router.get("/v3/realtime/stream")
async def stream(
    request: Request,
    user: StreamUser,
    settings: AppSettings,
    last_event_id_header: Annotated[str | None, Header(alias="last-event-id")] = None,
    last_event_id_query: Annotated[
        str | None, Query(alias="lastEventId", max_length=40)
    ] = None,
) -> EventSourceResponse:
    hub: StreamHub = request.app.state.hub
    resume_from = last_event_id_header or last_event_id_query
    try:
        stream = hub.reserve(user)
    except StreamLimitReached as limit:
        # The app falls back to push until it retries ("shed load to push-only").
        raise HTTPException(
            429, detail=str(limit), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        ) from None
    return EventSourceResponse(
        _frames(hub, stream, settings, resume_from),
        headers=STREAM_HEADERS,
        ping=settings.heartbeat_seconds,
        ping_message_factory=lambda: ServerSentEvent(comment="heartbeat"),
        send_timeout=settings.stream_send_timeout_seconds,
    )


async def _frames(
    hub: StreamHub, stream: Stream, settings: Settings, resume_from: str | None
) -> AsyncIterator[ServerSentEvent]:
    try:
        await hub.register(stream)
        yield ServerSentEvent(
            data=json.dumps(
                {
                    "connectionId": stream.id,
                    "heartbeatSeconds": settings.heartbeat_seconds,
                }
            ),
            event="connected",
            retry=RETRY_MILLISECONDS,
        )
        replay, resync_reason, stream.last_seq = await asyncio.to_thread(
            _replay, settings, stream.user_id, resume_from
        )
        if resync_reason is not None:
            yield ServerSentEvent(
                data=json.dumps({"reason": resync_reason}), event="resync"
            )
        for event in replay:
            app_event = event.to_app()
            if stream.should_send(app_event["id"]):
                yield event_frame(app_event)
                stream.mark_sent(app_event["id"])
        gap_filler = functools.partial(_unacked_by_seq, settings)
        while True:
            for offer in await stream.next_in_order(
                settings.stream_reorder_seconds, gap_filler
            ):
                event_id = offer.app_event["id"]
                if stream.should_send(event_id):
                    yield event_frame(offer.app_event)
                    _observe_latency(offer)
                stream.mark_sent(event_id)
    finally:
        # The response's task group is being cancelled (the client left or the
        # server stops); shield the unregistering, or the registry would keep
        # listing a stream that no longer exists.
        with anyio.CancelScope(shield=True):
            await hub.close(stream)


def _replay(
    settings: Settings, user_id: str, resume_from: str | None
) -> tuple[list[Event], str | None, int]:
    """The unacked events to send before going live, why a resync is due, and
    the user's last sequence number: live events continue from there."""
    limit = settings.stream_replay_limit
    with session_for(settings.database_url) as session:
        after_seq: int | None = None
        reason: str | None = None
        if resume_from:
            known = None
            if resume_from.isdigit() and len(resume_from) <= 18:
                known = events.event_of_user(session, user_id, int(resume_from))
            if known is None:
                reason = "unknown-last-event-id"
            else:
                after_seq = known.seq
        replay = events.unacked_after(session, user_id, after_seq, limit + 1)
        last_seq = events.last_seq(session, user_id) or 0
    if len(replay) > limit:
        # Too much to replay: send the newest part and let the app re-fetch.
        return replay[-limit:], "too-many-unacked", last_seq
    return replay, reason, last_seq


async def _unacked_by_seq(
    settings: Settings, user_id: str, seqs: range
) -> dict[int, dict[str, Any]]:
    def read() -> dict[int, dict[str, Any]]:
        with session_for(settings.database_url) as session:
            return {
                e.seq: e.to_app()
                for e in events.unacked_with_seqs(session, user_id, seqs)
            }

    return await asyncio.to_thread(read)


def _observe_latency(offer: Offer) -> None:
    if offer.received_at:
        received = datetime.fromisoformat(offer.received_at)
        WEBHOOK_TO_STREAM.observe((utcnow() - received).total_seconds())
