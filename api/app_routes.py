"""What the app calls besides the stream: ACKs, event lists, push tokens."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import col, select

from activities.expo_client import is_expo_token
from api.auth import AppSettings, CurrentUser
from api.deliveries import signal_ack
from api.metrics import ACK_LATENCY
from cortex import events
from cortex.db import session_for
from cortex.models import EventStatus, PushToken, utcnow

router = APIRouter(prefix="/v3")

EventId = Annotated[str, Field(pattern=r"^[0-9]{1,18}$")]


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eventId: EventId | None = None
    eventIds: list[EventId] | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="before")
    @classmethod
    def _ids_as_strings(cls, value: Any) -> Any:
        # The app may send numbers; ids are strings on the wire.
        if isinstance(value, dict):
            value = dict(value)
            if isinstance(value.get("eventId"), int):
                value["eventId"] = str(value["eventId"])
            if isinstance(value.get("eventIds"), list):
                value["eventIds"] = [
                    str(i) if isinstance(i, int) else i for i in value["eventIds"]
                ]
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> AckRequest:
        if (self.eventId is None) == (self.eventIds is None):
            raise ValueError("send either eventId or eventIds")
        return self

    def ids(self) -> list[str]:
        return [self.eventId] if self.eventId is not None else list(self.eventIds or [])


@router.post("/events/ack")
async def ack(
    request: Request, body: AckRequest, user: CurrentUser, settings: AppSettings
) -> dict[str, Any]:
    def record() -> events.AckOutcome:
        with session_for(settings.database_url) as session:
            return events.ack_events(session, user, body.ids())

    outcome = await asyncio.to_thread(record)
    for event in outcome.newly_acked:
        ACK_LATENCY.observe((event.acked_at - event.created_at).total_seconds())
    if body.eventId is not None and outcome.unknown:
        raise HTTPException(404, detail="event not found")
    await asyncio.gather(*(signal_ack(request, e.workflow_id) for e in outcome.acked))
    return {"acked": [str(e.id) for e in outcome.acked], "unknown": outcome.unknown}


@router.get("/events/since/{last_event_id}")
def events_since(
    last_event_id: Annotated[str, Path(pattern=r"^[0-9]{1,18}$")],
    user: CurrentUser,
    settings: AppSettings,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    with session_for(settings.database_url) as session:
        found = events.list_events(
            session,
            user,
            after_id=int(last_event_id),
            limit=limit + 1,
            newest_first=False,
        )
    return {
        "events": [e.to_app() for e in found[:limit]],
        "hasMore": len(found) > limit,
    }


@router.get("/events")
def list_events(
    user: CurrentUser,
    settings: AppSettings,
    status: Annotated[list[EventStatus] | None, Query()] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    with session_for(settings.database_url) as session:
        found = events.list_events(
            session,
            user,
            statuses=[s.value for s in status] if status else None,
            before_id=before,
            limit=limit + 1,
        )
    page = found[:limit]
    return {
        "events": [e.to_app() for e in page],
        "nextBefore": str(page[-1].id) if len(found) > limit else None,
    }


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=200)
    platform: Literal["ios", "android", "web"]
    deviceName: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _expo_token(self) -> TokenRequest:
        if not is_expo_token(self.token):
            raise ValueError(
                "token must look like ExponentPushToken[...] or ExpoPushToken[...]"
            )
        return self


def _token_view(row: PushToken) -> dict[str, Any]:
    return {
        "token": row.token,
        "platform": row.platform,
        "deviceName": row.device_name,
        "active": row.active,
        "lastSeenAt": row.last_seen_at.isoformat(),
    }


@router.post("/push/tokens", status_code=201)
def register_token(
    body: TokenRequest, user: CurrentUser, settings: AppSettings, response: Response
) -> dict[str, Any]:
    with session_for(settings.database_url) as session:
        row = session.exec(
            select(PushToken).where(PushToken.token == body.token)
        ).first()
        if row is None:
            row = PushToken(user_id=user, token=body.token, platform=body.platform)
        else:
            response.status_code = 200
        # A registration is proof of a live device: it (re)activates the token
        # and moves it to whoever is signed in on that device now.
        row.user_id, row.platform, row.device_name = (
            user,
            body.platform,
            body.deviceName,
        )
        row.active, row.deactivated_at, row.deactivated_reason = True, None, None
        row.last_seen_at = utcnow()
        session.add(row)
        session.commit()
        session.refresh(row)
        return _token_view(row)


@router.get("/push/tokens")
def list_tokens(user: CurrentUser, settings: AppSettings) -> dict[str, Any]:
    with session_for(settings.database_url) as session:
        rows = session.exec(
            select(PushToken)
            .where(PushToken.user_id == user)
            .order_by(col(PushToken.id))
        ).all()
    return {"tokens": [_token_view(r) for r in rows]}


class TokenDeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200)


@router.delete("/push/tokens", status_code=204)
def remove_token(
    user: CurrentUser,
    settings: AppSettings,
    token: Annotated[str | None, Query(max_length=200)] = None,
    body: Annotated[TokenDeleteRequest | None, Body()] = None,
) -> Response:
    value = token or (body.token if body else None)
    if not value:
        raise HTTPException(422, detail="name the token to remove (query or body)")
    with session_for(settings.database_url) as session:
        row = session.exec(
            select(PushToken)
            .where(PushToken.token == value)
            .where(PushToken.user_id == user)
        ).first()
        if row is None:
            raise HTTPException(404, detail="token not found")
        session.delete(row)
        session.commit()
    return Response(status_code=204)
