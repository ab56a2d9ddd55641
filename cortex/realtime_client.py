"""A Python client of the stream, with the state machine the app uses.

connect -> open -> (connection lost) reconnecting -> open ...
                                    `-> degraded ("push only") after repeated failures

It resumes with the highest event id it has seen (ids grow per user), drops a
second copy of an event by id, ACKs what its handler took, backs off 1 s, 2 s,
4 s ... up to 30 s with jitter, and treats a silent connection (no byte, not
even a heartbeat, for a few heartbeats) as lost.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx
from httpx_sse import aconnect_sse

logger = logging.getLogger(__name__)

EventHandler = Callable[[dict[str, Any]], Awaitable[None] | None]
StateHandler = Callable[["ConnectionState"], Awaitable[None] | None]


CATCH_UP_PAGES = 20  # at most 10,000 events read back after a resync


class ConnectionState(StrEnum):
    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    DEGRADED = "degraded"  # streaming keeps failing: rely on push until it recovers
    CLOSED = "closed"


class StreamRefused(Exception):
    """The server refused the stream for a reason retrying cannot fix (401, 403)."""


@dataclass
class RealtimeClient:
    base_url: str
    token: str | Callable[[], str]
    on_event: EventHandler
    on_state: StateHandler | None = None
    on_resync: Callable[[str], Awaitable[None] | None] | None = None
    ack: bool = True
    last_event_id: str | None = None
    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    jitter: float = 0.2
    failures_before_degraded: int = 5
    # No byte for this long means the connection is dead; the server's
    # heartbeat (announced in the "connected" frame) shortens it on connect.
    silence_timeout: float = 45.0
    remember_ids: int = 10_000

    state: ConnectionState = field(default=ConnectionState.CONNECTING, init=False)
    failures: int = field(default=0, init=False)
    _seen: OrderedDict[str, None] = field(default_factory=OrderedDict, init=False)
    _closing: bool = field(default=False, init=False)
    _response: httpx.Response | None = field(default=None, init=False)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before reconnect ``attempt`` (1-based)."""
        delay = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return delay * random.uniform(1 - self.jitter, 1 + self.jitter)

    async def run(self) -> None:
        """Stream until ``close()``; reconnects on its own."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            while not self._closing:
                try:
                    await self._stream_once(http)
                    error: BaseException | None = None
                except StreamRefused:
                    await self._set_state(ConnectionState.CLOSED)
                    raise
                except (httpx.HTTPError, OSError, ValueError) as caught:
                    error = caught
                if self._closing:
                    break
                self.failures += 1
                logger.info(
                    "stream lost (%s); attempt %d", error or "closed", self.failures
                )
                degraded = self.failures >= self.failures_before_degraded
                await self._set_state(
                    ConnectionState.DEGRADED
                    if degraded
                    else ConnectionState.RECONNECTING
                )
                await asyncio.sleep(
                    getattr(error, "retry_after", None) or self.backoff(self.failures)
                )
        await self._set_state(ConnectionState.CLOSED)

    async def close(self) -> None:
        self._closing = True
        if self._response is not None:
            await self._response.aclose()

    def drop_connection(self) -> None:
        """Close the current connection as if the network dropped it (tests, app
        going to the background); ``run`` reconnects and resumes."""
        if self._response is not None:
            asyncio.ensure_future(self._response.aclose())

    async def _stream_once(self, http: httpx.AsyncClient) -> None:
        headers = {"authorization": f"Bearer {self._token()}"}
        if self.last_event_id:
            headers["last-event-id"] = self.last_event_id
        timeout = httpx.Timeout(10, read=self.silence_timeout)
        async with aconnect_sse(
            http, "GET", "/v3/realtime/stream", headers=headers, timeout=timeout
        ) as source:
            response = source.response
            if response.status_code in (401, 403):
                raise StreamRefused(f"stream refused: HTTP {response.status_code}")
            if response.status_code != 200:
                error = httpx.HTTPStatusError(
                    f"stream answered HTTP {response.status_code}",
                    request=response.request,
                    response=response,
                )
                retry_after = response.headers.get("retry-after", "")
                error.retry_after = (
                    float(retry_after) if retry_after.isdigit() else None
                )  # type: ignore[attr-defined]
                raise error
            self._response = response
            try:
                async for frame in source.aiter_sse():
                    await self._on_frame(http, frame.event, frame.id, frame.data)
            finally:
                self._response = None

    async def _on_frame(
        self, http: httpx.AsyncClient, kind: str, frame_id: str, data: str
    ) -> None:
        if not data:
            return  # a heartbeat comment that httpx-sse reports as an event
        if kind == "connected":
            self.failures = 0
            self.silence_timeout = 3 * json.loads(data)["heartbeatSeconds"]
            await self._set_state(ConnectionState.OPEN)
            return
        if kind == "resync":
            reason = json.loads(data).get("reason", "")
            if self.on_resync is not None:
                await _maybe_await(self.on_resync(reason))
            await self._catch_up(http)
            return
        if frame_id:
            await self._handle(http, json.loads(data))

    async def _handle(self, http: httpx.AsyncClient, event: dict[str, Any]) -> None:
        event_id = event["id"]
        if event_id in self._seen:
            return
        self._remember(event_id)
        await _maybe_await(self.on_event(event))
        if self.last_event_id is None or int(event_id) > int(self.last_event_id):
            self.last_event_id = event_id
        if self.ack:
            response = await http.post(
                "/v3/events/ack",
                json={"eventId": event_id},
                headers={"authorization": f"Bearer {self._token()}"},
            )
            response.raise_for_status()

    async def _catch_up(self, http: httpx.AsyncClient) -> None:
        """The server could not vouch for the gap: read what came after the
        last event we have from the events API, in order, before going on."""
        after = self.last_event_id if (self.last_event_id or "").isdigit() else "0"
        for _ in range(CATCH_UP_PAGES):
            response = await http.get(
                f"/v3/events/since/{after}",
                params={"limit": 500},
                headers={"authorization": f"Bearer {self._token()}"},
            )
            response.raise_for_status()
            page = response.json()
            for event in page["events"]:
                await self._handle(http, event)
                after = event["id"]
            if not page["hasMore"]:
                return

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        if len(self._seen) > self.remember_ids:
            self._seen.popitem(last=False)

    def _token(self) -> str:
        return self.token() if callable(self.token) else self.token

    async def _set_state(self, state: ConnectionState) -> None:
        if state == self.state:
            return
        self.state = state
        if self.on_state is not None:
            await _maybe_await(self.on_state(state))


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result
