"""What operators rely on: metrics, JSON logs without secrets, re-drive, the
Temporal UI's search attributes, the dashboard."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.conftest import (
    Stack,
    gmail_webhook,
    signed_webhook,
    started_stack,
    wait_until,
)
from tests.expo_server import ExpoServer
from tests.sse_client import StreamReader


@pytest.fixture(scope="module")
def expo() -> Iterator[ExpoServer]:
    with ExpoServer() as server:
        yield server


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory,
    dev_server: WorkflowEnvironment,
    expo: ExpoServer,
) -> AsyncIterator[Stack]:
    stack = await started_stack(
        tmp_path_factory,
        dev_server,
        "ops",
        log_format="json",
        ack_timeout_seconds=3,
        expo_base_url=expo.url,
    )
    yield stack
    stack.stop()


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return None


async def test_metrics_and_json_logs_tell_what_happened_and_leak_nothing(
    stack: Stack,
) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    auth = stack.auth(user)
    push_token = f"ExponentPushToken[{uuid.uuid4().hex}]"
    ticket = httpx.post(f"{stack.url}/v3/realtime/ticket", headers=auth).json()[
        "ticket"
    ]
    webhook = gmail_webhook(user)

    async with StreamReader(
        f"{stack.url}/v3/realtime/stream?ticket={ticket}", {}
    ) as stream:
        headers, body = signed_webhook(stack.settings.composio_webhook_secret, webhook)
        assert (
            httpx.post(
                f"{stack.url}/proactive/webhook", headers=headers, content=body
            ).status_code
            == 202
        )
        frame = await stream.wait_for(lambda f: bool(f.id))
        assert (
            httpx.post(
                f"{stack.url}/v3/events/ack", json={"eventId": frame.id}, headers=auth
            ).status_code
            == 200
        )
    httpx.post(
        f"{stack.url}/v3/push/tokens",
        json={"token": push_token, "platform": "ios"},
        headers=auth,
    )
    httpx.delete(
        f"{stack.url}/v3/push/tokens", params={"token": push_token}, headers=auth
    )
    bad = httpx.post(
        f"{stack.url}/proactive/webhook",
        headers={**headers, "webhook-signature": "v1,AAAA"},
        content=body,
    )
    assert bad.status_code == 401

    text = httpx.get(f"{stack.url}/metrics").text
    assert metric(text, "cortex_webhooks_total", result="accepted") == 1
    assert metric(text, "cortex_webhooks_total", result="http_401") == 1
    assert metric(text, "cortex_webhook_to_stream_seconds_count") == 1
    assert metric(text, "cortex_ack_latency_seconds_count") == 1
    assert metric(text, "cortex_events", status="acked") == 1
    assert metric(text, "cortex_open_streams") == 0
    assert metric(text, "cortex_push_receipts_pending") == 0

    worker_metrics = httpx.get(
        f"http://{stack.env['CORTEX_WORKER_METRICS_ADDRESS']}/metrics"
    ).text
    assert (
        "temporal_workflow_completed" in worker_metrics
        or "temporal_request" in worker_metrics
    )

    await asyncio.sleep(0.5)  # let the processes flush their last lines
    lines = [
        line
        for log in sorted(stack.workdir.glob("*.log"))
        for line in log.read_text().splitlines()
        if line.strip()
    ]
    records = [json.loads(line) for line in lines]  # every line is JSON
    everything = "\n".join(lines)
    secrets = {
        "app token": stack.token(user).split(".")[2],
        "stream ticket": ticket.split(".")[2],
        "push token": push_token,
        "api key": stack.settings.api_keys[0],
        "webhook secret": stack.settings.composio_webhook_secret,
        "message subject": webhook["data"]["subject"],
        "message text": webhook["data"]["message_text"].splitlines()[0],
    }
    leaked = [name for name, value in secrets.items() if value in everything]
    assert not leaked, leaked
    stored = [r for r in records if r.get("event_id") == int(frame.id)]
    assert (
        stored
        and stored[0]["user_id"] == user
        and stored[0]["workflow_id"].startswith("event-")
    )


def publish(stack: Stack, user: str, n: int) -> None:
    response = stack.publish(user, f"{user}-{n}", title=f"#{n}")
    assert response.status_code == 202, response.text


def db_events(stack: Stack, user: str | None = None) -> list:
    from sqlmodel import select

    from cortex.db import session_for
    from cortex.models import Event

    with session_for(stack.settings.database_url) as session:
        query = select(Event).order_by(Event.id)
        if user:
            query = query.where(Event.user_id == user)
        return list(session.exec(query).all())


async def test_100_mixed_events_then_ui_query_redrive_and_dashboard(
    stack: Stack, dev_server: WorkflowEnvironment, expo: ExpoServer, tmp_path: Path
) -> None:
    from cortex.realtime_client import RealtimeClient

    tag = uuid.uuid4().hex[:6]
    streamed, pushed, queued = f"s-{tag}", f"p-{tag}", f"q-{tag}"
    token = f"ExponentPushToken[{uuid.uuid4().hex}]"
    httpx.post(
        f"{stack.url}/v3/push/tokens",
        json={"token": token, "platform": "android"},
        headers=stack.auth(pushed),
    )

    client = RealtimeClient(stack.url, stack.token(streamed), on_event=lambda e: None)
    run = asyncio.create_task(client.run())
    try:
        await wait_until(lambda: client.state == "open", timeout=10)
        plan = (
            [(streamed, n) for n in range(40)]
            + [(pushed, n) for n in range(30)]
            + [(queued, n) for n in range(30)]
        )
        await asyncio.gather(
            *(asyncio.to_thread(publish, stack, u, n) for u, n in plan)
        )
        # The app ACKs ten of the pushed events, as if the user tapped them.
        pushes = await wait_until(
            lambda: (
                len(expo.state.pushes_to(token)) == 30 and expo.state.pushes_to(token)
            ),
            timeout=60,
        )
        ten = [m["data"]["eventId"] for m in pushes[:10]]
        assert (
            httpx.post(
                f"{stack.url}/v3/events/ack",
                json={"eventIds": ten},
                headers=stack.auth(pushed),
            ).status_code
            == 200
        )
        final = {"acked", "undelivered"}
        await wait_until(
            lambda: all(
                e.status in final
                for u in (streamed, pushed, queued)
                for e in db_events(stack, u)
            ),
            timeout=90,
            interval=0.5,
        )
    finally:
        await client.close()
        await asyncio.gather(run, return_exceptions=True)

    # The Temporal UI's query for one user's undelivered events (the UI and
    # this call share Temporal's visibility store).
    query = f'CortexUserId = "{queued}" AND CortexDeliveryStatus = "undelivered"'
    undelivered = {
        e.workflow_id for e in db_events(stack, queued) if e.status == "undelivered"
    }
    assert len(undelivered) == 30

    async def listed() -> set[str]:
        return {w.id async for w in dev_server.client.list_workflows(query)}

    await wait_until(lambda: _equal(listed(), undelivered), timeout=15)

    # Re-drive one of them to a newly connected stream.
    events = db_events(stack, queued)
    target, newest = events[0], events[-1]
    async with StreamReader(
        f"{stack.url}/v3/realtime/stream",
        {**stack.auth(queued), "last-event-id": str(newest.id)},
    ) as stream:
        operator = {"x-operator-key": stack.settings.operator_keys[0]}
        assert (
            httpx.post(
                f"{stack.url}/ops/events/{target.id}/redrive",
                headers=stack.auth(queued),
            ).status_code
            == 401
        )
        started = httpx.post(
            f"{stack.url}/ops/events/{target.id}/redrive",
            json={"reason": "user asked"},
            headers=operator,
        )
        assert started.status_code == 202, started.text
        frame = await stream.wait_for(lambda f: bool(f.id), timeout=15)
        assert frame.id == str(target.id)
        httpx.post(
            f"{stack.url}/v3/events/ack",
            json={"eventId": frame.id},
            headers=stack.auth(queued),
        )
    again = httpx.post(f"{stack.url}/ops/events/{target.id}/redrive", headers=operator)
    assert again.status_code == 409  # acked now: nothing to re-drive
    redrive = dev_server.client.get_workflow_handle(started.json()["workflowId"])
    assert (await asyncio.wait_for(redrive.result(), 15))["status"] == "acked"
    history = await redrive.fetch_history()
    assert any(
        e.activity_task_scheduled_event_attributes.activity_type.name
        == "take_over_event"
        for e in history.events
    )

    # The dashboard, rendered by Chromium, shows the database's numbers.
    shot = Path(
        os.environ.get("CORTEX_DASHBOARD_SCREENSHOT", tmp_path / "dashboard.png")
    )
    shown = await _run_dashboard(stack, shot)
    everything = db_events(stack)
    assert int(shown["total-events"]) == len(everything)
    assert int(shown["acked"]) == sum(e.status == "acked" for e in everything)
    assert int(shown["undelivered"]) == sum(
        e.status == "undelivered" for e in everything
    )
    assert (
        int(shown["channel-stream"])
        == sum(e.channel == "stream" for e in everything)
        >= 40
    )
    assert (
        int(shown["channel-push"]) == sum(e.channel == "push" for e in everything) == 30
    )
    assert int(shown["pushes-sent"]) == len(expo.state.sent)
    assert shown["ack-p50"] != "–" and shown["bars"] > 3
    assert shot.stat().st_size > 10_000


async def _equal(found, expected: set[str]) -> bool:
    return await found == expected


async def _run_dashboard(stack: Stack, screenshot: Path) -> dict:
    import shutil
    import subprocess

    js = Path(__file__).parent / "js"
    process = await asyncio.create_subprocess_exec(
        shutil.which("node") or "node",
        str(js / "dashboard.mjs"),
        stack.url,
        stack.settings.operator_keys[0],
        str(screenshot),
        cwd=js,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return json.loads(out)
