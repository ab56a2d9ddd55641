"""The two references for idle streams: a bare FastAPI + sse-starlette
endpoint (what our stream is built on) and a raw asyncio server that writes
the same bytes by hand (the floor).

    python -m bench.bare_servers sse-starlette PORT HEARTBEAT
    python -m bench.bare_servers raw PORT HEARTBEAT
"""

from __future__ import annotations

import asyncio
import sys

HEADERS = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _raw_client(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, heartbeat: float
) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(HEADERS + _chunk(b"event: connected\r\ndata: {}\r\n\r\n"))
        while True:
            await asyncio.sleep(heartbeat)
            writer.write(_chunk(b": heartbeat\r\n\r\n"))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _raw(port: int, heartbeat: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: _raw_client(r, w, heartbeat), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


def _sse_starlette(port: int, heartbeat: float) -> None:
    import uvicorn
    from fastapi import FastAPI
    from sse_starlette import EventSourceResponse, ServerSentEvent

    app = FastAPI()

    @app.get("/v3/realtime/stream")
    async def stream() -> EventSourceResponse:
        async def frames():
            yield ServerSentEvent(data="{}", event="connected")
            await asyncio.Event().wait()  # idle: only heartbeats from here on
            yield  # pragma: no cover

        return EventSourceResponse(
            frames(),
            ping=heartbeat,
            ping_message_factory=lambda: ServerSentEvent(comment="heartbeat"),
        )

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=4096)


if __name__ == "__main__":
    kind, port, heartbeat = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if kind == "raw":
        asyncio.run(_raw(port, heartbeat))
    else:
        _sse_starlette(port, heartbeat)
