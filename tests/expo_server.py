"""A real HTTP server on loopback that speaks Expo's push protocol.

It answers ``/--/api/v2/push/send`` with one ticket per message, in order, and
``/--/api/v2/push/getReceipts`` from what it sent. A test scripts unusual
answers (a 429, an HTML 503, a dropped connection, a dead device) and reads
back every request it received.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
SEND_PATH = "/--/api/v2/push/send"
RECEIPTS_PATH = "/--/api/v2/push/getReceipts"


@dataclass
class Scripted:
    """One scripted answer to the next send request."""

    status: int = 200
    body: bytes | None = None  # raw body; None means "normal tickets"
    drop_connection: bool = False
    # Accept the messages, then wait this long before answering (a worker can
    # be killed in between).
    delay_after_accept: float = 0


@dataclass
class ExpoState:
    sent: list[dict[str, Any]] = field(default_factory=list)  # accepted messages
    requests: list[list[dict[str, Any]]] = field(
        default_factory=list
    )  # every send body
    script: deque[Scripted] = field(default_factory=deque)
    dead_tokens: set[str] = field(
        default_factory=set
    )  # ticket error DeviceNotRegistered
    dead_on_receipt: set[str] = field(default_factory=set)  # receipt says so
    tickets: dict[str, str] = field(default_factory=dict)  # ticket id -> token
    receipt_requests: list[list[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Like Expo: refuse a request (429) that would pass this many
    # notifications in one wall-clock second.
    per_second_limit: int | None = None
    accepted_per_second: dict[int, int] = field(default_factory=dict)
    accepted_log: list[tuple[float, int]] = field(
        default_factory=list
    )  # (time, messages)
    rejected_429: int = 0

    def pushes_to(self, token: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.sent if m["to"] == token]


class _Handler(BaseHTTPRequestHandler):
    state: ExpoState

    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("content-length", 0))
        payload = json.loads(self.rfile.read(length) or b"null")
        if self.path.startswith(SEND_PATH):
            self._send(payload)
        elif self.path.startswith(RECEIPTS_PATH):
            self._receipts(payload)
        else:
            self._reply(
                404, {"errors": [{"code": "NOT_FOUND", "message": "no such path"}]}
            )

    def _send(self, messages: list[dict[str, Any]]) -> None:
        state = self.state
        with state.lock:
            state.requests.append(messages)
            scripted = state.script.popleft() if state.script else Scripted()
        if scripted.drop_connection:
            self.close_connection = True
            self.connection.close()
            return
        if scripted.body is not None or scripted.status != 200:
            self._reply_raw(scripted.status, scripted.body or b"{}")
            return
        if state.per_second_limit is not None:
            with state.lock:
                second = int(time.time())
                if (
                    state.accepted_per_second.get(second, 0) + len(messages)
                    > state.per_second_limit
                ):
                    state.rejected_429 += 1
                    limited = fixture_reply("send_rate_limited.json")
                    self._reply_raw(limited.status, limited.body or b"{}")
                    return
                state.accepted_per_second[second] = state.accepted_per_second.get(
                    second, 0
                ) + len(messages)
                state.accepted_log.append((time.time(), len(messages)))
        if len(messages) > 100:
            too_many = json.loads(
                (FIXTURES / "expo" / "send_too_many.json").read_text()
            )
            self._reply(too_many["http_status"], too_many["body"])
            return
        tickets = []
        with state.lock:
            for message in messages:
                if message["to"] in state.dead_tokens:
                    tickets.append(
                        {
                            "status": "error",
                            "message": (
                                f'"{message["to"]}" is not a registered push '
                                "notification recipient"
                            ),
                            "details": {
                                "error": "DeviceNotRegistered",
                                "expoPushToken": message["to"],
                            },
                        }
                    )
                    continue
                ticket_id = str(uuid.uuid4())
                state.tickets[ticket_id] = message["to"]
                state.sent.append(message)
                tickets.append({"status": "ok", "id": ticket_id})
        if scripted.delay_after_accept:
            time.sleep(scripted.delay_after_accept)
        self._reply(200, {"data": tickets})

    def _receipts(self, payload: dict[str, Any]) -> None:
        state = self.state
        receipts: dict[str, Any] = {}
        with state.lock:
            state.receipt_requests.append(list(payload["ids"]))
            for ticket_id in payload["ids"]:
                token = state.tickets.get(ticket_id)
                if token is None:
                    continue
                if token in state.dead_on_receipt:
                    receipts[ticket_id] = {
                        "status": "error",
                        "message": "The recipient device is not registered with FCM.",
                        "details": {
                            "error": "DeviceNotRegistered",
                            "expoPushToken": token,
                        },
                    }
                else:
                    receipts[ticket_id] = {"status": "ok"}
        self._reply(200, {"data": receipts})

    def _reply(self, status: int, body: Any) -> None:
        self._reply_raw(status, json.dumps(body).encode())

    def _reply_raw(self, status: int, body: bytes) -> None:
        self.send_response(status)
        is_json = body.lstrip().startswith((b"{", b"["))
        self.send_header("content-type", "application/json" if is_json else "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ExpoServer:
    def __init__(self) -> None:
        self.state = ExpoState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ExpoServer:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


def fixture_reply(name: str) -> Scripted:
    """A scripted answer taken from one of the shared Expo fixtures."""
    recorded = json.loads((FIXTURES / "expo" / name).read_text())
    return Scripted(
        status=recorded["http_status"], body=json.dumps(recorded["body"]).encode()
    )
