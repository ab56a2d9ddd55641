"""Benchmark 3: pushes per second against a loopback server that speaks
Expo's protocol and, like Expo, answers 429 above 600 notifications a second.

    .venv/bin/python -m bench.push_throughput --events 40 --tokens 100 --workers 2

``--workers`` push activities run at once, each with its own rate limiter on
the shared database, as separate worker processes would. Every event goes to
every token of its user; the server's log shows whether anything was lost,
sent twice, or refused.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from temporalio.testing import ActivityEnvironment

from activities.expo_client import ExpoClient
from activities.push import PushActivities
from activities.push_rate import PushRateLimiter
from bench.common import Report, results_folder, stop_cleanly_on_sigterm
from cortex.db import session_for
from cortex.models import Event, PushToken, utcnow
from cortex.shared import PushInput
from tests.expo_server import ExpoServer


def _seed(database_url: str, events: int, tokens: int) -> list[tuple[int, list[str]]]:
    plan = []
    with session_for(database_url) as session:
        for n in range(events):
            user = f"push-bench-{n}"
            names = [
                f"ExponentPushToken[{uuid.uuid4().hex[:22]}]" for _ in range(tokens)
            ]
            session.add_all(
                PushToken(user_id=user, token=t, platform="android") for t in names
            )
            event = Event(
                idempotency_key=f"bench:{uuid.uuid4()}",
                user_id=user,
                seq=1,
                type="bench.push",
                title="Bench",
                body="push throughput",
                source="bench",
                workflow_id="w",
                workflow_run_id="r",
                received_at=utcnow(),
            )
            session.add(event)
            session.flush()
            plan.append((event.id, names))
        session.commit()
    return plan


def run(events: int, tokens: int, workers: int, limit: int, folder: Path) -> Report:
    scratch = folder / "push-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "push.db").unlink(missing_ok=True)
    database_url = f"sqlite:///{scratch / 'push.db'}"
    plan = _seed(database_url, events, tokens)
    report = Report("push_throughput", folder)
    with ExpoServer() as expo:
        expo.state.per_second_limit = limit
        pushers = [
            PushActivities(
                database_url, ExpoClient(expo.url), PushRateLimiter(database_url, limit)
            )
            for _ in range(workers)
        ]

        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            results = list(
                pool.map(
                    _send,
                    [(pushers[i % workers], plan[i][0]) for i in range(len(plan))],
                )
            )
        seconds = time.perf_counter() - started

        sent = Counter(m["to"] for m in expo.state.sent)
        expected = {t for _, names in plan for t in names}
        per_second = sorted(expo.state.accepted_per_second.values())
        log = expo.state.accepted_log
        sliding = max(
            (sum(n for t, n in log if start <= t < start + 1) for start, _ in log),
            default=0,
        )
        report.rows.append(
            {
                "notifications": len(expected),
                "workers": workers,
                "seconds": round(seconds, 2),
                "pushes/s": round(len(sent) / seconds, 1),
                "busiest clock second": per_second[-1] if per_second else 0,
                "busiest 1 s window": sliding,
                "429 answers": expo.state.rejected_429,
                "lost": len(expected - set(sent)),
                "sent twice": sum(1 for n in sent.values() if n > 1),
                "ok tickets": sum(r.ok for r in results),
            }
        )
        seconds_seen = sorted(expo.state.accepted_per_second)
        report.write(
            [
                (
                    "notifications accepted per wall-clock second",
                    "second of the run",
                    "notifications",
                    {
                        "accepted": (
                            [s - seconds_seen[0] for s in seconds_seen],
                            [expo.state.accepted_per_second[s] for s in seconds_seen],
                        ),
                        f"Expo limit ({limit}/s)": (
                            [0, max(1, len(seconds_seen) - 1)],
                            [limit, limit],
                        ),
                    },
                )
            ]
        )
    return report


def _send(job: tuple[PushActivities, int]) -> Any:
    # ActivityEnvironment gives the activity the context it heartbeats to,
    # without a Temporal server: this measures push alone.
    pusher, event_id = job
    return ActivityEnvironment().run(pusher.send_push, PushInput(event_id))


def main() -> None:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument(
        "--tokens", type=int, default=100, help="tokens per event's user"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=600)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    folder = Path(args.out) if args.out else results_folder()
    print(run(args.events, args.tokens, args.workers, args.limit, folder).markdown())


if __name__ == "__main__":
    main()
