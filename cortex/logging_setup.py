"""Logging for the entry points: plain text by default, JSON on request
(``CORTEX_LOG_FORMAT=json``), and never a token, a secret or a key.

Our own log lines carry ids, not contents; the filter here catches what
other libraries would print, such as uvicorn's access log of
``/v3/realtime/stream?ticket=...`` or ``DELETE /v3/push/tokens?token=...``.
"""

from __future__ import annotations

import logging
import re

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
SECRETS = [
    (
        re.compile(r"((?:ticket|token|api_key|apikey|key)=)[^&\s\"']+", re.I),
        r"\1[redacted]",
    ),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.I), r"\1[redacted]"),
    (re.compile(r"(Expo(?:nent)?PushToken)\[[^\]]*\]"), r"\1[redacted]"),
    (
        re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"),
        "[redacted-jwt]",
    ),
]


def redact(text: str) -> str:
    for pattern, replacement in SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class TemporalIds(logging.Filter):
    """Lift the workflow id that Temporal's loggers nest in their context to a
    top-level ``workflow_id`` field, next to ``event_id`` and ``user_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        for context in ("temporal_activity", "temporal_workflow"):
            nested = getattr(record, context, None)
            if isinstance(nested, dict) and "workflow_id" in nested:
                record.workflow_id = nested["workflow_id"]
        return True


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={
                    "asctime": "time",
                    "levelname": "level",
                    "name": "logger",
                },
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactSecrets())
    handler.addFilter(TemporalIds())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own loggers would otherwise keep their handlers and format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
