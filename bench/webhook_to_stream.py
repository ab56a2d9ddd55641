"""Webhook-to-stream latency on a running stack: one event at a time.

    make run                                  # in one terminal
    .venv/bin/python -m bench.webhook_to_stream --count 20

Opens a stream for a fresh user, sends ``--count`` signed sample webhooks one
after another, and prints each latency (webhook POST sent -> frame read) and
the median, p95 and max. The stream ACKs nothing, so each event also waits
out its ACK window in Temporal, as a real unacked event would.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid

import httpx
from httpx_sse import connect_sse

from api.auth import issue_token
from cortex.cli import sample_webhook
from cortex.settings import get_settings


def measure(api: str, count: int) -> list[float]:
    user = f"bench-{uuid.uuid4().hex[:8]}"
    headers = {"authorization": f"Bearer {issue_token(get_settings(), user)}"}
    arrived: dict[str, float] = {}
    connected = threading.Event()

    def read() -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=None)) as client:
            with connect_sse(
                client, "GET", f"{api}/v3/realtime/stream", headers=headers
            ) as source:
                for frame in source.iter_sse():
                    if frame.event == "connected":
                        connected.set()
                    elif frame.id and frame.data:
                        arrived[json.loads(frame.data)["data"]["messageId"]] = (
                            time.perf_counter()
                        )

    threading.Thread(target=read, daemon=True).start()
    if not connected.wait(10):
        raise SystemExit("could not open a stream: is the stack running?")

    latencies = []
    with httpx.Client() as client:
        for _ in range(count):
            webhook_headers, body = sample_webhook(user)
            message_id = json.loads(body)["data"]["message_id"]
            sent = time.perf_counter()
            response = client.post(
                f"{api}/proactive/webhook", headers=webhook_headers, content=body
            )
            response.raise_for_status()
            deadline = time.monotonic() + 10
            while message_id not in arrived:
                if time.monotonic() > deadline:
                    raise SystemExit(f"event {message_id} did not arrive within 10 s")
                time.sleep(0.001)
            latencies.append((arrived[message_id] - sent) * 1000)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    latencies = measure(args.api, args.count)
    ordered = sorted(latencies)
    print("latencies ms:", " ".join(f"{x:.1f}" for x in latencies))
    print(
        f"webhook-to-stream over {len(latencies)} events: "
        f"median {statistics.median(latencies):.1f} ms, "
        f"p95 {ordered[max(0, int(len(ordered) * 0.95) - 1)]:.1f} ms, max {ordered[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
