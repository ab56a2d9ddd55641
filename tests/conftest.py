"""Shared test fixtures: a real Temporal dev server, real processes, real TCP.

One dev server per session; each test module that needs the full stack starts
its own worker and API processes with their own database file and task queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.webhook_verifier import sign, signing_keys
from cortex.devstack import installed_binary
from cortex.shared import SEARCH_ATTRIBUTES
from cortex.stack_runner import ROOT, Process, Stack  # noqa: F401  (used by tests)

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


def new_stack(
    workdir: Path, dev_server: WorkflowEnvironment, **overrides: Any
) -> Stack:
    """A stack on the session's dev server, with its own fresh database."""
    return Stack(
        workdir,
        dev_server.client.service_client.config.target_host,
        fresh_database_url(workdir),
        **overrides,
    )


async def started_stack(
    tmp_path_factory: pytest.TempPathFactory,
    dev_server: WorkflowEnvironment,
    name: str,
    **overrides: Any,
) -> Stack:
    """A module's stack: worker and API started, API ready at ``stack.url``."""
    stack = new_stack(tmp_path_factory.mktemp(name), dev_server, **overrides)
    stack.start_worker()
    stack.url = stack.start_api()
    stack.wait_ready(stack.url)
    return stack


@pytest.fixture
def make_stack(
    tmp_path: Path, dev_server: WorkflowEnvironment
) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**overrides: Any) -> Stack:
        workdir = tmp_path / f"stack-{len(stacks)}"
        workdir.mkdir()
        stack = new_stack(workdir, dev_server, **overrides)
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
        payload.get("id")
        if isinstance(payload, dict) and payload.get("id")
        else f"msg_{uuid.uuid4()}"
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


def gmail_webhook(
    user_id: str = "user-0001", webhook_id: str | None = None
) -> dict[str, Any]:
    """The Gmail fixture, for ``user_id``, under a fresh (or given) id."""
    payload = fixture_json("composio", "v3_gmail_new_message.json")
    payload["id"] = webhook_id or f"msg_{uuid.uuid4()}"
    payload["metadata"]["user_id"] = user_id
    return payload


def temporal_client(dev_server: WorkflowEnvironment) -> Client:
    return dev_server.client


from tests.harness import expo, harness, skipping_env  # noqa: E402,F401  (fixtures)
