"""A test-side SSE reader over real TCP (httpx + httpx-sse), collecting frames."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse


@dataclass
class Frame:
    event: str
    id: str
    data: str
    at: float  # time.perf_counter() when it arrived

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class StreamReader:
    url: str
    headers: dict[str, str]
    frames: list[Frame] = field(default_factory=list)
    status: int | None = None
    _task: asyncio.Task | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> StreamReader:
        self._task = asyncio.create_task(self._read())
        await self.wait_for(lambda f: f.event == "connected", timeout=10)
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _read(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
            async with aconnect_sse(
                client, "GET", self.url, headers=self.headers
            ) as source:
                self.status = source.response.status_code
                if self.status != 200:
                    self._arrived.set()
                    return
                async for sse in source.aiter_sse():
                    if not sse.data:
                        # httpx-sse dispatches a comment-only block (our
                        # heartbeat) once an id was seen, repeating that id;
                        # the WHATWG parser dispatches nothing without data.
                        continue
                    self.frames.append(
                        Frame(sse.event, sse.id, sse.data, time.perf_counter())
                    )
                    self._arrived.set()

    def events(self) -> list[Frame]:
        """Frames that carry an event (not connected/resync)."""
        return [f for f in self.frames if f.id]

    def ids(self) -> list[str]:
        return [f.id for f in self.events()]

    async def wait_for(self, match: Any, timeout: float = 10) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            for frame in self.frames:
                if match(frame):
                    return frame
            if self._task and self._task.done():
                error = self._task.exception() if not self._task.cancelled() else None
                raise AssertionError(f"stream ended (status {self.status}): {error!r}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no matching frame within {timeout} s: {self.frames}"
                )
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass
