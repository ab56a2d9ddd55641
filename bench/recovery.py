"""Benchmark 4: many connected clients, one API process killed: how long
until every client streams again, and is every event accounted for?

    .venv/bin/python -m bench.recovery --users 100 --clients-per-user 10

Two API processes behind nginx (the documented config); the clients are
RealtimeClients. One API process is SIGKILLed; the clients it held reconnect
through nginx to the other. Then one event per user is published and each
client must receive its user's event exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path

from bench.common import (
    EmbeddedStack,
    Report,
    percentile,
    publish_one_each,
    results_folder,
    rss_bytes,
    stop_cleanly_on_sigterm,
)
from cortex.devstack import free_port
from cortex.realtime_client import ConnectionState, RealtimeClient
from cortex.stack_runner import Nginx


async def run(users: int, per_user: int, folder: Path) -> Report:
    report = Report("recovery", folder)
    with EmbeddedStack(
        folder / "stack", apis=2, heartbeat_seconds=5, stream_max_per_user=per_user + 5
    ) as stack:
        ports = [int(u.rsplit(":", 1)[1]) for u in stack.urls]
        with Nginx(folder / "nginx", ports, free_port()) as nginx:
            names = [f"rec-{uuid.uuid4().hex[:6]}-{i}" for i in range(users)]
            got: dict[int, list[str]] = {}
            reopened: dict[int, float] = {}
            killed_at = 0.0
            clients = []
            for u, name in enumerate(names):
                for c in range(per_user):
                    index = u * per_user + c
                    got[index] = []

                    def on_state(state: ConnectionState, index: int = index) -> None:
                        if (
                            state == ConnectionState.OPEN
                            and killed_at
                            and index not in reopened
                        ):
                            reopened[index] = time.perf_counter() - killed_at

                    clients.append(
                        RealtimeClient(
                            nginx.url,
                            stack.stack.token(name),
                            on_event=lambda e, box=got[index]: box.append(e["id"]),
                            on_state=on_state,
                            ack=False,
                        )
                    )
            runs = []
            for start in range(0, len(clients), 100):
                runs += [
                    asyncio.create_task(c.run()) for c in clients[start : start + 100]
                ]
                await asyncio.sleep(0.5)
            deadline = time.monotonic() + 120
            while (
                any(c.state != ConnectionState.OPEN for c in clients)
                and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.2)
            open_before = sum(c.state == ConnectionState.OPEN for c in clients)
            api_rss = [rss_bytes(p.popen.pid) for p, _ in stack.stack.apis]

            victim = stack.stack.apis[0][0]
            killed_at = time.perf_counter()
            victim.kill()
            await asyncio.sleep(0.5)
            lost_connection = [
                i
                for i, c in enumerate(clients)
                if c.state != ConnectionState.OPEN or i in reopened
            ]
            deadline = time.monotonic() + 120
            while (
                any(c.state != ConnectionState.OPEN for c in clients)
                and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.1)
            all_back = time.perf_counter() - killed_at

            responses = await publish_one_each(
                nginx.url, stack.stack.settings.api_keys[0], names, "bench.recovery"
            )
            assert all(r.status_code == 202 for r in responses)
            deadline = time.monotonic() + 120
            while (
                any(len(box) < 1 for box in got.values())
                and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.2)
            for client in clients:
                await client.close()
            await asyncio.gather(*runs, return_exceptions=True)

    moved = [reopened[i] for i in lost_connection if i in reopened]
    report.rows.append(
        {
            "clients": len(clients),
            "open before kill": open_before,
            "on the killed process": len(lost_connection),
            "reconnect p50 s": round(percentile(moved, 0.5), 2),
            "reconnect p99 s": round(percentile(moved, 0.99), 2),
            "all streaming again s": round(all_back, 2),
            "events expected": len(clients),
            "received once": sum(len(b) == 1 for b in got.values()),
            "missing": sum(len(b) == 0 for b in got.values()),
            "duplicates": sum(len(b) > 1 for b in got.values()),
            "API RSS MB": "/".join(str(round(r / 2**20)) for r in api_rss),
        }
    )
    ordered = sorted(moved)
    report.write(
        [
            (
                "reconnection after an API process is killed",
                "clients (sorted)",
                "seconds until streaming again",
                {"reconnect": (list(range(len(ordered))), ordered)},
            )
        ]
    )
    return report


def main() -> None:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--clients-per-user", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    folder = Path(args.out) if args.out else results_folder()
    print(asyncio.run(run(args.users, args.clients_per_user, folder)).markdown())


if __name__ == "__main__":
    main()
