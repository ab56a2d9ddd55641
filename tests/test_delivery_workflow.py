"""The delivery workflow's time-dependent paths, on the time-skipping server.

Real activities, a real SQLite file and a real loopback Expo server; only the
clock is Temporal's test clock, so the five-minute ACK window and the
fifteen-minute receipt delay take no wall time.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from temporalio.api.enums.v1 import EventType
from sqlmodel import select
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.events import EventActivities
from activities.expo_client import ExpoClient
from activities.push import PushActivities
from cortex import events
from cortex.db import session_for
from cortex.devstack import installed_binary
from cortex.temporal import ensure_search_attributes
from cortex.models import Event, EventTransition, PushDelivery, PushToken
from cortex.shared import ACK_SIGNAL, DeliveryInput, DeliveryResult, NewEvent, delivery_workflow_id
from tests.expo_server import ExpoServer
from workflows.delivery import DeliveryWorkflow
from workflows.receipts import PushReceiptsWorkflow

ACK_WINDOW = 300
RECEIPT_DELAY = 15 * 60


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
    push_activities = PushActivities(tmp_db, ExpoClient(expo.url))
    with ThreadPoolExecutor(16) as executor:
        async with Worker(
            skipping_env.client,
            task_queue=task_queue,
            workflows=[DeliveryWorkflow, PushReceiptsWorkflow],
            activities=[
                event_activities.store_event,
                event_activities.record_status,
                event_activities.find_stream_holders,
                push_activities.send_push,
                push_activities.check_receipts,
            ],
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
        self, user_id: str = "user-0001", key: str | None = None, workflow_id: str | None = None
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
                receipt_delay_seconds=RECEIPT_DELAY,
            ),
            id=workflow_id,
            task_queue=self.task_queue,
        )

    def event(self, event_id: int) -> Event:
        with session_for(self.db) as session:
            event = session.get(Event, event_id)
            assert event is not None
            return event

    def history(self, event_id: int) -> list[str]:
        with session_for(self.db) as session:
            rows = session.exec(
                select(EventTransition).where(EventTransition.event_id == event_id).order_by(EventTransition.id)
            ).all()
            return [r.status for r in rows]


async def _status_is(handle: WorkflowHandle, status: str) -> bool:
    return await handle.query(DeliveryWorkflow.status) == status


async def test_no_stream_pushes_then_ends_undelivered_and_a_late_ack_wins(harness: Harness) -> None:
    token = "ExponentPushToken[user1phone]"
    harness.register_token("user-0001", token)

    handle = await harness.start()
    result: DeliveryResult = await handle.result()

    assert result.status == "undelivered"
    assert result.channel == "push"
    pushes = harness.expo.state.pushes_to(token)
    assert len(pushes) == 1
    assert pushes[0]["data"]["eventId"] == str(result.event_id)
    assert pushes[0]["priority"] == "high"  # urgency "high"
    assert harness.history(result.event_id) == ["received", "stored", "pushed", "undelivered"]

    # The app opens later: the event is still offered, and its ACK is recorded.
    with session_for(harness.db) as session:
        assert [e.id for e in events.unacked_after(session, "user-0001", None, 10)] == [result.event_id]
        events.ack_events(session, "user-0001", [str(result.event_id)])
    assert harness.event(result.event_id).status == "acked"


async def test_ack_signal_completes_the_workflow_early(harness: Harness) -> None:
    harness.register_token("user-0001", "ExpoPushToken[newstyleprefix]")
    handle = await harness.start()

    await _wait_for_status(handle, "pushed")
    with session_for(harness.db) as session:
        event_id = session.exec(select(Event.id)).one()
        events.ack_events(session, "user-0001", [str(event_id)])
    await handle.signal(ACK_SIGNAL)
    result = await handle.result()

    assert result.status == "acked"
    # The ACK window's timer was cancelled by the signal, not fired.
    history = await handle.fetch_history()
    kinds = [e.event_type for e in history.events]
    assert EventType.EVENT_TYPE_TIMER_CANCELED in kinds
    assert EventType.EVENT_TYPE_TIMER_FIRED not in kinds
    assert harness.history(result.event_id)[-1] == "acked"
    # The SDK's prefix check does not stop the newer token style.
    assert len(harness.expo.state.pushes_to("ExpoPushToken[newstyleprefix]")) == 1


async def test_acked_is_final_when_the_signal_never_arrives(harness: Harness) -> None:
    # The app's ACK reached the database but not the workflow (Temporal was
    # briefly unreachable): the timeout must not turn it into "undelivered".
    handle = await harness.start()
    await _wait_for_status(handle, "queued")
    with session_for(harness.db) as session:
        event_id = session.exec(select(Event.id)).one()
        events.ack_events(session, "user-0001", [str(event_id)])

    result = await handle.result()

    assert result.status == "acked"
    assert "undelivered" not in harness.history(result.event_id)


async def test_user_without_tokens_is_queued_then_undelivered(harness: Harness) -> None:
    result = await (await harness.start(user_id="user-without-devices")).result()
    assert result.channel is None
    assert harness.history(result.event_id) == ["received", "stored", "queued", "undelivered"]
    assert harness.expo.state.requests == []


async def test_a_second_workflow_for_the_same_key_does_not_deliver_again(harness: Harness) -> None:
    token = "ExponentPushToken[onlyonce]"
    harness.register_token("user-0001", token)
    key = f"test:{uuid.uuid4()}"

    first = await (await harness.start(key=key)).result()
    # e.g. the same webhook long after Temporal's retention dropped the first run
    second = await (await harness.start(key=key, workflow_id=f"other-{key}")).result()

    assert second.event_id == first.event_id
    assert len(harness.expo.state.pushes_to(token)) == 1


async def test_receipt_with_device_not_registered_deactivates_the_token(harness: Harness) -> None:
    dead, alive = "ExponentPushToken[uninstalled]", "ExponentPushToken[stillthere]"
    harness.register_token("user-0001", dead)
    harness.register_token("user-0001", alive)
    harness.expo.state.dead_on_receipt.add(dead)

    handle = await harness.start()
    await handle.result()
    receipts = await harness.client.get_workflow_handle_for(
        PushReceiptsWorkflow.run, f"{handle.id}-receipts"
    ).result()

    assert receipts.checked == 2 and receipts.tokens_deactivated == 1
    with session_for(harness.db) as session:
        active = {t.token: t.active for t in session.exec(select(PushToken)).all()}
        logged = {d.token: d.receipt_error for d in session.exec(select(PushDelivery)).all()}
    assert active == {dead: False, alive: True}
    assert logged == {dead: "DeviceNotRegistered", alive: None}


async def _wait_for_status(handle: WorkflowHandle, status: str) -> None:
    from tests.conftest import wait_until

    await wait_until(lambda: _status_is(handle, status), timeout=20)
