"""Nothing is lost when a process dies: the worker killed mid-delivery, the
embedded Temporal server restarted while deliveries wait for their ACKs."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from pathlib import Path

import httpx
from sqlmodel import select
from temporalio.client import Client, WorkflowExecutionStatus

from cortex.db import session_for
from cortex.devstack import dev_server_command, free_port, wait_for_port
from cortex.models import Event, PushDelivery
from tests.conftest import Process, Stack, wait_until
from tests.expo_server import ExpoServer, Scripted
from tests.sse_client import StreamReader

FINAL = {"acked", "undelivered"}


def publish(stack: Stack, url: str, user: str, n: int) -> httpx.Response:
    return stack.publish(
        user,
        f"crash-{user}-{n}",
        url=url,
        type="cortex.suggestion",
        title=f"suggestion {n}",
        body="try this",
    )


def all_events(stack: Stack) -> list[Event]:
    with session_for(stack.settings.database_url) as session:
        return list(session.exec(select(Event)).all())


async def ack_everything(
    stack: Stack, url: str, readers: dict[str, StreamReader]
) -> None:
    """The app: ACK each event as it arrives on a stream."""
    acked: set[str] = set()
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            for user, reader in readers.items():
                fresh = [i for i in reader.ids() if i not in acked]
                if fresh:
                    response = await client.post(
                        f"{url}/v3/events/ack",
                        json={"eventIds": fresh},
                        headers=stack.auth(user),
                    )
                    response.raise_for_status()
                    acked.update(fresh)
            await asyncio.sleep(0.05)


async def test_worker_killed_mid_delivery_loses_nothing_and_sends_nothing_twice(
    make_stack,
) -> None:
    stack: Stack = make_stack(ack_timeout_seconds=8)
    worker = stack.start_worker()
    url = stack.start_api()
    stack.wait_ready(url)

    streamed = [f"user-s{i}-{uuid.uuid4().hex[:6]}" for i in range(8)]
    offline = [f"user-o{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    readers = {
        u: StreamReader(f"{url}/v3/realtime/stream", stack.auth(u)) for u in streamed
    }
    for reader in readers.values():
        await reader.__aenter__()
    acker = asyncio.create_task(ack_everything(stack, url, readers))
    try:
        plan = [(u, n) for n in range(5) for u in streamed + offline]  # 50 events
        publishing = asyncio.gather(
            *(asyncio.to_thread(publish, stack, url, u, n) for u, n in plan)
        )

        # Kill the worker once deliveries are under way, then bring a new one.
        await wait_until(
            lambda: sum(len(r.ids()) for r in readers.values()) >= 5, timeout=30
        )
        worker.kill()
        responses = await publishing
        assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
        await asyncio.sleep(1)
        stack.start_worker()

        await wait_until(
            lambda: (
                len(all_events(stack)) == 50
                and all(e.status in FINAL for e in all_events(stack))
            ),
            timeout=90,
            interval=0.5,
        )
    finally:
        acker.cancel()
        for reader in readers.values():
            await reader.close()

    events = all_events(stack)
    by_user = Counter(e.user_id for e in events)
    assert by_user == Counter({u: 5 for u in streamed + offline})
    for user, reader in readers.items():
        ids = reader.ids()
        assert len(ids) == len(set(ids)), f"{user} got an event twice: {ids}"
        assert sorted(ids, key=int) == sorted(
            (str(e.id) for e in events if e.user_id == user), key=int
        )
    assert {e.status for e in events if e.user_id in streamed} == {"acked"}
    assert {e.status for e in events if e.user_id in offline} == {"undelivered"}


async def test_deliveries_waiting_for_acks_finish_after_a_temporal_restart(
    tmp_path: Path, make_stack
) -> None:
    port = free_port()
    command = dev_server_command(tmp_path / "temporal.db", port=port, ui_port=None)
    server = Process("temporal", command, {}, tmp_path / "temporal.log").start()
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        stack: Stack = make_stack(ack_timeout_seconds=20)
        stack.env["CORTEX_TEMPORAL_ADDRESS"] = f"127.0.0.1:{port}"
        stack.settings.temporal_address = f"127.0.0.1:{port}"
        stack.start_worker()
        url = stack.start_api()
        stack.wait_ready(url)

        user = f"user-{uuid.uuid4().hex[:8]}"
        async with StreamReader(
            f"{url}/v3/realtime/stream", stack.auth(user)
        ) as reader:
            for n in range(4):
                assert publish(stack, url, user, n).status_code == 202
            await wait_until(lambda: len(reader.ids()) == 4, timeout=15)
        ids = reader.ids()

        server.kill()
        await asyncio.sleep(1)
        server = Process("temporal", command, {}, tmp_path / "temporal-2.log").start()
        wait_for_port("127.0.0.1", port, timeout=60)
        stack.wait_ready(url, timeout=60)

        # The app ACKs two of them after the restart; the other two time out.
        response = httpx.post(
            f"{url}/v3/events/ack", json={"eventIds": ids[:2]}, headers=stack.auth(user)
        )
        assert response.json()["acked"] == ids[:2]

        client = await Client.connect(f"127.0.0.1:{port}")
        handles = [
            client.get_workflow_handle(f"event-api:{user}:crash-{user}-{n}")
            for n in range(4)
        ]
        results = await asyncio.wait_for(
            asyncio.gather(*(h.result() for h in handles)), timeout=60
        )
        statuses = {r["event_id"]: r["status"] for r in results}
        assert sorted(statuses.values()) == [
            "acked",
            "acked",
            "undelivered",
            "undelivered",
        ]
        for handle in handles:
            assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
        stored = {str(e.id): e.status for e in all_events(stack)}
        assert stored == {
            ids[0]: "acked",
            ids[1]: "acked",
            ids[2]: "undelivered",
            ids[3]: "undelivered",
        }
    finally:
        server.signal(signal.SIGTERM)
        server.stop()


async def test_worker_killed_right_after_expo_accepted_a_push_does_not_push_again(
    make_stack,
) -> None:
    with ExpoServer() as expo:
        # Expo accepts the message, then the answer is held back; the worker
        # dies before it can record the ticket.
        expo.state.script.append(Scripted(delay_after_accept=60))
        stack: Stack = make_stack(ack_timeout_seconds=60, expo_base_url=expo.url)
        worker = stack.start_worker()
        url = stack.start_api()
        stack.wait_ready(url)
        user = f"user-{uuid.uuid4().hex[:8]}"
        token = f"ExponentPushToken[{uuid.uuid4().hex}]"
        registered = httpx.post(
            f"{url}/v3/push/tokens",
            json={"token": token, "platform": "ios"},
            headers=stack.auth(user),
        )
        assert registered.status_code == 201

        assert publish(stack, url, user, 0).status_code == 202
        await wait_until(lambda: expo.state.pushes_to(token), timeout=15)
        worker.kill()
        stack.start_worker()

        # The push activity times out on its heartbeat and runs again on the
        # new worker, which finds the unsettled send and does not repeat it.
        await wait_until(
            lambda: [e.status for e in all_events(stack)] == ["pushed"],
            timeout=60,
            interval=0.5,
        )
        with session_for(stack.settings.database_url) as session:
            rows = session.exec(select(PushDelivery)).all()
        assert [(r.token, r.status) for r in rows] == [(token, "unknown")]
        assert len(expo.state.pushes_to(token)) == 1
        assert len(expo.state.requests) == 1
