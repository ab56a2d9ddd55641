"""Benchmark 2: idle streams held by one process, heartbeats on time, memory
per stream, beside a bare sse-starlette endpoint and a raw asyncio server;
then one event to each of many users, timed until the last arrives.

    .venv/bin/python -m bench.connections --counts 1000 5000 10000 --fanout 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    EmbeddedStack,
    Report,
    percentile,
    publish_one_each,
    results_folder,
    rss_bytes,
    stop_cleanly_on_sigterm,
)
from cortex.devstack import free_port, wait_for_port

HEARTBEAT = 2.0
WATCH_HEARTBEATS = 3


class IdleClient:
    """One raw TCP stream reader: notes when each heartbeat and event arrives."""

    def __init__(self) -> None:
        self.heartbeats: list[float] = []
        self.events: list[tuple[str, float]] = []
        self.connected = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None

    async def run(self, port: int, headers: str) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(
            f"GET /v3/realtime/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()
        )
        while True:
            line = await reader.readline()
            if not line:
                return
            if b"event: connected" in line:
                self.connected.set()
            elif line.startswith(b": heartbeat"):
                self.heartbeats.append(time.perf_counter())
            elif line.startswith(b"id: "):
                self.events.append((line[4:].strip().decode(), time.perf_counter()))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _hold(port: int, pid: int, count: int, headers_for: Any) -> dict[str, Any]:
    before = rss_bytes(pid)
    clients = [IdleClient() for _ in range(count)]
    tasks = []
    started = time.perf_counter()
    for start in range(0, count, 200):  # connect in waves, as phones would
        batch = clients[start : start + 200]
        tasks += [
            asyncio.create_task(c.run(port, headers_for(start + i)))
            for i, c in enumerate(batch)
        ]
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in batch)), 60)
    connect_seconds = time.perf_counter() - started
    await asyncio.sleep(HEARTBEAT * WATCH_HEARTBEATS + 0.5)
    after = rss_bytes(pid)

    # Heartbeat punctuality: each gap between two heartbeats of one stream,
    # against the configured period.
    lateness = [
        abs((b - a) - HEARTBEAT) * 1000
        for c in clients
        for a, b in zip(c.heartbeats, c.heartbeats[1:])
    ]
    missing = sum(1 for c in clients if len(c.heartbeats) < WATCH_HEARTBEATS - 1)
    for c in clients:
        c.close()
    for task in tasks:
        task.cancel()
    return {
        "streams": count,
        "KB per stream": round((after - before) / count / 1024, 1),
        "connect s": round(connect_seconds, 1),
        "heartbeat off p99 ms": round(percentile(lateness, 0.99), 1),
        "heartbeat off max ms": round(max(lateness, default=float("nan")), 1),
        "streams missing heartbeats": missing,
    }


def _reference(kind: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_servers", kind, str(port), str(HEARTBEAT)]
    )
    wait_for_port("127.0.0.1", port, timeout=30)
    return process, port


async def _fanout(stack: EmbeddedStack, users: int) -> dict[str, Any]:
    url = stack.urls[0]
    port = int(url.rsplit(":", 1)[1])
    names = [f"fan-{uuid.uuid4().hex[:6]}-{i}" for i in range(users)]
    clients = [IdleClient() for _ in names]
    tasks = [
        asyncio.create_task(
            c.run(port, f"Authorization: Bearer {stack.stack.token(n)}\r\n")
        )
        for c, n in zip(clients, names)
    ]
    await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), 120)
    started = time.perf_counter()
    await publish_one_each(url, stack.stack.settings.api_keys[0], names, "bench.fanout")
    deadline = time.monotonic() + 300
    while any(not c.events for c in clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    arrivals = [c.events[0][1] - started for c in clients if c.events]
    for c in clients:
        c.close()
    for task in tasks:
        task.cancel()
    return {
        "users": users,
        "arrived": len(arrivals),
        "first s": round(min(arrivals), 2),
        "median s": round(statistics.median(arrivals), 2),
        "last s": round(max(arrivals), 2),
        "events/s": round(len(arrivals) / max(arrivals), 1),
    }


async def run(counts: list[int], fanout_users: int, folder: Path) -> Report:
    _raise_file_limit()
    report = Report("connections", folder)
    with EmbeddedStack(
        folder / "stack",
        heartbeat_seconds=HEARTBEAT,
        stream_max_per_process=max(counts) + fanout_users,
    ) as stack:
        tokens = {}

        def ours(i: int) -> str:
            if i not in tokens:
                tokens[i] = stack.stack.token(f"idle-{i}")
            return f"Authorization: Bearer {tokens[i]}\r\n"

        for count in counts:
            # A fresh API process per count, as the references get: memory a
            # process grew for an earlier count would hide the cost of this one.
            url = stack.stack.start_api()
            stack.stack.wait_ready(url, timeout=60)
            process = stack.stack.apis[-1][0]
            row = await _hold(
                int(url.rsplit(":", 1)[1]), process.popen.pid, count, ours
            )
            report.rows.append({"server": "cortex API", **row})
            process.stop()
        fan = await _fanout(stack, fanout_users)
        report.extra["fanout"] = fan
        report.notes.append(
            f"one event to each of {fan['users']} users (through {fan['users']} delivery "
            f"workflows): first {fan['first s']} s, median {fan['median s']} s, "
            f"last {fan['last s']} s"
        )

    for kind, label in (
        ("sse-starlette", "bare sse-starlette"),
        ("raw", "raw asyncio"),
    ):
        for count in counts:
            process, port = _reference(kind)
            try:
                row = await _hold(port, process.pid, count, lambda i: "")
            finally:
                process.terminate()
                process.wait(10)
            report.rows.append({"server": label, **row})

    series = {
        label: (
            counts,
            [r["KB per stream"] for r in report.rows if r["server"] == label],
        )
        for label in ("cortex API", "bare sse-starlette", "raw asyncio")
    }
    report.write([("memory per idle stream", "streams held", "KB per stream", series)])
    return report


def main() -> None:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--fanout", type=int, default=500)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    report = asyncio.run(
        run(args.counts, args.fanout, Path(args.out) if args.out else results_folder())
    )
    print(report.markdown())
    print(json.dumps(report.extra, indent=2))


if __name__ == "__main__":
    main()
