"""The delivery worker: runs the delivery workflow and its activities.

Run it with ``cortex-realtime worker`` or ``python worker.py``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Worker

from activities.events import EventActivities
from activities.expo_client import ExpoClient
from activities.push import PushActivities
from activities.push_rate import PushRateLimiter
from cortex.db import engine_for
from cortex.logging_setup import configure_logging
from cortex.settings import Settings, get_settings
from cortex.temporal import connect, ensure_search_attributes
from workflows.delivery import DeliveryWorkflow
from workflows.receipts import PushReceiptsWorkflow

logger = logging.getLogger(__name__)

# The activities are blocking (database, the synchronous Expo SDK): they run
# in threads, as many as the worker takes at once.
MAX_CONCURRENT_ACTIVITIES = 64


WORKFLOWS = [DeliveryWorkflow, PushReceiptsWorkflow]


def delivery_activities(
    events: EventActivities, push: PushActivities
) -> list[Callable]:
    """Every activity the delivery workflows run on this worker's task queue."""
    return [
        events.store_event,
        events.take_over_event,
        events.record_status,
        events.find_stream_holders,
        push.send_push,
        push.check_receipts,
    ]


def build_worker(
    client: Client, settings: Settings, executor: ThreadPoolExecutor
) -> Worker:
    engine_for(settings.database_url)
    events = EventActivities(
        settings.database_url, holder_ttl_seconds=3 * settings.heartbeat_seconds
    )
    push = PushActivities(
        settings.database_url,
        ExpoClient(
            settings.expo_base_url,
            settings.expo_access_token,
            timeout=settings.expo_timeout_seconds,
        ),
        PushRateLimiter(settings.database_url, settings.expo_max_per_second),
        settings.push_urgency,
    )
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=delivery_activities(events, push),
        activity_executor=executor,
        max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
        max_concurrent_local_activities=MAX_CONCURRENT_ACTIVITIES,
    )


async def run_worker(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    client = await connect(settings, metrics_address=settings.worker_metrics_address)
    await ensure_search_attributes(client, settings.temporal_namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    with ThreadPoolExecutor(max_workers=MAX_CONCURRENT_ACTIVITIES) as executor:
        # Leaving the block shuts the worker down gracefully: running activities
        # finish, and workflow tasks go back to the server for the next worker.
        async with build_worker(client, settings, executor):
            logger.info("worker polling task queue %s", settings.task_queue)
            await stop.wait()
    logger.info("worker stopped")


def main() -> None:
    configure_logging(get_settings().log_format)
    asyncio.run(run_worker())


if __name__ == "__main__":
    main()
