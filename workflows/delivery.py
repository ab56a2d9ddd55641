"""The delivery workflow: one per event, keyed by the event's idempotency key.

store -> live streams -> (none took it) Expo push -> wait for the ACK signal
-> acked | undelivered. The database is the record the app reads; the
workflow drives it and mirrors each step into search attributes.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.events import EventActivities
    from activities.push import PERMANENT_ERROR_TYPE, PushActivities
    from cortex.models import EventStatus
    from cortex.shared import (
        ACK_SIGNAL,
        DELIVERY_WORKFLOW,
        SA_CHANNEL,
        SA_EVENT_TYPE,
        SA_STATUS,
        SA_URGENCY,
        SA_USER_ID,
        DeliveryInput,
        DeliveryResult,
        HoldersInput,
        PushInput,
        PushResult,
        ReceiptsInput,
        StatusInput,
        StoredEvent,
        StoreEventInput,
        StreamDeliveryInput,
        StreamDeliveryResult,
        TakeOverInput,
    )
    from workflows.receipts import PushReceiptsWorkflow

DB_ACTIVITY = dict(
    start_to_close_timeout=timedelta(seconds=15),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
)
# The stream activity runs in whichever API process holds the stream. If that
# process is gone nobody picks the task up: give up quickly and push instead.
STREAM_ACTIVITY = dict(
    schedule_to_start_timeout=timedelta(seconds=3),
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=RetryPolicy(maximum_attempts=2),
)
# 429, 5xx and network errors from Expo are retried with backoff; a request
# Expo rejects for good (400, credentials) is not.
PUSH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
    non_retryable_error_types=[PERMANENT_ERROR_TYPE],
)


@workflow.defn(name=DELIVERY_WORKFLOW)
class DeliveryWorkflow:
    def __init__(self) -> None:
        self._acked = False
        self._status = EventStatus.RECEIVED.value
        self._summary = ""

    @workflow.signal(name=ACK_SIGNAL)
    def ack(self) -> None:
        self._acked = True

    @workflow.query
    def status(self) -> str:
        return self._status

    @workflow.run
    async def run(self, request: DeliveryInput) -> DeliveryResult:
        info = workflow.info()
        event = request.event
        self._summary = f"{event.title} to {event.user_id}"

        if request.redrive is None:
            stored = await workflow.execute_local_activity_method(
                EventActivities.store_event,
                StoreEventInput(event, info.workflow_id, info.run_id),
                **DB_ACTIVITY,
            )
        else:
            # An operator re-drives an undelivered event: a regular activity,
            # so the take-over shows in this workflow's history by name.
            stored = await workflow.execute_activity_method(
                EventActivities.take_over_event,
                TakeOverInput(
                    request.redrive.event_id,
                    info.workflow_id,
                    info.run_id,
                    request.redrive.reason,
                ),
                **DB_ACTIVITY,
            )
        if not stored.owned:
            # Another delivery owns this event (a repeat after retention ran out).
            workflow.logger.info(
                "event %s already delivered elsewhere", stored.event_id
            )
            return DeliveryResult(stored.event_id, stored.status, None)
        workflow.upsert_search_attributes(
            [
                SA_USER_ID.value_set(event.user_id),
                SA_EVENT_TYPE.value_set(event.type),
                SA_URGENCY.value_set(event.urgency),
            ]
        )
        self._mirror(stored.status, None)

        streams = await self._deliver_live(event.user_id, stored, event.received_at)
        pushed: PushResult | None = None
        if streams:
            status, channel = EventStatus.LIVE, "stream"
        else:
            pushed = await self._push(stored.event_id)
            if pushed is not None and (pushed.ok or pushed.unknown):
                status, channel = EventStatus.PUSHED, "push"
            else:
                status, channel = EventStatus.QUEUED, None
        current = await self._record(stored.event_id, status, channel)

        if pushed is not None and pushed.ticket_ids:
            await self._check_receipts_later(stored.event_id, pushed, request)

        if current != EventStatus.ACKED:
            try:
                await workflow.wait_condition(
                    lambda: self._acked,
                    timeout=timedelta(seconds=request.ack_timeout_seconds),
                )
            except asyncio.TimeoutError:
                pass
        final = EventStatus.ACKED if self._acked else EventStatus.UNDELIVERED
        # The API records the app's ACK in the database before it signals, so an
        # "undelivered" here can come back as "acked": the store decides.
        current = await self._record(stored.event_id, final, None)
        return DeliveryResult(
            stored.event_id,
            current,
            channel,
            streams=streams,
            pushes_ok=pushed.ok if pushed else 0,
        )

    async def _deliver_live(
        self, user_id: str, stored: StoredEvent, received_at: str
    ) -> int:
        holders = await workflow.execute_local_activity_method(
            EventActivities.find_stream_holders, HoldersInput(user_id), **DB_ACTIVITY
        )
        if not holders.task_queues:
            return 0
        attempts = [
            workflow.execute_activity(
                "deliver_to_streams",
                StreamDeliveryInput(
                    user_id, stored.app_event, stored.seq, received_at or None
                ),
                task_queue=task_queue,
                result_type=StreamDeliveryResult,
                **STREAM_ACTIVITY,
            )
            for task_queue in holders.task_queues
        ]
        results = await asyncio.gather(*attempts, return_exceptions=True)
        for task_queue, result in zip(holders.task_queues, results):
            if isinstance(result, BaseException):
                workflow.logger.warning(
                    "stream holder %s did not answer: %s", task_queue, result
                )
        return sum(r.streams for r in results if isinstance(r, StreamDeliveryResult))

    async def _push(self, event_id: int) -> PushResult | None:
        try:
            return await workflow.execute_activity_method(
                PushActivities.send_push,
                PushInput(event_id),
                start_to_close_timeout=timedelta(minutes=10),
                # Heartbeats come between requests; a worker that dies is
                # noticed this quickly, and the retry skips what was sent.
                heartbeat_timeout=timedelta(seconds=15),
                retry_policy=PUSH_RETRY,
            )
        except ActivityError as error:
            workflow.logger.warning(
                "push for event %s failed: %s", event_id, error.cause
            )
            return None

    async def _check_receipts_later(
        self, event_id: int, pushed: PushResult, request: DeliveryInput
    ) -> None:
        await workflow.start_child_workflow(
            PushReceiptsWorkflow.run,
            ReceiptsInput(event_id, pushed.ticket_ids, request.receipt_delay_seconds),
            id=f"{workflow.info().workflow_id}-receipts",
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        )

    async def _record(
        self, event_id: int, status: EventStatus, channel: str | None
    ) -> str:
        result = await workflow.execute_local_activity_method(
            EventActivities.record_status,
            StatusInput(event_id, status.value, channel),
            **DB_ACTIVITY,
        )
        self._mirror(result.status, channel)
        return result.status

    def _mirror(self, status: str, channel: str | None) -> None:
        self._status = status
        # The Temporal UI shows this line on the workflow's page, kept current.
        workflow.set_current_details(f"{self._summary}: {status}")
        updates = [SA_STATUS.value_set(status)]
        if channel:
            updates.append(SA_CHANNEL.value_set(channel))
        workflow.upsert_search_attributes(updates)
