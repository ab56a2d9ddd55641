"""A stream hands a user's events on in the user's order, even when their
deliveries finish out of order, and never waits forever for a gap."""

from __future__ import annotations

import asyncio
import time

from api.stream_hub import Stream


def offer(
    stream: Stream, seq: int | None, event_id: str | None = None
) -> asyncio.Future[bool]:
    return stream.offer({"id": event_id or str(seq), "type": "t"}, seq)


def seqs(offers) -> list[int | None]:
    return [o.seq for o in offers]


async def nothing_stored(user_id: str, missing: range) -> dict:
    return {}


async def test_in_order_events_pass_straight_through() -> None:
    stream = Stream(id="s", user_id="u", last_seq=4)
    offer(stream, 5)
    assert seqs(await stream.next_in_order(1.0, nothing_stored)) == [5]
    offer(stream, 6)
    assert seqs(await stream.next_in_order(1.0, nothing_stored)) == [6]


async def test_an_overtaking_event_waits_for_the_gap_to_fill() -> None:
    stream = Stream(id="s", user_id="u", last_seq=0)
    offer(stream, 3)
    offer(stream, 2)
    waiter = asyncio.create_task(stream.next_in_order(5.0, nothing_stored))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # 2 and 3 wait for 1
    offer(stream, 1)
    assert seqs(await asyncio.wait_for(waiter, 1)) == [1, 2, 3]
    assert stream.last_seq == 3


async def test_a_gap_that_does_not_fill_live_is_filled_from_the_store() -> None:
    stream = Stream(id="s", user_id="u", last_seq=0)
    offer(stream, 4)
    offer(stream, 2)
    asked: list[range] = []

    async def store(user_id: str, missing: range) -> dict:
        asked.append(missing)
        return {1: {"id": "1", "type": "t"}}  # 1 is unacked; 3 was acked elsewhere

    started = time.monotonic()
    ready = await stream.next_in_order(0.2, store)
    assert time.monotonic() - started >= 0.2
    assert asked == [range(1, 4)]
    assert seqs(ready) == [1, 2, 4]
    assert stream.last_seq == 4
    offer(stream, 1)  # the late live copy is not part of the order any more
    assert seqs(await stream.next_in_order(0.2, nothing_stored)) == [1]


async def test_events_outside_the_sequence_are_not_held() -> None:
    stream = Stream(id="s", user_id="u", last_seq=10)
    offer(stream, 4)  # an old event delivered again (a re-drive)
    assert seqs(await stream.next_in_order(1.0, nothing_stored)) == [4]
    offer(stream, None, "x")
    assert seqs(await stream.next_in_order(1.0, nothing_stored)) == [None]


async def test_closing_reports_unwritten_offers_as_not_taken() -> None:
    stream = Stream(id="s", user_id="u")
    pending = offer(stream, 1)
    stream.close()
    assert pending.done() and pending.result() is False
    assert (await offer(stream, 2)) is False
