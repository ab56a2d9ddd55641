"""Where events come in: Composio's signed webhook and our own publish API."""

from __future__ import annotations

import json
import logging
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from api import composio_events
from api.auth import AppSettings, require_api_key
from api.deliveries import Started, start_delivery
from api.errors import read_body
from api.metrics import PUBLISHED, WEBHOOKS
from api.webhook_verifier import WebhookVerificationError, verify
from cortex.settings import Settings
from cortex.shared import NewEvent

logger = logging.getLogger(__name__)
router = APIRouter()

KEY_PATTERN = r"^[A-Za-z0-9._:\-]{1,200}$"


@router.post("/proactive/webhook", status_code=202)
async def composio_webhook(
    request: Request,
    settings: AppSettings,
    webhook_id: Annotated[str | None, Header()] = None,
    webhook_timestamp: Annotated[str | None, Header()] = None,
    webhook_signature: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    try:
        answer = await _composio_webhook(
            request, settings, webhook_id, webhook_timestamp, webhook_signature
        )
    except HTTPException as refused:
        WEBHOOKS.labels(result=f"http_{refused.status_code}").inc()
        raise
    WEBHOOKS.labels(result=answer["status"]).inc()
    return answer


async def _composio_webhook(
    request: Request,
    settings: Settings,
    webhook_id: str | None,
    webhook_timestamp: str | None,
    webhook_signature: str | None,
) -> dict[str, Any]:
    body = await read_body(request, settings.max_body_bytes)
    try:
        verify(
            settings.composio_webhook_secret,
            webhook_id=webhook_id,
            timestamp=webhook_timestamp,
            signature=webhook_signature,
            body=body,
            tolerance_seconds=settings.webhook_tolerance_seconds,
        )
    except WebhookVerificationError as error:
        raise HTTPException(401, detail=str(error)) from None
    assert webhook_id is not None
    if not re.fullmatch(KEY_PATTERN, webhook_id):
        raise HTTPException(400, detail="webhook-id has unexpected characters")

    try:
        parsed = composio_events.parse(json.loads(body))
    except (ValueError, UnicodeDecodeError) as error:
        # json.JSONDecodeError and MalformedWebhook are both ValueErrors.
        detail = (
            str(error)
            if isinstance(error, composio_events.MalformedWebhook)
            else "body is not JSON"
        )
        raise HTTPException(422, detail=detail) from None
    if isinstance(parsed, composio_events.Ignored):
        logger.info("webhook %s ignored: %s", webhook_id, parsed.reason)
        return {"status": "ignored", "reason": parsed.reason}

    started = await start_delivery(
        request,
        NewEvent(
            idempotency_key=f"composio:{webhook_id}",
            user_id=parsed.user_id,
            type=parsed.type,
            title=parsed.title,
            body=parsed.body,
            source="composio",
            data=parsed.data,
        ),
    )
    return {
        "status": "duplicate" if started.duplicate else "accepted",
        "workflowId": started.workflow_id,
    }


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    user_id: str = Field(alias="userId", min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._\-]+$")
    title: str = Field(min_length=1, max_length=500)
    body: str = Field(default="", max_length=10_000)
    urgency: Literal["low", "normal", "high", "critical"] = "normal"
    data: dict[str, Any] = Field(default_factory=dict)
    source: str = Field(default="api", max_length=64, pattern=r"^[a-z0-9_\-]+$")
    idempotency_key: str | None = Field(
        default=None, alias="idempotencyKey", pattern=KEY_PATTERN
    )


@router.post("/v3/events", status_code=202, dependencies=[Depends(require_api_key)])
async def publish_event(
    request: Request,
    event: PublishRequest,
    idempotency_key: Annotated[str | None, Header(pattern=KEY_PATTERN)] = None,
) -> dict[str, Any]:
    key = event.idempotency_key or idempotency_key
    if key is None:
        raise HTTPException(
            422, detail="an idempotencyKey (body) or Idempotency-Key header is required"
        )
    if len(json.dumps(event.data)) > 64 * 1024:
        raise HTTPException(413, detail="data larger than 64 KiB")
    try:
        started = await _publish(request, event, key)
    except HTTPException as refused:
        PUBLISHED.labels(result=f"http_{refused.status_code}").inc()
        raise
    PUBLISHED.labels(result="duplicate" if started.duplicate else "accepted").inc()
    return {
        "status": "duplicate" if started.duplicate else "accepted",
        "workflowId": started.workflow_id,
    }


async def _publish(request: Request, event: PublishRequest, key: str) -> Started:
    return await start_delivery(
        request,
        NewEvent(
            idempotency_key=f"{event.source}:{event.user_id}:{key}",
            user_id=event.user_id,
            type=event.type,
            title=event.title,
            body=event.body,
            urgency=event.urgency,
            source=event.source,
            data=event.data,
        ),
    )
