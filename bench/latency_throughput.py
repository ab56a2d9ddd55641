"""Benchmark 1: webhook-to-stream latency and throughput at rising rates,
beside the engine's ceiling measured on the same Temporal server.

    .venv/bin/python -m bench.latency_throughput --rates 5 10 20 30 --seconds 8

For each rate, signed webhooks go out open-loop (on schedule, whatever the
answers) to users whose streams are open; each stream ACKs what it gets.
Latency is webhook POST sent -> frame read. The achieved rate is events
delivered / (last arrival - first send). Then the same schedule drives the
ceiling workflow (bench/ceiling.py) on the same server, and our achieved
rate is reported as a share of the ceiling's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from bench.ceiling import CeilingWorkflow, noop
from bench.common import (
    EmbeddedStack,
    Report,
    percentile,
    results_folder,
    stop_cleanly_on_sigterm,
)
from cortex.cli import sample_webhook

DRAIN_SECONDS = 15


async def _read_stream(
    url: str, headers: dict[str, str], arrived: dict[str, float], ready: asyncio.Event
) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http:
        async with aconnect_sse(
            http, "GET", f"{url}/v3/realtime/stream", headers=headers
        ) as source:
            async for frame in source.aiter_sse():
                if frame.event == "connected":
                    ready.set()
                elif frame.id and frame.data:
                    arrived[json.loads(frame.data)["data"]["messageId"]] = (
                        time.perf_counter()
                    )
                    await http.post(
                        f"{url}/v3/events/ack",
                        json={"eventId": frame.id},
                        headers=headers,
                    )


async def _schedule(rate: float, seconds: float, send: Any) -> None:
    """Call ``send(n)`` ``rate`` times a second for ``seconds``, open-loop."""
    start = time.perf_counter()
    tasks = []
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(n)))
    await asyncio.gather(*tasks, return_exceptions=True)


def _summarise(
    system: str, rate: float, sent: dict[str, float], arrived: dict[str, float]
) -> dict[str, Any]:
    latencies = [(arrived[k] - t) * 1000 for k, t in sent.items() if k in arrived]
    first = min(sent.values()) if sent else 0
    last = max((arrived[k] for k in sent if k in arrived), default=first)
    return {
        "system": system,
        "target/s": rate,
        "sent": len(sent),
        "delivered": len(latencies),
        "lost": len(sent) - len(latencies),
        "achieved/s": round(len(latencies) / (last - first), 1)
        if last > first
        else 0.0,
        "p50 ms": round(percentile(latencies, 0.50), 1),
        "p95 ms": round(percentile(latencies, 0.95), 1),
        "p99 ms": round(percentile(latencies, 0.99), 1),
    }


async def _ours(
    stack: EmbeddedStack, rates: list[float], seconds: float, users: int
) -> list[dict[str, Any]]:
    url = stack.urls[0]
    arrived: dict[str, float] = {}
    names = [f"bench-{uuid.uuid4().hex[:6]}-{i}" for i in range(users)]
    readers = []
    for name in names:
        ready = asyncio.Event()
        readers.append(
            asyncio.create_task(
                _read_stream(url, stack.stack.auth(name), arrived, ready)
            )
        )
        await asyncio.wait_for(ready.wait(), 10)
    rows = []
    async with httpx.AsyncClient(timeout=30) as http:
        for rate in rates:
            sent: dict[str, float] = {}

            async def send(n: int) -> None:
                headers, body = sample_webhook(names[n % users])
                message_id = json.loads(body)["data"]["message_id"]
                sent[message_id] = time.perf_counter()
                await http.post(
                    f"{url}/proactive/webhook", headers=headers, content=body
                )

            await _schedule(rate, seconds, send)
            deadline = time.monotonic() + DRAIN_SECONDS
            while any(k not in arrived for k in sent) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            rows.append(_summarise("cortex", rate, sent, arrived))
    for reader in readers:
        reader.cancel()
    return rows


async def _ceiling(
    address: str, rates: list[float], seconds: float
) -> list[dict[str, Any]]:
    client = await Client.connect(address)
    queue, live_queue = (
        f"ceiling-{uuid.uuid4().hex[:6]}",
        f"ceiling-live-{uuid.uuid4().hex[:6]}",
    )
    arrived: dict[str, float] = {}

    @activity.defn(name="deliver")
    async def deliver() -> None:
        workflow_id = activity.info().workflow_id
        arrived[workflow_id] = time.perf_counter()
        # The app's ACK, as our stream reader sends it.
        asyncio.get_running_loop().create_task(
            client.get_workflow_handle(workflow_id).signal(CeilingWorkflow.ack)
        )

    rows = []
    with ThreadPoolExecutor(4):
        async with (
            Worker(
                client, task_queue=queue, workflows=[CeilingWorkflow], activities=[noop]
            ),
            Worker(client, task_queue=live_queue, activities=[deliver]),
        ):
            for rate in rates:
                sent: dict[str, float] = {}

                async def send(n: int) -> None:
                    workflow_id = f"ceiling-{uuid.uuid4().hex}"
                    sent[workflow_id] = time.perf_counter()
                    await client.start_workflow(
                        CeilingWorkflow.run,
                        live_queue,
                        id=workflow_id,
                        task_queue=queue,
                    )

                await _schedule(rate, seconds, send)
                deadline = time.monotonic() + DRAIN_SECONDS
                while (
                    any(k not in arrived for k in sent) and time.monotonic() < deadline
                ):
                    await asyncio.sleep(0.1)
                rows.append(_summarise("engine ceiling", rate, sent, arrived))
    return rows


async def run(rates: list[float], seconds: float, users: int, folder: Path) -> Report:
    report = Report("latency_throughput", folder)
    with EmbeddedStack(folder / "stack", heartbeat_seconds=15) as stack:
        ours = await _ours(stack, rates, seconds, users)
        ceiling = await _ceiling(stack.temporal_address, rates, seconds)
    for mine, engine in zip(ours, ceiling, strict=True):
        mine["share of ceiling"] = (
            round(mine["achieved/s"] / engine["achieved/s"], 2)
            if engine["achieved/s"]
            else None
        )
        engine["share of ceiling"] = 1.0
        report.rows += [mine, engine]
    best_ours = max(r["achieved/s"] for r in ours)
    best_ceiling = max(r["achieved/s"] for r in ceiling)
    report.extra["peak"] = {"cortex/s": best_ours, "ceiling/s": best_ceiling}
    report.notes.append(
        f"peak achieved: cortex {best_ours}/s, engine ceiling {best_ceiling}/s "
        f"({best_ours / best_ceiling:.0%} of the ceiling)"
        if best_ceiling
        else "no ceiling measured"
    )
    report.write(
        [
            (
                "webhook-to-stream latency",
                "target events/s",
                "ms",
                {
                    "cortex p50": (rates, [r["p50 ms"] for r in ours]),
                    "cortex p99": (rates, [r["p99 ms"] for r in ours]),
                    "ceiling p50": (rates, [r["p50 ms"] for r in ceiling]),
                },
            ),
            (
                "achieved throughput",
                "target events/s",
                "events/s",
                {
                    "cortex": (rates, [r["achieved/s"] for r in ours]),
                    "engine ceiling": (rates, [r["achieved/s"] for r in ceiling]),
                },
            ),
        ]
    )
    return report


def main() -> None:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument(
        "--out", default=None, help="results folder (default bench/results/<time>)"
    )
    args = parser.parse_args()
    report = asyncio.run(
        run(
            args.rates,
            args.seconds,
            args.users,
            Path(args.out) if args.out else results_folder(),
        )
    )
    print(report.markdown())


if __name__ == "__main__":
    main()
