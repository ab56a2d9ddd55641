"""Checks Expo push receipts once Expo has had time to produce them."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.push import PERMANENT_ERROR_TYPE, PushActivities
    from cortex.shared import ReceiptsInput, ReceiptsResult


@workflow.defn
class PushReceiptsWorkflow:
    @workflow.run
    async def run(self, request: ReceiptsInput) -> ReceiptsResult:
        # Expo advises reading receipts about 15 minutes after sending; they are
        # kept for a day, so a durable timer is the natural way to wait.
        if request.delay_seconds > 0:
            await workflow.sleep(timedelta(seconds=request.delay_seconds))
        return await workflow.execute_activity_method(
            PushActivities.check_receipts,
            request,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=5),
                maximum_interval=timedelta(minutes=5),
                maximum_attempts=20,
                non_retryable_error_types=[PERMANENT_ERROR_TYPE],
            ),
        )
