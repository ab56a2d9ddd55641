"""The live stream: independent clients agree on what we send, the frames
follow the WHATWG event-stream format, limits shed load with 429, browsers
get in with a short-lived ticket."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from cortex.db import session_for
from cortex.models import StreamConnection
from tests.conftest import Stack, wait_until
from tests.sse_client import StreamReader

JS = Path(__file__).parent / "js"
EVENT_TYPES = ["connected", "cortex.test"]


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, dev_server: WorkflowEnvironment
) -> AsyncIterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("stream"),
        dev_server.client.service_client.config.target_host,
        stream_max_per_user=6,
    )
    stack.start_worker()
    stack.url = stack.start_api()
    stack.wait_ready(stack.url)
    yield stack
    stack.stop()


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def publish(stack: Stack, user: str, **fields: Any) -> httpx.Response:
    body = {
        "userId": user,
        "type": "cortex.test",
        "title": "t",
        "idempotencyKey": uuid.uuid4().hex,
        **fields,
    }
    return httpx.post(
        f"{stack.url}/v3/events", json=body, headers={"x-api-key": stack.settings.api_keys[0]}
    )


def open_streams(stack: Stack, user: str) -> int:
    with session_for(stack.settings.database_url) as session:
        return len(session.exec(select(StreamConnection).where(StreamConnection.user_id == user)).all())


# --- a strict parser of the WHATWG event-stream format, for the raw bytes ---

FIELD_LINE = re.compile(r"^(id|event|data|retry): (.*)$")


def parse_strictly(raw: bytes) -> list[dict[str, str]]:
    """Parse as the WHATWG algorithm does, and fail on anything we should
    never send: a field without the single space, an unknown field, an id with
    NUL, bare CR line ends, a block without data."""
    text = raw.decode("utf-8")
    assert "\r" not in text.replace("\r\n", ""), "bare CR in the stream"
    events = []
    for block in text.split("\r\n\r\n"):
        if not block:
            continue
        kind, event_id, data, has_data = "message", None, [], False
        for line in block.split("\r\n"):
            if line.startswith(":"):
                continue  # comment (heartbeat)
            match = FIELD_LINE.match(line)
            assert match, f"not a well-formed field line: {line!r}"
            name, value = match.groups()
            if name == "event":
                kind = value
            elif name == "id":
                assert "\0" not in value and value.isdigit(), f"bad id {value!r}"
                event_id = value
            elif name == "data":
                data.append(value)
                has_data = True
            elif name == "retry":
                assert value.isdigit()
        if has_data:
            events.append({"type": kind, "id": event_id or "", "data": "\n".join(data)})
    return events


async def record_raw(stack: Stack, user: str, until_events: int) -> bytes:
    chunks: list[bytes] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as client:
        async with client.stream(
            "GET", f"{stack.url}/v3/realtime/stream", headers=stack.auth(user)
        ) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
                if b"".join(chunks).count(b"\r\nid: ") + b"".join(chunks).startswith(b"id: ") >= until_events:
                    break
    return b"".join(chunks)


async def run_node(script: str, *args: str) -> list[dict[str, str]]:
    process = await asyncio.create_subprocess_exec(
        shutil.which("node") or "node",
        str(JS / script),
        *args,
        cwd=JS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


async def test_chromium_node_eventsource_and_httpx_sse_read_the_same_events(stack: Stack) -> None:
    user = new_user()
    ticket = httpx.post(f"{stack.url}/v3/realtime/ticket", headers=stack.auth(user)).json()["ticket"]
    token = stack.token(user)
    awkward = [
        {"title": "two\nlines", "body": "ends with CRLF\r\n"},
        {"title": "Grüße 🚀", "body": 'quotes " and \\ backslash', "urgency": "critical"},
        {"title": "data: not a field", "body": "id: 999\n\nevent: fake", "data": {"nested": ["a", 1]}},
        {"title": ": not a comment", "body": ""},
    ]
    wanted = str(1 + len(awkward))  # the connected frame, then the events

    clients = [
        asyncio.create_task(run_node("node_eventsource.mjs", f"{stack.url}/v3/realtime/stream", token, wanted, *EVENT_TYPES)),
        asyncio.create_task(run_node("chromium_eventsource.mjs", stack.url, ticket, wanted, *EVENT_TYPES)),
        asyncio.create_task(record_raw(stack, user, len(awkward))),
    ]
    async with StreamReader(f"{stack.url}/v3/realtime/stream", stack.auth(user)) as httpx_sse:
        await wait_until(lambda: open_streams(stack, user) == 4, timeout=30)
        for fields in awkward:
            assert publish(stack, user, **fields).status_code == 202
            await httpx_sse.wait_for(lambda f, n=len(httpx_sse.events()): len(httpx_sse.events()) > n)
        node, chromium, raw = await asyncio.gather(*clients)

    strict = parse_strictly(raw)
    as_httpx_sse = [{"type": f.event, "id": f.id, "data": f.data} for f in httpx_sse.frames]

    def events(parsed: list[dict[str, str]]) -> list[dict[str, str]]:
        return [e for e in parsed if e["type"] != "connected"]

    assert len(events(strict)) == len(awkward)
    assert events(node) == events(chromium) == events(as_httpx_sse) == events(strict)
    assert [json.loads(e["data"])["title"] for e in events(strict)] == [a["title"] for a in awkward]
    for parsed in (node, chromium, as_httpx_sse, strict):
        assert parsed[0]["type"] == "connected"
    assert b"retry: 3000" in raw


def test_stream_headers_stop_proxy_buffering_and_compression(stack: Stack) -> None:
    user = new_user()
    headers = {**stack.auth(user), "accept-encoding": "gzip, br"}
    with httpx.stream("GET", f"{stack.url}/v3/realtime/stream", headers=headers, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        assert "no-cache" in response.headers["cache-control"]
        assert "content-encoding" not in response.headers


async def test_too_many_streams_get_429_with_retry_after(stack: Stack) -> None:
    user = new_user()
    readers = [StreamReader(f"{stack.url}/v3/realtime/stream", stack.auth(user)) for _ in range(6)]
    for reader in readers:
        await reader.__aenter__()
    try:
        refused = httpx.get(f"{stack.url}/v3/realtime/stream", headers=stack.auth(user))
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
        assert "detail" in refused.json()
        # Another user is not affected by this user's cap.
        async with StreamReader(f"{stack.url}/v3/realtime/stream", stack.auth(new_user())):
            pass
    finally:
        for reader in readers:
            await reader.close()
    # Places free up when streams close.
    await wait_until(lambda: open_streams(stack, user) == 0, timeout=5)
    async with StreamReader(f"{stack.url}/v3/realtime/stream", stack.auth(user)):
        pass


def test_stream_ticket_opens_the_stream_and_nothing_else(stack: Stack) -> None:
    user = new_user()
    issued = httpx.post(f"{stack.url}/v3/realtime/ticket", headers=stack.auth(user))
    assert issued.status_code == 200 and issued.json()["expiresIn"] == 60
    ticket = issued.json()["ticket"]

    with httpx.stream("GET", f"{stack.url}/v3/realtime/stream", params={"ticket": ticket}, timeout=10) as ok:
        assert ok.status_code == 200
    as_bearer = httpx.get(f"{stack.url}/v3/events", headers={"authorization": f"Bearer {ticket}"})
    assert as_bearer.status_code == 401
    forged = httpx.get(f"{stack.url}/v3/realtime/stream", params={"ticket": stack.token(user)})
    assert forged.status_code == 401  # an app token is not a stream ticket
    assert httpx.post(f"{stack.url}/v3/realtime/ticket").status_code == 401

    import jwt

    expired = jwt.encode(
        {"sub": user, "aud": "cortex-stream", "exp": int(time.time()) - 1},
        stack.settings.jwt_secret,
        algorithm="HS256",
    )
    assert httpx.get(f"{stack.url}/v3/realtime/stream", params={"ticket": expired}).status_code == 401
