"""``cortex-realtime``: run the stack, its parts, and try it out.

cortex-realtime run            Temporal dev server + worker + API, Ctrl-C stops all
cortex-realtime worker         the delivery worker alone
cortex-realtime api            the API alone (uvicorn)
cortex-realtime token USER     a JWT for USER, signed with CORTEX_JWT_SECRET
cortex-realtime send-sample    a signed sample Composio webhook to the running API
cortex-realtime listen USER    print USER's stream, ACKing what arrives
cortex-realtime redrive ID     deliver an undelivered event again (operator)
cortex-realtime migrate        bring the database schema up to date
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import httpx

from cortex.logging_setup import configure_logging
from cortex.settings import get_settings

log = logging.getLogger("cortex.cli")

DEFAULT_API = "http://127.0.0.1:8000"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cortex-realtime", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="the whole embedded stack")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--ui-port", type=int, default=8233)
    run.add_argument("--data-dir", default="var", help="where SQLite files and logs go")

    commands.add_parser("worker", help="the delivery worker")
    commands.add_parser("migrate", help="bring the database schema up to date")

    api = commands.add_parser("api", help="the HTTP API (uvicorn)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)

    token = commands.add_parser("token", help="a JWT for a user (dev and tests)")
    token.add_argument("user")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds")

    sample = commands.add_parser("send-sample", help="send a signed sample webhook")
    sample.add_argument("--user", default="user-0001")
    sample.add_argument("--api", default=DEFAULT_API)

    redrive = commands.add_parser("redrive", help="deliver an undelivered event again")
    redrive.add_argument("event_id", type=int)
    redrive.add_argument("--reason", default="operator re-drive from the CLI")
    redrive.add_argument("--api", default=DEFAULT_API)

    listen = commands.add_parser("listen", help="print a user's stream")
    listen.add_argument("user")
    listen.add_argument("--api", default=DEFAULT_API)
    listen.add_argument("--no-ack", action="store_true", help="do not ACK what arrives")

    args = parser.parse_args(argv)
    configure_logging(get_settings().log_format)
    handler = {
        "run": _run,
        "worker": _worker,
        "migrate": _migrate,
        "api": _api,
        "token": _token,
        "send-sample": _send_sample,
        "redrive": _redrive,
        "listen": _listen,
    }[args.command]
    return handler(args) or 0


def _run(args: argparse.Namespace) -> int:
    from cortex.devstack import dev_server_command, wait_for_port

    settings = get_settings()
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    temporal_port = int(settings.temporal_address.rsplit(":", 1)[1])
    env = dict(os.environ)
    env.setdefault("CORTEX_DATABASE_URL", f"sqlite:///{data_dir / 'cortex.db'}")

    children: list[tuple[str, subprocess.Popen]] = []

    def start(name: str, command: list[str]) -> None:
        logfile = open(data_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        children.append(
            (
                name,
                subprocess.Popen(
                    command, env=env, stdout=logfile, stderr=subprocess.STDOUT
                ),
            )
        )

    def stop(*_: object, exit_code: int = 0) -> None:
        for name, child in reversed(children):
            if child.poll() is None:
                log.info("stopping %s", name)
                child.terminate()
        for name, child in reversed(children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        raise SystemExit(exit_code)

    # Set both explicitly: a shell that starts us in the background leaves
    # SIGINT ignored, and then Ctrl-C or kill -INT would do nothing.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    start(
        "temporal",
        dev_server_command(
            data_dir / "temporal.db",
            port=temporal_port,
            ui_port=args.ui_port,
            namespace=settings.temporal_namespace,
        ),
    )
    wait_for_port("127.0.0.1", temporal_port, timeout=60)
    start("worker", [sys.executable, "-m", "cortex.cli", "worker"])
    start(
        "api",
        [
            sys.executable,
            "-m",
            "cortex.cli",
            "api",
            "--host",
            args.host,
            "--port",
            str(args.port),
        ],
    )
    wait_for_port(args.host, args.port, timeout=60)
    base = f"http://{args.host}:{args.port}"
    print(
        f"\nCortex Realtime is running (logs in {data_dir}):\n"
        f"  API docs     {base}/docs\n"
        f"  Temporal UI  http://localhost:{args.ui_port}\n"
        f"  try it       cortex-realtime listen user-0001   (in one terminal)\n"
        f"               cortex-realtime send-sample        (in another)\n"
        f"Ctrl-C stops everything.\n",
        flush=True,
    )
    while all(child.poll() is None for _, child in children):
        time.sleep(0.5)
    dead = [name for name, child in children if child.poll() is not None]
    log.error(
        "%s exited; stopping the stack (see its log in %s)", ", ".join(dead), data_dir
    )
    stop(exit_code=1)
    return 1


def _migrate(_: argparse.Namespace) -> int:
    from cortex.db import engine_for

    engine_for(get_settings().database_url)  # migrates on first use
    return 0


def _worker(_: argparse.Namespace) -> int:
    import worker

    worker.main()
    return 0


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from cortex.devstack import stream_listening_socket

    config = uvicorn.Config(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        timeout_graceful_shutdown=10,
        log_config=None,  # keep ours: JSON on request, secrets redacted
    )
    listener = stream_listening_socket(
        args.host, args.port, get_settings().heartbeat_seconds
    )
    uvicorn.Server(config).run(sockets=[listener])
    return 0


def _token(args: argparse.Namespace) -> int:
    from api.auth import issue_token

    print(issue_token(get_settings(), args.user, args.ttl))
    return 0


def sample_webhook(user_id: str) -> tuple[dict[str, str], bytes]:
    """A signed V3 "new Gmail message" webhook, as Composio would send it."""
    from api.webhook_verifier import sign, signing_keys

    webhook_id = f"msg_{uuid.uuid4()}"
    body = json.dumps(
        {
            "id": webhook_id,
            "type": "composio.trigger.message",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "metadata": {
                "log_id": f"log_{uuid.uuid4().hex[:12]}",
                "trigger_slug": "GMAIL_NEW_GMAIL_MESSAGE",
                "trigger_id": "ti_sample",
                "connected_account_id": "ca_sample",
                "auth_config_id": "ac_sample",
                "user_id": user_id,
            },
            "data": {
                "message_id": uuid.uuid4().hex[:16],
                "sender": "Alex Example <alex@example.com>",
                "subject": "Quarterly report draft",
                "message_text": "Hi, the draft is attached.",
            },
        }
    ).encode()
    timestamp = str(int(time.time()))
    key = signing_keys(get_settings().composio_webhook_secret)[0]
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": sign(key, webhook_id, timestamp, body),
        "x-composio-webhook-version": "V3",
    }
    return headers, body


def _send_sample(args: argparse.Namespace) -> int:
    headers, body = sample_webhook(args.user)
    return _report(
        lambda: httpx.post(
            f"{args.api}/proactive/webhook", headers=headers, content=body
        )
    )


def _redrive(args: argparse.Namespace) -> int:
    """Uses the first of CORTEX_OPERATOR_KEYS."""
    operator = {"x-operator-key": get_settings().operator_keys[0]}
    return _report(
        lambda: httpx.post(
            f"{args.api}/ops/events/{args.event_id}/redrive",
            json={"reason": args.reason},
            headers=operator,
        )
    )


def _report(call: Callable[[], httpx.Response]) -> int:
    try:
        response = call()
    except httpx.HTTPError as error:
        print(f"cannot reach the API: {error}", file=sys.stderr)
        return 1
    print(response.status_code, response.text)
    return 0 if response.is_success else 1


def _listen(args: argparse.Namespace) -> int:
    import asyncio

    from api.auth import issue_token
    from cortex.realtime_client import RealtimeClient, StreamRefused

    token = issue_token(get_settings(), args.user)

    def show(event: dict) -> None:
        print(
            f"{event['type']} id={event['id']} {json.dumps(event, ensure_ascii=False)}",
            flush=True,
        )

    client = RealtimeClient(
        args.api,
        token,
        on_event=show,
        on_state=lambda state: print(f"-- {state}", flush=True),
        on_resync=lambda reason: print(
            f"-- resync ({reason}): re-fetch the event list", flush=True
        ),
        ack=not args.no_ack,
    )
    print(
        f"listening to {args.user}'s stream on {urlparse(args.api).netloc}; Ctrl-C stops",
        flush=True,
    )
    try:
        asyncio.run(client.run())
    except KeyboardInterrupt:
        pass
    except StreamRefused as refused:
        print(refused, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
