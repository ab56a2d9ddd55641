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

import httpx
import pytest
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from cortex.db import session_for
from cortex.models import StreamConnection
from cortex.stack_runner import Nginx
from tests.conftest import Stack, started_stack, wait_until
from tests.sse_client import StreamReader

JS = Path(__file__).parent / "js"
EVENT_TYPES = ["connected", "cortex.test"]


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, dev_server: WorkflowEnvironment
) -> AsyncIterator[Stack]:
    stack = await started_stack(
        tmp_path_factory,
        dev_server,
        "stream",
        stream_max_per_user=6,
    )
    yield stack
    stack.stop()


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def open_streams(stack: Stack, user: str) -> int:
    with session_for(stack.settings.database_url) as session:
        return len(
            session.exec(
                select(StreamConnection).where(StreamConnection.user_id == user)
            ).all()
        )


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
                if (
                    b"".join(chunks).count(b"\r\nid: ")
                    + b"".join(chunks).startswith(b"id: ")
                    >= until_events
                ):
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


async def test_chromium_node_eventsource_and_httpx_sse_read_the_same_events(
    stack: Stack,
) -> None:
    user = new_user()
    ticket = httpx.post(
        f"{stack.url}/v3/realtime/ticket", headers=stack.auth(user)
    ).json()["ticket"]
    token = stack.token(user)
    awkward = [
        {"title": "two\nlines", "body": "ends with CRLF\r\n"},
        {
            "title": "Grüße 🚀",
            "body": 'quotes " and \\ backslash',
            "urgency": "critical",
        },
        {
            "title": "data: not a field",
            "body": "id: 999\n\nevent: fake",
            "data": {"nested": ["a", 1]},
        },
        {"title": ": not a comment", "body": ""},
    ]
    wanted = str(1 + len(awkward))  # the connected frame, then the events

    clients = [
        asyncio.create_task(
            run_node(
                "node_eventsource.mjs",
                f"{stack.url}/v3/realtime/stream",
                token,
                wanted,
                *EVENT_TYPES,
            )
        ),
        asyncio.create_task(
            run_node(
                "chromium_eventsource.mjs", stack.url, ticket, wanted, *EVENT_TYPES
            )
        ),
        asyncio.create_task(record_raw(stack, user, len(awkward))),
    ]
    async with StreamReader(
        f"{stack.url}/v3/realtime/stream", stack.auth(user)
    ) as httpx_sse:
        await wait_until(lambda: open_streams(stack, user) == 4, timeout=30)
        for fields in awkward:
            assert stack.publish(user, uuid.uuid4().hex, **fields).status_code == 202
            await httpx_sse.wait_for(
                lambda f, n=len(httpx_sse.events()): len(httpx_sse.events()) > n
            )
        node, chromium, raw = await asyncio.gather(*clients)

    strict = parse_strictly(raw)
    as_httpx_sse = [
        {"type": f.event, "id": f.id, "data": f.data} for f in httpx_sse.frames
    ]

    def events(parsed: list[dict[str, str]]) -> list[dict[str, str]]:
        return [e for e in parsed if e["type"] != "connected"]

    assert len(events(strict)) == len(awkward)
    assert events(node) == events(chromium) == events(as_httpx_sse) == events(strict)
    assert [json.loads(e["data"])["title"] for e in events(strict)] == [
        a["title"] for a in awkward
    ]
    for parsed in (node, chromium, as_httpx_sse, strict):
        assert parsed[0]["type"] == "connected"
    assert b"retry: 3000" in raw


def test_stream_headers_stop_proxy_buffering_and_compression(stack: Stack) -> None:
    user = new_user()
    headers = {**stack.auth(user), "accept-encoding": "gzip, br"}
    with httpx.stream(
        "GET", f"{stack.url}/v3/realtime/stream", headers=headers, timeout=10
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        assert "no-cache" in response.headers["cache-control"]
        assert "content-encoding" not in response.headers


async def test_too_many_streams_get_429_with_retry_after(stack: Stack) -> None:
    user = new_user()
    readers = [
        StreamReader(f"{stack.url}/v3/realtime/stream", stack.auth(user))
        for _ in range(6)
    ]
    for reader in readers:
        await reader.__aenter__()
    try:
        refused = httpx.get(f"{stack.url}/v3/realtime/stream", headers=stack.auth(user))
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
        assert "detail" in refused.json()
        # Another user is not affected by this user's cap.
        async with StreamReader(
            f"{stack.url}/v3/realtime/stream", stack.auth(new_user())
        ):
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

    with httpx.stream(
        "GET", f"{stack.url}/v3/realtime/stream", params={"ticket": ticket}, timeout=10
    ) as ok:
        assert ok.status_code == 200
    as_bearer = httpx.get(
        f"{stack.url}/v3/events", headers={"authorization": f"Bearer {ticket}"}
    )
    assert as_bearer.status_code == 401
    forged = httpx.get(
        f"{stack.url}/v3/realtime/stream", params={"ticket": stack.token(user)}
    )
    assert forged.status_code == 401  # an app token is not a stream ticket
    assert httpx.post(f"{stack.url}/v3/realtime/ticket").status_code == 401

    import jwt

    expired = jwt.encode(
        {"sub": user, "aud": "cortex-stream", "exp": int(time.time()) - 1},
        stack.settings.jwt_secret,
        algorithm="HS256",
    )
    assert (
        httpx.get(
            f"{stack.url}/v3/realtime/stream", params={"ticket": expired}
        ).status_code
        == 401
    )


async def test_through_nginx_events_flow_and_survive_killing_an_api_process(
    make_stack, tmp_path: Path
) -> None:
    from cortex.devstack import free_port
    from cortex.realtime_client import RealtimeClient

    stack: Stack = make_stack(stream_max_per_user=100, heartbeat_seconds=2)
    stack.start_worker()
    first, second = stack.start_api(), stack.start_api()
    for url in (first, second):
        stack.wait_ready(url)
    ports = [int(u.rsplit(":", 1)[1]) for u in (first, second)]
    user = new_user()

    with Nginx(tmp_path, ports, free_port()) as nginx:
        received: list[list[tuple[str, float]]] = [[] for _ in range(50)]
        clients = [
            RealtimeClient(
                nginx.url,
                stack.token(user),
                on_event=lambda e, box=box: box.append((e["id"], time.perf_counter())),
                ack=False,  # every device must see every event
            )
            for box in received
        ]
        runs = [asyncio.create_task(c.run()) for c in clients]
        try:
            await wait_until(lambda: open_streams(stack, user) == 50, timeout=30)
            holders = {c.task_queue for c in _connections(stack, user)}
            assert len(holders) == 2, "nginx should spread the streams over both APIs"

            published: list[tuple[str, float]] = []
            for n in range(30):
                if n == 10:
                    stack.apis[0][0].kill()  # an API process dies mid-stream
                sent = time.perf_counter()
                response = await asyncio.to_thread(
                    stack.publish, user, f"nginx-{n}", url=nginx.url, title=f"#{n}"
                )
                assert response.status_code == 202, response.text
                published.append((response.json()["workflowId"], sent))
                await asyncio.sleep(0.2)

            await wait_until(
                lambda: all(len(box) >= 30 for box in received),
                timeout=60,
                interval=0.2,
            )
        finally:
            for client in clients:
                await client.close()
            await asyncio.gather(*runs, return_exceptions=True)

    ids = [event_id for event_id, _ in received[0]]
    assert len(ids) == 30 and ids == sorted(ids, key=int)
    for box in received:
        assert [event_id for event_id, _ in box] == ids  # each once, in order
    # Before the kill, frames came through nginx without buffering delay.
    first_arrivals = [min(t for box in received for i, t in box if i == ids[0])]
    assert first_arrivals[0] - published[0][1] < 1.0


def _connections(stack: Stack, user: str) -> list[StreamConnection]:
    with session_for(stack.settings.database_url) as session:
        return list(
            session.exec(
                select(StreamConnection).where(StreamConnection.user_id == user)
            ).all()
        )


async def test_a_client_that_stops_reading_is_dropped_and_the_next_event_is_pushed(
    make_stack,
) -> None:
    import socket

    from tests.expo_server import ExpoServer

    with ExpoServer() as expo:
        stack: Stack = make_stack(heartbeat_seconds=1, expo_base_url=expo.url)
        stack.start_worker()
        url = stack.url = stack.start_api()
        stack.wait_ready(url)
        user = new_user()
        token = f"ExponentPushToken[{uuid.uuid4().hex}]"
        httpx.post(
            f"{url}/v3/push/tokens",
            json={"token": token, "platform": "ios"},
            headers=stack.auth(user),
        )

        # A phone whose app froze: the connection stays up, nothing is read.
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = url.removeprefix("http://").split(":")
        stalled.connect((host, int(port)))
        stalled.sendall(
            f"GET /v3/realtime/stream HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {stack.token(user)}\r\n\r\n".encode()
        )
        try:
            await wait_until(lambda: open_streams(stack, user) == 1, timeout=10)
            big = "x" * 9_000
            for n in range(10):
                assert (
                    stack.publish(
                        user, uuid.uuid4().hex, title=f"big {n}", body=big
                    ).status_code
                    == 202
                )
                await asyncio.sleep(0.5)
                if open_streams(stack, user) == 0:
                    dropped_after = n
                    break
            else:
                pytest.fail("the stalled stream was never dropped")

            # Two heartbeats (2 s) after its buffers filled, the stream is gone
            # and the next event goes to push.
            assert dropped_after <= 6
            response = stack.publish(user, uuid.uuid4().hex, title="after the stall")
            workflow_id = response.json()["workflowId"]
            pushes = await wait_until(
                lambda: [m for m in expo.state.sent if m["title"] == "after the stall"],
                timeout=15,
            )
            assert len(pushes) == 1 and pushes[0]["to"] == token
            assert workflow_id
        finally:
            stalled.close()


async def test_1000_events_across_reconnects_none_lost_none_twice_in_order(
    make_stack,
) -> None:
    from cortex.realtime_client import RealtimeClient

    stack: Stack = make_stack()
    stack.start_worker()
    url = stack.url = stack.start_api()
    stack.wait_ready(url)
    user = new_user()

    received: list[str] = []
    client = RealtimeClient(
        url, stack.token(user), on_event=lambda e: received.append(e["id"])
    )
    run = asyncio.create_task(client.run())
    reconnects = 0

    async def publish_all() -> None:
        # Several publishers at once, so deliveries of one user overlap.
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(1000):
            queue.put_nowait(n)

        async def publisher(http: httpx.AsyncClient) -> None:
            while not queue.empty():
                n = queue.get_nowait()
                response = await http.post(
                    f"{url}/v3/events",
                    json={
                        "userId": user,
                        "type": "cortex.test",
                        "title": f"#{n}",
                        "idempotencyKey": f"k{n}",
                    },
                    headers={"x-api-key": stack.settings.api_keys[0]},
                )
                assert response.status_code == 202, response.text

        async with httpx.AsyncClient(timeout=30) as http:
            await asyncio.gather(*(publisher(http) for _ in range(8)))

    try:
        await wait_until(lambda: client.state == "open", timeout=10)
        publishing = asyncio.create_task(publish_all())
        deadline = time.monotonic() + 300
        while len(set(received)) < 1000 and time.monotonic() < deadline:
            await asyncio.sleep(2.5)
            client.drop_connection()  # the phone's network blinks every few seconds
            reconnects += 1
        await publishing
    finally:
        await client.close()
        await asyncio.gather(run, return_exceptions=True)

    assert reconnects >= 5
    with session_for(stack.settings.database_url) as session:
        from cortex.models import Event

        stored = session.exec(select(Event).where(Event.user_id == user)).all()
    missing = {
        e.id: (e.seq, e.status) for e in stored if str(e.id) not in set(received)
    }
    assert not missing, f"{len(stored)} stored, missing {missing}"
    assert len(received) == len(set(received)) == 1000
    assert received == sorted(received, key=int)
