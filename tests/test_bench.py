"""Tiny runs of the benchmarks, so the harness keeps working. They check that
each run writes its JSON, table and plots and that nothing was lost; they
assert no time: speed is what the full runs print (docs/performance.md)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import connections, latency_throughput, push_throughput


def _written(folder: Path, name: str, plots: int) -> dict:
    assert (folder / f"{name}.md").read_text().startswith(f"## {name}")
    for index in range(1, plots + 1):
        assert (folder / f"{name}-{index}.png").stat().st_size > 1000
    return json.loads((folder / f"{name}.json").read_text())


async def test_latency_and_throughput_harness(tmp_path: Path) -> None:
    await latency_throughput.run([3], 2, 2, tmp_path)
    result = _written(tmp_path, "latency_throughput", 2)
    systems = {row["system"]: row for row in result["rows"]}
    assert set(systems) == {"cortex", "engine ceiling"}
    for row in systems.values():
        assert row["sent"] == 6 and row["lost"] == 0
    assert result["machine"]["cpus"] >= 1


async def test_connections_harness(tmp_path: Path) -> None:
    await connections.run([20], 5, tmp_path)
    result = _written(tmp_path, "connections", 1)
    assert {row["server"] for row in result["rows"]} == {
        "cortex API",
        "bare sse-starlette",
        "raw asyncio",
    }
    assert all(
        row["streams"] == 20 and row["streams missing heartbeats"] == 0
        for row in result["rows"]
    )
    assert result["fanout"]["arrived"] == 5


def test_push_harness(tmp_path: Path) -> None:
    push_throughput.run(events=3, tokens=10, workers=2, limit=600, folder=tmp_path)
    [row] = _written(tmp_path, "push_throughput", 1)["rows"]
    assert (
        row["notifications"],
        row["lost"],
        row["sent twice"],
        row["ok tickets"],
    ) == (30, 0, 0, 30)


async def test_recovery_harness(tmp_path: Path) -> None:
    from bench import recovery

    await recovery.run(users=4, per_user=2, folder=tmp_path)
    [row] = _written(tmp_path, "recovery", 1)["rows"]
    assert row["clients"] == row["open before kill"] == 8
    assert (row["received once"], row["missing"], row["duplicates"]) == (8, 0, 0)
