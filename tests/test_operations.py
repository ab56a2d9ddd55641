"""What operators rely on: metrics, JSON logs without secrets, re-drive, the
Temporal UI's search attributes, the dashboard."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.conftest import Stack, gmail_webhook, signed_webhook, wait_until
from tests.sse_client import StreamReader


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, dev_server: WorkflowEnvironment
) -> AsyncIterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("ops"),
        dev_server.client.service_client.config.target_host,
        log_format="json",
        ack_timeout_seconds=3,
    )
    stack.start_worker()
    stack.url = stack.start_api()
    stack.wait_ready(stack.url)
    yield stack
    stack.stop()


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return None


async def test_metrics_and_json_logs_tell_what_happened_and_leak_nothing(stack: Stack) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    auth = stack.auth(user)
    push_token = f"ExponentPushToken[{uuid.uuid4().hex}]"
    ticket = httpx.post(f"{stack.url}/v3/realtime/ticket", headers=auth).json()["ticket"]
    webhook = gmail_webhook(user)

    async with StreamReader(f"{stack.url}/v3/realtime/stream?ticket={ticket}", {}) as stream:
        headers, body = signed_webhook(stack.settings.composio_webhook_secret, webhook)
        assert httpx.post(f"{stack.url}/proactive/webhook", headers=headers, content=body).status_code == 202
        frame = await stream.wait_for(lambda f: bool(f.id))
        assert httpx.post(f"{stack.url}/v3/events/ack", json={"eventId": frame.id}, headers=auth).status_code == 200
    httpx.post(f"{stack.url}/v3/push/tokens", json={"token": push_token, "platform": "ios"}, headers=auth)
    httpx.delete(f"{stack.url}/v3/push/tokens", params={"token": push_token}, headers=auth)
    bad = httpx.post(f"{stack.url}/proactive/webhook", headers={**headers, "webhook-signature": "v1,AAAA"}, content=body)
    assert bad.status_code == 401

    text = httpx.get(f"{stack.url}/metrics").text
    assert metric(text, "cortex_webhooks_total", result="accepted") == 1
    assert metric(text, "cortex_webhooks_total", result="http_401") == 1
    assert metric(text, "cortex_webhook_to_stream_seconds_count") == 1
    assert metric(text, "cortex_ack_latency_seconds_count") == 1
    assert metric(text, "cortex_events", status="acked") == 1
    assert metric(text, "cortex_open_streams") == 0
    assert metric(text, "cortex_push_receipts_pending") == 0

    worker_metrics = httpx.get(f"http://{stack.env['CORTEX_WORKER_METRICS_ADDRESS']}/metrics").text
    assert "temporal_workflow_completed" in worker_metrics or "temporal_request" in worker_metrics

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
    assert any(user in json.dumps(r) and "workflow" in json.dumps(r) for r in records)
