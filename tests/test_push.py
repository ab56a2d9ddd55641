"""Expo push: tokens, retries, chunking, trimming, no duplicates, receipts.

Each case scripts the loopback Expo server and runs a real delivery workflow
on the time-skipping server, so retry backoff takes no wall time.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

import pytest
from sqlmodel import select

from activities.expo_client import MAX_PAYLOAD_BYTES, is_expo_token
from activities.push import build_message
from activities.push_rate import PushRateLimiter
from cortex.db import session_for
from cortex.models import Event, PushDelivery, PushReservation, PushToken
from cortex.settings import DEFAULT_PUSH_URGENCY
from tests.expo_server import Scripted, fixture_reply
from tests.harness import Harness


def tokens(n: int) -> list[str]:
    return [f"ExponentPushToken[{uuid.uuid4().hex[:20]}]" for _ in range(n)]


def push_rows(harness: Harness) -> list[PushDelivery]:
    with session_for(harness.db) as session:
        return list(session.exec(select(PushDelivery)).all())


def active_tokens(harness: Harness) -> dict[str, bool]:
    with session_for(harness.db) as session:
        return {t.token: t.active for t in session.exec(select(PushToken)).all()}


async def test_mixed_tickets_deactivate_the_dead_token_for_good(
    harness: Harness,
) -> None:
    alive, dead = tokens(2)
    for token in (alive, dead):
        harness.register_token("user-0001", token)
    harness.expo.state.dead_tokens.add(dead)

    first = await (await harness.start()).result()
    second = await (await harness.start()).result()

    assert first.pushes_ok == 1 and first.channel == "push"
    assert active_tokens(harness) == {alive: True, dead: False}
    assert [len(r) for r in harness.expo.state.requests] == [
        2,
        1,
    ]  # dead one not used again
    assert len(harness.expo.state.pushes_to(alive)) == 2
    assert second.pushes_ok == 1


@pytest.mark.parametrize(
    "failure",
    [
        fixture_reply("send_rate_limited.json"),
        Scripted(status=503, body=b"<html><body>503 Service Unavailable</body></html>"),
        Scripted(drop_connection=True),
        Scripted(status=502, body=b"Bad Gateway"),
    ],
    ids=["429", "503-html", "dropped-connection", "502-text"],
)
async def test_transient_failures_are_retried_and_push_exactly_once(
    harness: Harness, failure: Scripted
) -> None:
    phone, tablet = tokens(2)
    harness.register_token("user-0001", phone)
    harness.register_token("user-0001", tablet)
    harness.expo.state.script.extend([failure, failure])

    result = await (await harness.start()).result()

    assert result.pushes_ok == 2
    assert len(harness.expo.state.requests) == 3  # two failures, then success
    assert len(harness.expo.state.pushes_to(phone)) == 1
    assert len(harness.expo.state.pushes_to(tablet)) == 1
    assert {r.status for r in push_rows(harness)} == {"ok"}


async def test_a_request_expo_rejects_for_good_is_not_retried(harness: Harness) -> None:
    harness.register_token("user-0001", tokens(1)[0])
    harness.expo.state.script.append(
        Scripted(
            status=400,
            body=json.dumps(
                {"errors": [{"code": "VALIDATION_ERROR", "message": "bad"}]}
            ).encode(),
        )
    )

    result = await (await harness.start()).result()

    assert len(harness.expo.state.requests) == 1
    assert result.channel is None  # queued, then undelivered
    assert [(r.status, r.error) for r in push_rows(harness)] == [
        ("failed", "VALIDATION_ERROR")
    ]


async def test_credential_errors_are_not_retried(harness: Harness) -> None:
    harness.register_token("user-0001", tokens(1)[0])
    harness.expo.state.script.append(
        Scripted(
            status=401,
            body=json.dumps(
                {"errors": [{"code": "UNAUTHORIZED", "message": "no"}]}
            ).encode(),
        )
    )
    await (await harness.start()).result()
    assert len(harness.expo.state.requests) == 1
    assert [r.error for r in push_rows(harness)] == ["InvalidCredentials"]


async def test_250_tokens_go_out_in_chunks_of_at_most_100(harness: Harness) -> None:
    many = tokens(250)
    for token in many:
        harness.register_token("user-0001", token)

    result = await (await harness.start()).result()

    assert sorted(len(r) for r in harness.expo.state.requests) == [50, 100, 100]
    assert result.pushes_ok == 250
    assert Counter(m["to"] for m in harness.expo.state.sent) == Counter(
        {t: 1 for t in many}
    )


async def test_urgency_sets_priority_channel_and_event_id(harness: Harness) -> None:
    token = tokens(1)[0]
    harness.register_token("user-0001", token)
    result = await (await harness.start()).result()  # the harness sends "high"

    [message] = harness.expo.state.pushes_to(token)
    assert message["priority"] == "high"
    assert message["channelId"] == DEFAULT_PUSH_URGENCY["high"].channel_id
    assert message["data"]["eventId"] == str(result.event_id)


def test_critical_is_high_priority_and_bodies_are_trimmed_to_fit() -> None:
    event = Event(
        id=7,
        idempotency_key="k",
        user_id="u",
        type="t",
        title="Title",
        body="é" * 10_000,
        urgency="critical",
        source="s",
        workflow_id="w",
        workflow_run_id="r",
        received_at=None,  # type: ignore[arg-type]
    )
    message = build_message(event, "ExpoPushToken[abc]", DEFAULT_PUSH_URGENCY)
    size = len(json.dumps(message, ensure_ascii=False).encode())
    assert message["priority"] == "high"
    assert size <= MAX_PAYLOAD_BYTES
    assert message["body"].endswith("…") and message["body"].startswith("é")
    assert size > MAX_PAYLOAD_BYTES - 10  # trimmed, not emptied


@pytest.mark.parametrize(
    "token, valid",
    [
        ("ExponentPushToken[xxxxxxxxxxxxxxxxxxxxxx]", True),
        ("ExpoPushToken[xxxxxxxxxxxxxxxxxxxxxx]", True),
        ("ExponentPushToken[]", False),
        ("ExponentPushToken[abc", False),
        ("apns-device-token-0f1e2d", False),
        ("ExponentPushToken[a b]", False),
    ],
)
def test_token_formats(token: str, valid: bool) -> None:
    assert is_expo_token(token) is valid


def test_rate_limit_is_shared_by_all_workers(tmp_db: str) -> None:
    # Two limiters on one database stand for two worker processes.
    limiters = [PushRateLimiter(tmp_db, per_second=600) for _ in range(2)]
    sent_per_limiter = [0, 0]

    sends: list[tuple[float, int]] = []

    def send(index: int) -> None:
        for _ in range(9):
            limiters[index].acquire(100)
            sends.append((time.time(), 100))
            sent_per_limiter[index] += 100

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sum(sent_per_limiter) == 1800
    with session_for(tmp_db) as session:
        reserved = [
            (r.at, r.count) for r in session.exec(select(PushReservation)).all()
        ]
    assert sum(n for _, n in reserved) == 1800
    # No one-second window, wherever it starts, holds more than 600.
    busiest = max(
        sum(n for t, n in reserved if start <= t < start + 1) for start, _ in reserved
    )
    assert busiest <= 600
    assert sends[-1][0] - sends[0][0] >= 2  # 1,800 at 600/s takes two seconds at least


def test_more_than_the_limit_at_once_is_refused(tmp_db: str) -> None:
    with pytest.raises(ValueError):
        PushRateLimiter(tmp_db, per_second=50).acquire(100)
