"""Operator endpoints: re-drive, the push report, delivery stats and the
dashboard page. Operators authenticate with an operator key (header, bearer
or HTTP Basic password, so a browser can open the dashboard)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from api.auth import AppSettings, require_operator
from api.deliveries import start_delivery
from cortex.db import session_for
from cortex.delivery_stats import delivery_stats
from cortex.models import Event, EventStatus
from cortex.push_report import daily_push_report
from cortex.shared import NewEvent, Redrive

router = APIRouter(prefix="/ops", dependencies=[Depends(require_operator)])
DASHBOARD = Path(__file__).parent / "static" / "dashboard.html"


class RedriveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="operator re-drive", max_length=300)


@router.post("/events/{event_id}/redrive", status_code=202)
async def redrive(
    request: Request,
    event_id: Annotated[int, PathParam(ge=1)],
    settings: AppSettings,
    body: RedriveRequest | None = None,
) -> dict[str, Any]:
    """Deliver an undelivered event again, through a new delivery workflow."""

    def load() -> Event | None:
        with session_for(settings.database_url) as session:
            return session.get(Event, event_id)

    event = await asyncio.to_thread(load)
    if event is None:
        raise HTTPException(404, detail="event not found")
    if event.status != EventStatus.UNDELIVERED:
        raise HTTPException(
            409,
            detail=f"only undelivered events are re-driven; this one is {event.status}",
        )
    started = await start_delivery(
        request,
        NewEvent(
            idempotency_key=event.idempotency_key,
            user_id=event.user_id,
            type=event.type,
            title=event.title,
            body=event.body,
            source=event.source,
            urgency=event.urgency,
            data=event.data,
        ),
        redrive=Redrive(event_id, (body or RedriveRequest()).reason),
    )
    return {"status": "accepted", "workflowId": started.workflow_id}


@router.get("/push/daily")
def push_daily(
    settings: AppSettings, days: Annotated[int, Query(ge=1, le=90)] = 14
) -> dict[str, Any]:
    """Push reliability per day: sent, ok, errors by code, tokens deactivated,
    and the share of pushed events the app later ACKed."""
    with session_for(settings.database_url) as session:
        return {"days": daily_push_report(session, days)}


@router.get("/stats")
def stats(settings: AppSettings) -> dict[str, Any]:
    with session_for(settings.database_url) as session:
        return delivery_stats(session)


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    return HTMLResponse(DASHBOARD.read_text())
