"""The engine's own ceiling: a workflow with the delivery workflow's Temporal
round trips and none of its work.

Delivery: start -> task -> 2 local activities -> 1 activity on another task
queue (the API process's) -> task -> 1 local activity -> wait for the ACK
signal -> task -> 1 local activity -> done. Here every step is a no-op.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

QUICK = timedelta(seconds=10)


@activity.defn
async def noop() -> None:
    return None


@workflow.defn
class CeilingWorkflow:
    def __init__(self) -> None:
        self._acked = False

    @workflow.signal
    def ack(self) -> None:
        self._acked = True

    @workflow.run
    async def run(self, live_queue: str) -> None:
        for _ in range(2):
            await workflow.execute_local_activity(noop, start_to_close_timeout=QUICK)
        await workflow.execute_activity(
            "deliver", task_queue=live_queue, start_to_close_timeout=QUICK
        )
        await workflow.execute_local_activity(noop, start_to_close_timeout=QUICK)
        await workflow.wait_condition(lambda: self._acked, timeout=timedelta(minutes=5))
        await workflow.execute_local_activity(noop, start_to_close_timeout=QUICK)
