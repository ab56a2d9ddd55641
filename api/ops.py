"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.metrics import OPEN_STREAMS
from cortex.db import engine_for

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, Any] = {}

    def database() -> None:
        with engine_for(
            request.app.state.settings.database_url
        ).connect() as connection:
            connection.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(asyncio.to_thread(database), timeout=5)
        checks["database"] = "ok"
    except Exception as error:  # noqa: BLE001 - any failure means "not ready"
        checks["database"] = f"down: {type(error).__name__}"

    client = request.app.state.temporal
    if client is None:
        checks["temporal"] = "down: not connected"
    else:
        try:
            await asyncio.wait_for(client.service_client.check_health(), timeout=5)
            checks["temporal"] = "ok"
        except Exception as error:  # noqa: BLE001
            checks["temporal"] = f"down: {type(error).__name__}"

    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"ready": ready, "checks": checks}, status_code=200 if ready else 503
    )


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus metrics; the worker serves the Temporal SDK's own on
    CORTEX_WORKER_METRICS_ADDRESS."""
    OPEN_STREAMS.set(request.app.state.hub.open_streams)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
