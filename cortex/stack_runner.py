"""The stack as separate processes (worker, API) wired to one database and one
Temporal, for the test suite and the benchmarks: real processes, real TCP."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from api.auth import issue_token
from cortex.devstack import free_port, wait_for_port
from cortex.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


class Process:
    """A child process of ours, with its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path):
        self.name, self.command, self.env, self.log = name, command, env, log
        self.popen: subprocess.Popen | None = None

    def start(self) -> Process:
        handle = open(self.log, "ab")  # noqa: SIM115 - closed with the process
        self.popen = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
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

    def __init__(
        self,
        workdir: Path,
        temporal_address: str,
        database_url: str | None = None,
        **overrides: Any,
    ):
        self.workdir = workdir
        self.task_queue = f"cortex-test-{uuid.uuid4().hex[:8]}"
        values = {
            "CORTEX_DATABASE_URL": database_url or f"sqlite:///{workdir / 'cortex.db'}",
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
        self.settings = Settings(
            **{k.removeprefix("CORTEX_").lower(): v for k, v in values.items()}
        )
        self.apis: list[tuple[Process, str]] = []
        self.url: str | None = None  # the first API's address
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
        self.url = self.url or url
        wait_for_port("127.0.0.1", port, timeout=30)
        return url

    def wait_ready(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while httpx.get(f"{url}/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"API at {url} not ready")
            time.sleep(0.1)

    def publish(
        self, user_id: str, key: str, *, url: str | None = None, **fields: Any
    ) -> httpx.Response:
        """``POST /v3/events`` with the stack's API key, to ``url`` or the first API."""
        body = {
            "userId": user_id,
            "type": "cortex.test",
            "title": "test event",
            **fields,
        }
        return httpx.post(
            f"{url or self.url}/v3/events",
            json={**body, "idempotencyKey": key},
            headers={"x-api-key": self.settings.api_keys[0]},
            timeout=30,
        )

    def token(self, user_id: str) -> str:
        return issue_token(self.settings, user_id)

    def auth(self, user_id: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(user_id)}"}

    def stop(self) -> None:
        for process, _ in self.apis:
            process.stop()
        for process in self.workers:
            process.stop()


NGINX_CONF = ROOT / "deploy" / "nginx" / "cortex-realtime.conf"


class Nginx:
    """Debian's nginx running the documented config, pointed at our APIs."""

    def __init__(self, workdir: Path, api_ports: list[int], port: int):
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        documented = NGINX_CONF.read_text()
        servers = "".join(
            f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;\n"
            for p in api_ports
        )
        site = re.sub(r"(    server 127\.0\.0\.1:\d+ [^\n]*\n)+", servers, documented)
        site = site.replace("listen 8080;", f"listen 127.0.0.1:{port};")
        assert site != documented
        (workdir / "site.conf").write_text(site)
        (workdir / "nginx.conf").write_text(
            "worker_processes 1;\n"
            f"error_log {workdir}/error.log warn;\n"
            f"pid {workdir}/nginx.pid;\n"
            # Each proxied stream holds two connections (client and upstream).
            "worker_rlimit_nofile 16384;\n"
            "events { worker_connections 8192; }\n"
            f"http {{ access_log off; include {workdir}/site.conf; }}\n"
        )
        self.command = [
            shutil.which("nginx") or "/usr/sbin/nginx",
            "-p",
            str(workdir),
            "-c",
            str(workdir / "nginx.conf"),
            "-g",
            "daemon off;",
        ]
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Nginx:
        self.process = subprocess.Popen(self.command, stderr=subprocess.PIPE)
        wait_for_port("127.0.0.1", int(self.url.rsplit(":", 1)[1]), timeout=10)
        return self

    def __exit__(self, *_: Any) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)
