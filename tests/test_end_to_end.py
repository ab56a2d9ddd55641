"""The delivery core end to end: the real dev server, worker and API processes,
real TCP, a real SSE client, a loopback Expo server, the Composio fixtures."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import jwt
import pytest
from sqlmodel import select
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from cortex.db import session_for
from cortex.devstack import free_port
from cortex.models import Event
from cortex.shared import delivery_workflow_id
from tests.conftest import (
    COMPOSIO,
    Stack,
    gmail_webhook,
    signed_webhook,
    started_stack,
    wait_until,
)
from tests.expo_server import ExpoServer
from tests.sse_client import StreamReader

ACK_WINDOW = 4


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
        "e2e",
        ack_timeout_seconds=ACK_WINDOW,
        expo_base_url=expo.url,
    )
    yield stack
    stack.stop()


def stream_url(stack: Stack, last_event_id: str | None = None) -> str:
    suffix = f"?lastEventId={last_event_id}" if last_event_id else ""
    return f"{stack.url}/v3/realtime/stream{suffix}"


def post_webhook(stack: Stack, payload: dict | bytes, **kwargs) -> httpx.Response:
    headers, body = signed_webhook(
        stack.settings.composio_webhook_secret, payload, **kwargs
    )
    return httpx.post(f"{stack.url}/proactive/webhook", headers=headers, content=body)


def db_events(stack: Stack, user_id: str | None = None) -> list[Event]:
    with session_for(stack.settings.database_url) as session:
        query = select(Event).order_by(Event.id)
        if user_id:
            query = query.where(Event.user_id == user_id)
        return list(session.exec(query).all())


def db_event(stack: Stack, event_id: str | int) -> Event:
    with session_for(stack.settings.database_url) as session:
        event = session.get(Event, int(event_id))
        assert event is not None
        return event


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


async def test_stream_gets_the_event_within_a_second_and_the_ack_completes_it(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    user = new_user()
    async with StreamReader(stream_url(stack), stack.auth(user)) as stream:
        sent = time.perf_counter()
        response = await asyncio.to_thread(post_webhook, stack, gmail_webhook(user))
        assert response.status_code == 202, response.text

        frame = await stream.wait_for(
            lambda f: f.event == "gmail.new_message", timeout=5
        )
        assert frame.at - sent < 1.0
        event = frame.json()
        assert event["id"] == frame.id
        assert (event["title"], event["body"]) == (
            "Gmail from Alex Example",
            "Quarterly report draft",
        )

        ack = httpx.post(
            f"{stack.url}/v3/events/ack",
            json={"eventId": frame.id},
            headers=stack.auth(user),
        )
        assert ack.status_code == 200 and ack.json()["acked"] == [frame.id]

    handle = dev_server.client.get_workflow_handle(response.json()["workflowId"])
    result = await asyncio.wait_for(handle.result(), timeout=10)
    assert result["status"] == "acked"
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    stored = db_event(stack, frame.id)
    assert (stored.status, stored.channel) == ("acked", "stream")


async def test_without_a_stream_it_is_pushed_then_undelivered_then_replayed_and_acked(
    stack: Stack, expo: ExpoServer
) -> None:
    user = new_user()
    auth = stack.auth(user)
    token = f"ExponentPushToken[{uuid.uuid4().hex}]"
    registered = httpx.post(
        f"{stack.url}/v3/push/tokens",
        json={"token": token, "platform": "android", "deviceName": "Pixel"},
        headers=auth,
    )
    assert registered.status_code == 201, registered.text

    # An earlier event the app has seen and ACKed: its id is the resume point.
    async with StreamReader(stream_url(stack), auth) as stream:
        post_webhook(stack, gmail_webhook(user))
        seen = await stream.wait_for(lambda f: bool(f.id))
    httpx.post(f"{stack.url}/v3/events/ack", json={"eventId": seen.id}, headers=auth)
    await wait_until(lambda: _no_open_streams(stack, user), timeout=5)
    response = await asyncio.to_thread(post_webhook, stack, gmail_webhook(user))
    assert response.status_code == 202

    pushes = await wait_until(lambda: expo.state.pushes_to(token), timeout=10)
    assert len(pushes) == 1
    event_id = pushes[0]["data"]["eventId"]
    await wait_until(lambda: db_event(stack, event_id).status == "pushed", timeout=5)
    await wait_until(
        lambda: db_event(stack, event_id).status == "undelivered",
        timeout=ACK_WINDOW + 10,
    )

    async with StreamReader(
        stream_url(stack), {**auth, "last-event-id": seen.id}
    ) as stream:
        replayed = await stream.wait_for(lambda f: bool(f.id))
        assert replayed.id == event_id
        assert replayed.json()["status"] == "undelivered"
        ack = httpx.post(
            f"{stack.url}/v3/events/ack", json={"eventIds": [replayed.id]}, headers=auth
        )
        assert ack.status_code == 200
    assert db_event(stack, event_id).status == "acked"
    assert len(expo.state.pushes_to(token)) == 1


def _no_open_streams(stack: Stack, user: str) -> bool:
    from cortex.models import StreamConnection

    with session_for(stack.settings.database_url) as session:
        return not session.exec(
            select(StreamConnection).where(StreamConnection.user_id == user)
        ).first()


async def test_the_same_webhook_five_times_is_one_workflow_one_event_one_delivery(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    user = new_user()
    payload = gmail_webhook(user)
    async with StreamReader(stream_url(stack), stack.auth(user)) as stream:
        # Composio retries with the same webhook-id and a new timestamp each time.
        responses = await asyncio.gather(
            *(
                asyncio.to_thread(
                    post_webhook, stack, payload, timestamp=int(time.time()) - i
                )
                for i in range(5)
            )
        )
        await stream.wait_for(lambda f: bool(f.id))
        await asyncio.sleep(1.5)  # room for a second copy to show up, if one existed

    assert sorted(r.status_code for r in responses) == [202] * 5
    assert (
        sorted(r.json()["status"] for r in responses)
        == ["accepted"] + ["duplicate"] * 4
    )
    assert len(stream.events()) == 1
    assert len(db_events(stack, user)) == 1
    workflows = [
        w
        async for w in dev_server.client.list_workflows(
            f'WorkflowId = "{delivery_workflow_id("composio:" + payload["id"])}"'
        )
    ]
    assert len(workflows) == 1


def _gmail_bytes(user: str) -> bytes:
    return json.dumps(gmail_webhook(user)).encode()


BAD_WEBHOOKS = {
    "unsigned": lambda s, u: (
        {
            "content-type": "application/json",
            "webhook-id": "msg_x",
            "webhook-timestamp": str(int(time.time())),
        },
        _gmail_bytes(u),
        401,
    ),
    "badly signed": lambda s, u: _tamper(signed_webhook(s, gmail_webhook(u)), 401),
    "stale timestamp": lambda s, u: (
        *signed_webhook(s, gmail_webhook(u), timestamp=int(time.time()) - 301),
        401,
    ),
    "future timestamp": lambda s, u: (
        *signed_webhook(s, gmail_webhook(u), timestamp=int(time.time()) + 600),
        401,
    ),
    "malformed json": lambda s, u: (
        *signed_webhook(s, b'{"id": "msg_1", "type": ', webhook_id="msg_malformed"),
        422,
    ),
    "not a trigger shape": lambda s, u: (
        *signed_webhook(
            s, {"id": "msg_2", "type": "composio.trigger.message", "data": {}}
        ),
        422,
    ),
    "oversized": lambda s, u: (
        *signed_webhook(
            s, {**gmail_webhook(u), "data": {"message_text": "x" * 300_000}}
        ),
        413,
    ),
}


def _tamper(signed: tuple[dict[str, str], bytes], status: int):
    headers, body = signed
    return headers, body.replace(b"Quarterly", b"Quarterlx"), status


@pytest.mark.parametrize("case", sorted(BAD_WEBHOOKS))
async def test_bad_webhooks_get_a_4xx_and_change_nothing(
    case: str, stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    user = new_user()
    headers, body, expected = BAD_WEBHOOKS[case](
        stack.settings.composio_webhook_secret, user
    )
    response = httpx.post(
        f"{stack.url}/proactive/webhook", headers=headers, content=body
    )

    assert response.status_code == expected
    assert isinstance(response.json()["detail"], str)
    assert db_events(stack, user) == []
    with pytest.raises(RPCError):
        await dev_server.client.get_workflow_handle(
            delivery_workflow_id(f"composio:{headers['webhook-id']}")
        ).describe()


def test_trigger_disabled_notice_is_answered_2xx_and_ignored(stack: Stack) -> None:
    payload = json.loads((COMPOSIO / "v3_trigger_disabled.json").read_text())
    response = post_webhook(stack, payload)
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    assert db_events(stack, payload["data"]["user_id"]) == []


async def test_v2_slack_webhook_becomes_an_event_for_its_user(stack: Stack) -> None:
    payload = json.loads((COMPOSIO / "v2_slack_receive_message.json").read_text())
    payload["data"]["user_id"] = user = new_user()
    response = post_webhook(stack, payload, webhook_id=f"msg_{uuid.uuid4()}")
    assert response.status_code == 202, response.text
    [event] = await wait_until(lambda: db_events(stack, user), timeout=10)
    assert (event.type, event.body, event.source) == (
        "slack.message",
        "test",
        "composio",
    )


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/v3/realtime/stream", None),
        ("GET", "/v3/events", None),
        ("GET", "/v3/events/since/0", None),
        ("POST", "/v3/events/ack", {"eventId": "1"}),
        ("GET", "/v3/push/tokens", None),
        (
            "POST",
            "/v3/push/tokens",
            {"token": "ExponentPushToken[x]", "platform": "ios"},
        ),
    ],
)
@pytest.mark.parametrize(
    "credential", ["none", "garbage", "wrong secret", "expired", "no sub"]
)
def test_app_endpoints_need_a_valid_jwt(
    stack: Stack, method: str, path: str, body, credential: str
) -> None:
    now = int(time.time())
    secret = stack.settings.jwt_secret
    tokens = {
        "none": None,
        "garbage": "not.a.jwt",
        "wrong secret": jwt.encode(
            {"sub": "u", "exp": now + 60}, "another-secret-of-enough-length!", "HS256"
        ),
        "expired": jwt.encode({"sub": "u", "exp": now - 60}, secret, "HS256"),
        "no sub": jwt.encode({"exp": now + 60}, secret, "HS256"),
    }
    headers = (
        {"authorization": f"Bearer {tokens[credential]}"} if tokens[credential] else {}
    )
    response = httpx.request(method, f"{stack.url}{path}", json=body, headers=headers)
    assert response.status_code == 401
    assert "detail" in response.json()


async def test_a_user_cannot_stream_read_or_ack_another_users_events(
    stack: Stack,
) -> None:
    alice, mallory = new_user(), new_user()
    async with StreamReader(stream_url(stack), stack.auth(mallory)) as mallory_stream:
        async with StreamReader(stream_url(stack), stack.auth(alice)) as alice_stream:
            post_webhook(stack, gmail_webhook(alice))
            frame = await alice_stream.wait_for(lambda f: bool(f.id))
        await asyncio.sleep(0.5)
        assert mallory_stream.events() == []

    as_mallory = stack.auth(mallory)
    assert (
        httpx.get(f"{stack.url}/v3/events", headers=as_mallory).json()["events"] == []
    )
    assert (
        httpx.get(f"{stack.url}/v3/events/since/0", headers=as_mallory).json()["events"]
        == []
    )
    single = httpx.post(
        f"{stack.url}/v3/events/ack", json={"eventId": frame.id}, headers=as_mallory
    )
    assert single.status_code == 404
    batch = httpx.post(
        f"{stack.url}/v3/events/ack", json={"eventIds": [frame.id]}, headers=as_mallory
    )
    assert batch.json() == {"acked": [], "unknown": [frame.id]}
    assert db_event(stack, frame.id).status == "live"

    # Resuming from someone else's id proves nothing about this user's gap.
    async with StreamReader(stream_url(stack, frame.id), as_mallory) as resumed:
        resync = await resumed.wait_for(lambda f: f.event == "resync")
        assert json.loads(resync.data)["reason"] == "unknown-last-event-id"
    assert [
        e["id"]
        for e in httpx.get(f"{stack.url}/v3/events", headers=stack.auth(alice)).json()[
            "events"
        ]
    ] == [frame.id]


def test_publish_api_needs_a_key_and_validates(stack: Stack) -> None:
    event = {
        "userId": new_user(),
        "type": "cortex.suggestion",
        "title": "Hi",
        "idempotencyKey": "k1",
    }
    assert httpx.post(f"{stack.url}/v3/events", json=event).status_code == 401
    key = {"x-api-key": stack.settings.api_keys[0]}
    bad = httpx.post(
        f"{stack.url}/v3/events", json={**event, "urgency": "urgent"}, headers=key
    )
    assert bad.status_code == 422
    unkeyed = {k: v for k, v in event.items() if k != "idempotencyKey"}
    assert (
        httpx.post(f"{stack.url}/v3/events", json=unkeyed, headers=key).status_code
        == 422
    )
    assert db_events(stack, event["userId"]) == []

    first = httpx.post(f"{stack.url}/v3/events", json=event, headers=key)
    again = httpx.post(f"{stack.url}/v3/events", json=event, headers=key)
    assert (first.status_code, first.json()["status"]) == (202, "accepted")
    assert (again.status_code, again.json()["status"]) == (202, "duplicate")


def test_temporal_unreachable_means_503_and_nothing_stored(stack: Stack) -> None:
    dead_temporal = f"127.0.0.1:{free_port()}"
    url = stack.start_api({"CORTEX_TEMPORAL_ADDRESS": dead_temporal})
    user = new_user()
    headers, body = signed_webhook(
        stack.settings.composio_webhook_secret, gmail_webhook(user)
    )

    response = httpx.post(f"{url}/proactive/webhook", headers=headers, content=body)
    assert response.status_code == 503
    assert db_events(stack, user) == []
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["temporal"].startswith("down")

    # Composio retries; once Temporal is back (here: the healthy API), it lands.
    retried = httpx.post(
        f"{stack.url}/proactive/webhook", headers=headers, content=body
    )
    assert retried.status_code == 202


async def test_webhook_on_one_api_process_reaches_a_stream_held_by_another(
    stack: Stack,
) -> None:
    other = stack.start_api()
    stack.wait_ready(other)
    user = new_user()
    async with StreamReader(f"{other}/v3/realtime/stream", stack.auth(user)) as far:
        async with StreamReader(stream_url(stack), stack.auth(user)) as near:
            response = await asyncio.to_thread(post_webhook, stack, gmail_webhook(user))
            assert response.status_code == 202
            frames = [await s.wait_for(lambda f: bool(f.id)) for s in (far, near)]
    assert frames[0].id == frames[1].id
    await wait_until(lambda: db_event(stack, frames[0].id).status == "live", timeout=5)


def test_push_tokens_accept_both_prefixes_refuse_others_and_reactivate(
    stack: Stack,
) -> None:
    user = new_user()
    auth = stack.auth(user)
    url = f"{stack.url}/v3/push/tokens"
    new_style = f"ExpoPushToken[{uuid.uuid4().hex}]"
    assert (
        httpx.post(
            url, json={"token": new_style, "platform": "web"}, headers=auth
        ).status_code
        == 201
    )
    for bad in (
        {"token": "fcm:abc", "platform": "ios"},
        {"token": new_style, "platform": "symbian"},
        {"platform": "ios"},
    ):
        refused = httpx.post(url, json=bad, headers=auth)
        assert refused.status_code == 422 and "detail" in refused.json()

    from activities.push import deactivate_token

    with session_for(stack.settings.database_url) as session:
        deactivate_token(session, new_style, "DeviceNotRegistered")
        session.commit()
    assert httpx.get(url, headers=auth).json()["tokens"][0]["active"] is False
    again = httpx.post(
        url,
        json={"token": new_style, "platform": "web", "deviceName": "Laptop"},
        headers=auth,
    )
    assert again.status_code == 200
    [listed] = httpx.get(url, headers=auth).json()["tokens"]
    assert (listed["active"], listed["deviceName"]) == (True, "Laptop")

    assert (
        httpx.delete(
            url, params={"token": new_style}, headers=stack.auth(new_user())
        ).status_code
        == 404
    )
    assert (
        httpx.delete(url, params={"token": new_style}, headers=auth).status_code == 204
    )
    assert httpx.get(url, headers=auth).json()["tokens"] == []


def test_push_reliability_view_is_for_operators_and_counts_pushes(
    stack: Stack, expo: ExpoServer
) -> None:
    url = f"{stack.url}/ops/push/daily"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"x-operator-key": "guess"}).status_code == 401
    report = httpx.get(url, headers={"x-operator-key": stack.settings.operator_keys[0]})
    assert report.status_code == 200
    [today] = report.json()["days"]
    with session_for(stack.settings.database_url) as session:
        from cortex.models import PushDelivery

        ok = len(
            session.exec(select(PushDelivery).where(PushDelivery.status == "ok")).all()
        )
    assert today["ok"] == ok == len(expo.state.sent)
    assert today["pushedEvents"] >= 1
