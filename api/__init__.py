"""The HTTP API: webhook ingest, publish, SSE stream, ACK, events, push tokens."""
