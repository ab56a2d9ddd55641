"""A delivery worker in the test process on the time-skipping server, with
real activities, a SQLite file and a loopback Expo server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import select
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.events import EventActivities
from activities.expo_client import ExpoClient
from activities.push import PushActivities
from activities.push_rate import PushRateLimiter
from cortex.db import session_for
from cortex.devstack import installed_binary
from cortex.models import Event, EventTransition, PushToken
from cortex.shared import DeliveryInput, NewEvent, ReceiptsResult, delivery_workflow_id
from cortex.temporal import ensure_search_attributes
from tests.expo_server import ExpoServer
from worker import WORKFLOWS, delivery_activities
from workflows.delivery import DeliveryWorkflow
from workflows.receipts import PushReceiptsWorkflow

ACK_WINDOW = 300
RECEIPT_DELAY = 15 * 60
# The time-skipping test server stops skipping when a second delivery waits on
# its ACK timer while its receipts child waits on another; deliveries in tests
# that are not about receipts read them at once.
NO_RECEIPT_DELAY = 0.0


@pytest.fixture
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=installed_binary("temporal-test-server")
    )
    try:
        await ensure_search_attributes(env.client, "default")
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def expo() -> Iterator[ExpoServer]:
    with ExpoServer() as server:
        yield server


@pytest.fixture
async def harness(skipping_env: WorkflowEnvironment, tmp_db: str, expo: ExpoServer):
    task_queue = f"delivery-{uuid.uuid4().hex[:8]}"
    event_activities = EventActivities(tmp_db, holder_ttl_seconds=45)
    push_activities = PushActivities(
        tmp_db, ExpoClient(expo.url, timeout=5), PushRateLimiter(tmp_db, 600)
    )
    with ThreadPoolExecutor(16) as executor:
        async with Worker(
            skipping_env.client,
            task_queue=task_queue,
            workflows=WORKFLOWS,
            activities=delivery_activities(event_activities, push_activities),
            activity_executor=executor,
        ):
            harness = Harness(skipping_env.client, task_queue, tmp_db, expo)
            yield harness
            await harness.stop_leftovers()


class Harness:
    def __init__(self, client: Client, task_queue: str, db: str, expo: ExpoServer):
        self.client, self.task_queue, self.db, self.expo = client, task_queue, db, expo
        self.started: list[str] = []

    async def stop_leftovers(self) -> None:
        """Terminate what a test left running (a receipts check on its timer):
        with no worker left for it, it would stall the next test's time skipping."""
        for workflow_id in self.started:
            for target in (workflow_id, f"{workflow_id}-receipts"):
                try:
                    await self.client.get_workflow_handle(target).terminate("test over")
                except RPCError:
                    pass  # finished already, or never started

    def register_token(self, user_id: str, token: str) -> None:
        with session_for(self.db) as session:
            session.add(PushToken(user_id=user_id, token=token, platform="ios"))
            session.commit()

    async def start(
        self,
        user_id: str = "user-0001",
        key: str | None = None,
        workflow_id: str | None = None,
        receipt_delay: float = NO_RECEIPT_DELAY,
    ) -> WorkflowHandle:
        key = key or f"test:{uuid.uuid4()}"
        workflow_id = workflow_id or delivery_workflow_id(key)
        self.started.append(workflow_id)
        return await self.client.start_workflow(
            DeliveryWorkflow.run,
            DeliveryInput(
                event=NewEvent(
                    idempotency_key=key,
                    user_id=user_id,
                    type="gmail.new_message",
                    title="Gmail from Alex",
                    body="Quarterly report draft",
                    source="test",
                    urgency="high",
                ),
                ack_timeout_seconds=ACK_WINDOW,
                receipt_delay_seconds=receipt_delay,
            ),
            id=workflow_id,
            task_queue=self.task_queue,
        )

    async def receipts_of(self, handle: WorkflowHandle) -> ReceiptsResult:
        return await self.client.get_workflow_handle_for(
            PushReceiptsWorkflow.run, f"{handle.id}-receipts"
        ).result()

    def event(self, event_id: int) -> Event:
        with session_for(self.db) as session:
            event = session.get(Event, event_id)
            assert event is not None
            return event

    def history(self, event_id: int) -> list[str]:
        with session_for(self.db) as session:
            rows = session.exec(
                select(EventTransition)
                .where(EventTransition.event_id == event_id)
                .order_by(EventTransition.id)
            ).all()
            return [r.status for r in rows]
