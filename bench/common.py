"""What every benchmark shares: a fresh embedded stack, a results folder with
JSON, a Markdown table and PNG plots, and the machine it ran on."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import psutil  # noqa: E402

from cortex.devstack import dev_server_command, free_port, wait_for_port  # noqa: E402
from cortex.stack_runner import Process, Stack  # noqa: E402


def stop_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so a benchmark that is stopped still
    stops the servers it started (their context managers run)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def rss_bytes(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


@dataclass
class Report:
    """One benchmark run: rows for the table, series for the plots."""

    name: str
    folder: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def write(
        self, plots: Sequence[tuple[str, str, str, dict[str, tuple[list, list]]]] = ()
    ) -> Path:
        """Write ``<name>.json``, ``<name>.md`` and one PNG per plot
        (title, x label, y label, {series: (xs, ys)})."""
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": self.name,
            "machine": machine(),
            "rows": self.rows,
            **self.extra,
        }
        (self.folder / f"{self.name}.json").write_text(
            json.dumps(payload, indent=2, default=str)
        )
        (self.folder / f"{self.name}.md").write_text(self.markdown())
        for index, (title, xlabel, ylabel, series) in enumerate(plots):
            figure, axes = plt.subplots(figsize=(7, 4))
            for label, (xs, ys) in series.items():
                axes.plot(xs, ys, marker="o", label=label)
            axes.set_title(title)
            axes.set_xlabel(xlabel)
            axes.set_ylabel(ylabel)
            axes.grid(alpha=0.3)
            axes.legend()
            figure.tight_layout()
            figure.savefig(self.folder / f"{self.name}-{index + 1}.png", dpi=110)
            plt.close(figure)
        return self.folder / f"{self.name}.md"

    def markdown(self) -> str:
        if not self.rows:
            return f"## {self.name}\n\n(no rows)\n"
        columns = list(self.rows[0])
        lines = [
            f"## {self.name}",
            "",
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
        ]
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


class EmbeddedStack:
    """A Temporal dev server of its own (SQLite file, WAL pragmas), a worker
    and ``apis`` API processes, in ``workdir``."""

    def __init__(self, workdir: Path, apis: int = 1, **settings: Any) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.temporal_port = free_port()
        self.temporal = Process(
            "temporal",
            dev_server_command(
                workdir / "temporal.db", port=self.temporal_port, ui_port=None
            ),
            dict(os.environ),
            workdir / "temporal.log",
        )
        self.stack = Stack(workdir, f"127.0.0.1:{self.temporal_port}", **settings)
        self.api_count = apis
        self.urls: list[str] = []

    def __enter__(self) -> EmbeddedStack:
        self.temporal.start()
        wait_for_port("127.0.0.1", self.temporal_port, timeout=60)
        self.stack.start_worker()
        self.urls = [self.stack.start_api() for _ in range(self.api_count)]
        for url in self.urls:
            self.stack.wait_ready(url, timeout=60)
        return self

    def __exit__(self, *_: Any) -> None:
        self.stack.stop()
        self.temporal.stop()

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"


def results_folder(base: str | None = None) -> Path:
    root = Path(base or "bench/results")
    return root / time.strftime("%Y%m%d-%H%M%S")


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def publish_one_each(
    url: str, api_key: str, users: Sequence[str], kind: str
) -> list[httpx.Response]:
    """One event for each user, all at once, through ``POST /v3/events``."""
    async with httpx.AsyncClient(
        timeout=60, limits=httpx.Limits(max_connections=50)
    ) as http:
        return await asyncio.gather(
            *(
                http.post(
                    f"{url}/v3/events",
                    json={
                        "userId": user,
                        "type": kind,
                        "title": kind,
                        "idempotencyKey": user,
                    },
                    headers={"x-api-key": api_key},
                )
                for user in users
            )
        )
