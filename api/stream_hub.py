"""The stream hub: the open SSE streams of this API process, and the registry
that tells every delivery workflow which processes hold a user's streams.

Each API process polls its own Temporal task queue. A delivery workflow looks
the user up in the registry table and runs ``deliver_to_streams`` on the task
queue of every process that holds one of the user's streams; that activity
reports how many streams really wrote the event to their socket.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlmodel import col, delete
from temporalio import activity

from cortex.db import session_for
from cortex.models import StreamConnection, StreamHolder, utcnow
from cortex.shared import StreamDeliveryInput, StreamDeliveryResult

logger = logging.getLogger(__name__)

# Ids remembered per stream to drop a second copy of an event (a replayed event
# that also arrives live, or a retried delivery activity).
SENT_IDS_REMEMBERED = 10_000


@dataclass
class Offer:
    app_event: dict[str, Any]
    written: asyncio.Future[bool]
    seq: int | None = None
    received_at: str | None = None


# Reads the unacked events with these sequence numbers of a user: {seq: app event}.
GapFiller = Callable[[str, range], Awaitable[dict[int, dict[str, Any]]]]


@dataclass
class Stream:
    """One open SSE connection."""

    id: str
    user_id: str
    queue: asyncio.Queue[Offer] = field(default_factory=asyncio.Queue)
    _sent: set[str] = field(default_factory=set)
    _sent_order: deque[str] = field(default_factory=deque)
    _pending: dict[str, asyncio.Future[bool]] = field(default_factory=dict)
    closed: bool = False
    # The user's sequence number of the last event handed on in order, and the
    # events that arrived ahead of a gap, waiting for it to fill.
    last_seq: int = 0
    _held: dict[int, Offer] = field(default_factory=dict)
    _hold_until: float = 0.0

    async def next_in_order(
        self, hold_seconds: float, fill_gap: GapFiller
    ) -> list[Offer]:
        """The next offers to write, in the user's order.

        Deliveries of one user's events run in parallel and may finish out of
        order. An event that arrives ahead of a gap is held until the gap fills;
        after ``hold_seconds`` the missing events are read from the database
        instead (their delivery may have given up on this stream and gone to
        push). So every stream is strictly in order, which is what makes
        ``Last-Event-ID`` a safe place to resume from.
        """
        loop = asyncio.get_running_loop()
        while True:
            wait = max(0.0, self._hold_until - loop.time()) if self._held else None
            try:
                offer = await asyncio.wait_for(self.queue.get(), wait)
            except TimeoutError:
                # Every gap up to the newest held event, not only the first.
                filled = await fill_gap(
                    self.user_id, range(self.last_seq + 1, max(self._held))
                )
                for seq, app_event in filled.items():
                    self._held.setdefault(
                        seq, Offer(app_event, loop.create_future(), seq)
                    )
                ready = [self._held.pop(seq) for seq in sorted(self._held)]
                self.last_seq = max(self.last_seq, ready[-1].seq or 0)
                return ready
            if offer.seq is None or offer.seq <= self.last_seq:
                return [offer]  # not part of the live order (a re-drive, say)
            if offer.seq > self.last_seq + 1:
                if not self._held:
                    self._hold_until = loop.time() + hold_seconds
                self._held[offer.seq] = offer
                continue
            ready = [offer]
            self.last_seq = offer.seq
            while self.last_seq + 1 in self._held:
                self.last_seq += 1
                ready.append(self._held.pop(self.last_seq))
            return ready

    def offer(
        self,
        app_event: dict[str, Any],
        seq: int | None = None,
        received_at: str | None = None,
    ) -> asyncio.Future[bool]:
        """Queue an event; the future says whether it reached the socket."""
        event_id = app_event["id"]
        loop = asyncio.get_running_loop()
        if event_id in self._sent:
            done: asyncio.Future[bool] = loop.create_future()
            done.set_result(True)
            return done
        if self.closed:
            gone: asyncio.Future[bool] = loop.create_future()
            gone.set_result(False)
            return gone
        if event_id in self._pending:
            return self._pending[event_id]
        written: asyncio.Future[bool] = loop.create_future()
        self._pending[event_id] = written
        self.queue.put_nowait(Offer(app_event, written, seq, received_at))
        return written

    def should_send(self, event_id: str) -> bool:
        return event_id not in self._sent

    def mark_sent(self, event_id: str) -> None:
        self._sent.add(event_id)
        self._sent_order.append(event_id)
        if len(self._sent_order) > SENT_IDS_REMEMBERED:
            self._sent.discard(self._sent_order.popleft())
        pending = self._pending.pop(event_id, None)
        if pending is not None and not pending.done():
            pending.set_result(True)

    def close(self) -> None:
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_result(False)
        self._pending.clear()


class StreamLimitReached(Exception):
    """Too many streams, for the user or for this process."""


class StreamHub:
    def __init__(
        self,
        database_url: str,
        *,
        heartbeat_seconds: float,
        send_timeout_seconds: float,
        max_per_user: int = 10,
        max_per_process: int = 10_000,
    ) -> None:
        self.task_queue = f"cortex-streams-{uuid.uuid4().hex[:12]}"
        self._database_url = database_url
        self._heartbeat = heartbeat_seconds
        self._send_timeout = send_timeout_seconds
        self._max_per_user = max_per_user
        self._max_per_process = max_per_process
        self._streams: dict[str, dict[str, Stream]] = {}
        self._open = 0

    @property
    def open_streams(self) -> int:
        return self._open

    def streams_of(self, user_id: str) -> int:
        return len(self._streams.get(user_id, {}))

    def reserve(self, user_id: str) -> Stream:
        """Take a place for a new stream of the user, within the limits."""
        user_streams = self._streams.get(user_id, {})
        if len(user_streams) >= self._max_per_user:
            raise StreamLimitReached(f"at most {self._max_per_user} streams per user")
        if self._open >= self._max_per_process:
            raise StreamLimitReached("this server holds as many streams as it can")
        stream = Stream(id=uuid.uuid4().hex, user_id=user_id)
        self._streams.setdefault(user_id, {})[stream.id] = stream
        self._open += 1
        return stream

    async def register(self, stream: Stream) -> None:
        """Make the stream findable by delivery workflows. This is committed
        before the caller reads the replay, so an event stored after the replay
        query finds the stream in the registry: nothing falls between replay
        and live."""
        await asyncio.to_thread(self._register, stream)
        logger.debug("stream %s opened for user %s", stream.id, stream.user_id)

    async def close(self, stream: Stream) -> None:
        if stream.closed:
            return
        stream.close()
        self._open -= 1
        user_streams = self._streams.get(stream.user_id, {})
        user_streams.pop(stream.id, None)
        if not user_streams:
            self._streams.pop(stream.user_id, None)
        await asyncio.to_thread(self._unregister, stream.id)
        logger.debug("stream %s closed", stream.id)

    async def deliver(
        self,
        user_id: str,
        app_event: dict[str, Any],
        seq: int | None = None,
        received_at: str | None = None,
    ) -> int:
        """Write the event to every local stream of the user; count the writes."""
        streams = list(self._streams.get(user_id, {}).values())
        if not streams:
            return 0
        futures = [s.offer(app_event, seq, received_at) for s in streams]
        await asyncio.wait(futures, timeout=self._send_timeout)
        return sum(1 for f in futures if f.done() and f.result())

    @activity.defn(name="deliver_to_streams")
    async def deliver_to_streams(
        self, request: StreamDeliveryInput
    ) -> StreamDeliveryResult:
        delivered = await self.deliver(
            request.user_id, request.app_event, request.seq, request.received_at
        )
        return StreamDeliveryResult(delivered)

    async def keep_registered(self) -> None:
        """Refresh this process's registry row; rows of dead processes are swept."""
        while True:
            try:
                await asyncio.to_thread(self._refresh)
            except Exception:
                logger.exception("could not refresh the stream registry")
            await asyncio.sleep(self._heartbeat)

    async def unregister_process(self) -> None:
        await asyncio.to_thread(self._forget_process)

    def _register(self, stream: Stream) -> None:
        with session_for(self._database_url) as session:
            session.merge(
                StreamHolder(task_queue=self.task_queue, last_seen_at=utcnow())
            )
            session.add(
                StreamConnection(
                    id=stream.id, user_id=stream.user_id, task_queue=self.task_queue
                )
            )
            session.commit()

    def _unregister(self, stream_id: str) -> None:
        with session_for(self._database_url) as session:
            session.exec(
                delete(StreamConnection).where(col(StreamConnection.id) == stream_id)
            )  # type: ignore[call-overload]
            session.commit()

    def _refresh(self) -> None:
        stale_before = utcnow() - timedelta(seconds=10 * self._heartbeat)
        with session_for(self._database_url) as session:
            session.merge(
                StreamHolder(task_queue=self.task_queue, last_seen_at=utcnow())
            )
            stale = session.exec(
                StreamHolder.__table__.select().where(  # type: ignore[attr-defined]
                    col(StreamHolder.last_seen_at) < stale_before
                )
            ).all()
            for row in stale:
                self._delete_holder(session, row.task_queue)
            session.commit()

    def _forget_process(self) -> None:
        with session_for(self._database_url) as session:
            self._delete_holder(session, self.task_queue)
            session.commit()

    @staticmethod
    def _delete_holder(session: Any, task_queue: str) -> None:
        session.exec(
            delete(StreamConnection).where(
                col(StreamConnection.task_queue) == task_queue
            )
        )
        session.exec(
            delete(StreamHolder).where(col(StreamHolder.task_queue) == task_queue)
        )
