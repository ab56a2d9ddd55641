"""Shared test fixtures: a real Temporal dev server, real processes, real TCP.

One dev server per session; each test module that needs the full stack starts
its own worker and API processes with their own database file and task queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.auth import issue_token
from api.webhook_verifier import sign, signing_keys
from cortex.devstack import free_port, installed_binary, wait_for_port
from cortex.settings import Settings
from cortex.shared import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
COMPOSIO = FIXTURES / "composio"


def fixture_json(*parts: str) -> Any:
    return json.loads(FIXTURES.joinpath(*parts).read_text())


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 10, interval: float = 0.05
) -> Any:
    """Poll until ``predicate`` returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=installed_binary("temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=[
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
        ],
    )
    try:
        yield env
    finally:
        await env.shutdown()


# The suite runs on SQLite by default; with CORTEX_TEST_POSTGRES_URL set (a
# server URL whose user may create databases) every test database is a fresh
# PostgreSQL database instead.
POSTGRES_SERVER = os.environ.get("CORTEX_TEST_POSTGRES_URL")
_created_databases: list[str] = []


def fresh_database_url(directory: Path) -> str:
    if not POSTGRES_SERVER:
        return f"sqlite:///{directory / 'cortex.db'}"
    import psycopg

    name = f"cortex_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    _created_databases.append(name)
    return POSTGRES_SERVER.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases() -> Iterator[None]:
    yield
    if not POSTGRES_SERVER:
        return
    import psycopg

    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as connection:
        for name in _created_databases:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def tmp_db(tmp_path: Path) -> str:
    return fresh_database_url(tmp_path)


class Process:
    """A child process of ours, with its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path):
        self.name, self.command, self.env, self.log = name, command, env, log
        self.popen: subprocess.Popen | None = None

    def start(self) -> Process:
        handle = open(self.log, "ab")  # noqa: SIM115 - closed with the process
        self.popen = subprocess.Popen(
            self.command, env=self.env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT
        )
        return self

    def signal(self, signum: int) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 15) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen:
            self.popen.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Stack:
    """Worker and API processes wired to one database and one Temporal."""

    def __init__(self, workdir: Path, temporal_address: str, **overrides: Any):
        self.workdir = workdir
        self.task_queue = f"cortex-test-{uuid.uuid4().hex[:8]}"
        values = {
            "CORTEX_DATABASE_URL": fresh_database_url(workdir),
            "CORTEX_TEMPORAL_ADDRESS": temporal_address,
            "CORTEX_TASK_QUEUE": self.task_queue,
            "CORTEX_ACK_TIMEOUT_SECONDS": "300",
            "CORTEX_HEARTBEAT_SECONDS": "2",
            "CORTEX_EXPO_BASE_URL": "http://127.0.0.1:9",
            "CORTEX_RECEIPT_DELAY_SECONDS": "900",
            "CORTEX_WORKER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        }
        values.update({f"CORTEX_{k.upper()}": str(v) for k, v in overrides.items()})
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")}
        self.env.update(values)
        self.settings = Settings(**{k.removeprefix("CORTEX_").lower(): v for k, v in values.items()})
        self.apis: list[tuple[Process, str]] = []
        self.workers: list[Process] = []

    def start_worker(self) -> Process:
        process = Process(
            "worker",
            [sys.executable, "-m", "cortex.cli", "worker"],
            self.env,
            self.workdir / f"worker-{len(self.workers)}.log",
        ).start()
        self.workers.append(process)
        deadline = time.monotonic() + 30
        while "worker polling" not in process.output():
            if process.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{process.output()}")
            time.sleep(0.05)
        return process

    def start_api(self, env: dict[str, str] | None = None) -> str:
        port = free_port()
        process = Process(
            "api",
            [sys.executable, "-m", "cortex.cli", "api", "--port", str(port)],
            {**self.env, **(env or {})},
            self.workdir / f"api-{len(self.apis)}.log",
        ).start()
        url = f"http://127.0.0.1:{port}"
        self.apis.append((process, url))
        wait_for_port("127.0.0.1", port, timeout=30)
        return url

    def wait_ready(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while httpx.get(f"{url}/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"API at {url} not ready")
            time.sleep(0.1)

    def token(self, user_id: str) -> str:
        return issue_token(self.settings, user_id)

    def auth(self, user_id: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(user_id)}"}

    def stop(self) -> None:
        for process, _ in self.apis:
            process.stop()
        for process in self.workers:
            process.stop()


@pytest.fixture
def make_stack(tmp_path: Path, dev_server: WorkflowEnvironment) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**overrides: Any) -> Stack:
        workdir = tmp_path / f"stack-{len(stacks)}"
        workdir.mkdir()
        stack = Stack(workdir, dev_server.client.service_client.config.target_host, **overrides)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


def signed_webhook(
    secret: str,
    payload: dict[str, Any] | bytes,
    *,
    webhook_id: str | None = None,
    timestamp: int | None = None,
    key_style: str = "utf8",
) -> tuple[dict[str, str], bytes]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    webhook_id = webhook_id or (
        payload.get("id") if isinstance(payload, dict) and payload.get("id") else f"msg_{uuid.uuid4()}"
    )
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    keys = signing_keys(secret)
    key = keys[0] if key_style == "utf8" else keys[1]
    return (
        {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": stamp,
            "webhook-signature": sign(key, webhook_id, stamp, body),
            "x-composio-webhook-version": "V3",
        },
        body,
    )


def gmail_webhook(user_id: str = "user-0001", webhook_id: str | None = None) -> dict[str, Any]:
    """The Gmail fixture, for ``user_id``, under a fresh (or given) id."""
    payload = fixture_json("composio", "v3_gmail_new_message.json")
    payload["id"] = webhook_id or f"msg_{uuid.uuid4()}"
    payload["metadata"]["user_id"] = user_id
    return payload


def temporal_client(dev_server: WorkflowEnvironment) -> Client:
    return dev_server.client


from tests.harness import expo, harness, skipping_env  # noqa: E402,F401  (fixtures)
