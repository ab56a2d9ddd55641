"""The FastAPI application and its life cycle.

Besides serving HTTP, each API process runs a small Temporal worker on its own
task queue: that is how a delivery workflow reaches the streams this process
holds (see ``api/stream_hub.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from temporalio.client import Client
from temporalio.worker import Worker

from api import app_routes, ingest, operators, ops, stream
from api.errors import install_error_handlers
from api.metrics import register_database_totals, unregister
from api.stream_hub import StreamHub
from cortex.db import engine_for
from cortex.settings import Settings, get_settings
from cortex.temporal import connect

logger = logging.getLogger(__name__)

TEMPORAL_RETRY_SECONDS = 2


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(engine_for, settings.database_url)
        hub = StreamHub(
            settings.database_url,
            heartbeat_seconds=settings.heartbeat_seconds,
            send_timeout_seconds=settings.stream_send_timeout_seconds,
            max_per_user=settings.stream_max_per_user,
            max_per_process=settings.stream_max_per_process,
        )
        app.state.hub = hub
        app.state.temporal = None
        totals = register_database_totals(settings.database_url)
        background = [
            asyncio.create_task(hub.keep_registered(), name="stream-registry"),
            asyncio.create_task(
                _run_stream_worker(app, settings, hub), name="stream-worker"
            ),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await hub.unregister_process()
            unregister(totals)

    app = FastAPI(
        title="Cortex Realtime",
        summary="Events to phones: SSE when the app is open, Expo push when not.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    if settings.cors_origins:
        # Browsers on these origins may open the stream with a ticket; no
        # credentials (cookies) are involved.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "content-type", "last-event-id"],
        )
    for module in (ingest, app_routes, stream, ops, operators):
        app.include_router(module.router)
    return app


async def _run_stream_worker(app: FastAPI, settings: Settings, hub: StreamHub) -> None:
    """Connect to Temporal (retrying while it is down), then serve the hub's
    task queue until shutdown. Until connected, ingest answers 503."""
    client: Client | None = None
    while client is None:
        try:
            client = await connect(settings)
        except Exception as error:  # noqa: BLE001 - any failure: try again
            logger.warning(
                "Temporal at %s not reachable (%s); retrying",
                settings.temporal_address,
                error,
            )
            await asyncio.sleep(TEMPORAL_RETRY_SECONDS)
    app.state.temporal = client
    worker = Worker(
        client,
        task_queue=hub.task_queue,
        activities=[hub.deliver_to_streams],
        max_concurrent_activities=1000,
    )
    logger.info("stream worker polling %s", hub.task_queue)
    try:
        await worker.run()
    finally:
        app.state.temporal = None
