"""The delivery workflow's time-dependent paths, on the time-skipping server.

Real activities, a real SQLite file and a real loopback Expo server; only the
clock is Temporal's test clock, so the five-minute ACK window and the
fifteen-minute receipt delay take no wall time.
"""

from __future__ import annotations

import uuid

from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle

from cortex import events
from cortex.db import session_for
from cortex.models import Event, PushDelivery, PushToken
from cortex.shared import (
    ACK_SIGNAL,
    DeliveryResult,
)
from tests.harness import RECEIPT_DELAY, Harness
from workflows.delivery import DeliveryWorkflow


async def _status_is(handle: WorkflowHandle, status: str) -> bool:
    return await handle.query(DeliveryWorkflow.status) == status


async def test_no_stream_pushes_then_ends_undelivered_and_a_late_ack_wins(
    harness: Harness,
) -> None:
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
    assert harness.history(result.event_id) == [
        "received",
        "stored",
        "pushed",
        "undelivered",
    ]

    # The app opens later: the event is still offered, and its ACK is recorded.
    with session_for(harness.db) as session:
        assert [e.id for e in events.unacked_after(session, "user-0001", None, 10)] == [
            result.event_id
        ]
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
    # What the Temporal UI shows on the workflow's page.
    metadata = await handle.query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    assert metadata.current_details == "Gmail from Alex to user-0001: acked"
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
    assert harness.history(result.event_id) == [
        "received",
        "stored",
        "queued",
        "undelivered",
    ]
    assert harness.expo.state.requests == []


async def test_a_second_workflow_for_the_same_key_does_not_deliver_again(
    harness: Harness,
) -> None:
    token = "ExponentPushToken[onlyonce]"
    harness.register_token("user-0001", token)
    key = f"test:{uuid.uuid4()}"

    first = await (await harness.start(key=key)).result()
    # e.g. the same webhook long after Temporal's retention dropped the first run
    second = await (await harness.start(key=key, workflow_id=f"other-{key}")).result()

    assert second.event_id == first.event_id
    assert len(harness.expo.state.pushes_to(token)) == 1


async def test_receipt_with_device_not_registered_deactivates_the_token(
    harness: Harness,
) -> None:
    dead, alive = "ExponentPushToken[uninstalled]", "ExponentPushToken[stillthere]"
    harness.register_token("user-0001", dead)
    harness.register_token("user-0001", alive)
    harness.expo.state.dead_on_receipt.add(dead)

    handle = await harness.start(receipt_delay=RECEIPT_DELAY)
    await handle.result()
    receipts = await harness.receipts_of(handle)

    assert receipts.checked == 2 and receipts.tokens_deactivated == 1
    with session_for(harness.db) as session:
        active = {t.token: t.active for t in session.exec(select(PushToken)).all()}
        logged = {
            d.token: d.receipt_error for d in session.exec(select(PushDelivery)).all()
        }
    assert active == {dead: False, alive: True}
    assert logged == {dead: "DeviceNotRegistered", alive: None}


async def _wait_for_status(handle: WorkflowHandle, status: str) -> None:
    from tests.conftest import wait_until

    await wait_until(lambda: _status_is(handle, status), timeout=20)
