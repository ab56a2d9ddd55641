"""Prometheus metrics of the API process.

Counters and histograms are measured here as things happen; the totals that
span every process (events by status, pushes by result, receipts pending)
are read from the database when Prometheus scrapes, so any API process
reports the same, true numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import col, select

from cortex.db import session_for
from cortex.models import Event, PushDelivery, PushToken

OPEN_STREAMS = Gauge("cortex_open_streams", "SSE streams open on this API process")
WEBHOOKS = Counter(
    "cortex_webhooks", "Composio webhooks received, by outcome", ["result"]
)
PUBLISHED = Counter(
    "cortex_published_events",
    "Events published through the API, by outcome",
    ["result"],
)
WEBHOOK_TO_STREAM = Histogram(
    "cortex_webhook_to_stream_seconds",
    "From the API accepting an event to a stream writing it",
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
)
ACK_LATENCY = Histogram(
    "cortex_ack_latency_seconds",
    "From an event being stored to the app's ACK",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)


class DatabaseTotals(Collector):
    def __init__(self, database_url: str) -> None:
        self._database_url = database_url

    def collect(self) -> Iterator[GaugeMetricFamily]:
        events = GaugeMetricFamily(
            "cortex_events", "Events by delivery status", labels=["status"]
        )
        pushes = GaugeMetricFamily(
            "cortex_pushes",
            "Pushes by result and Expo error code",
            labels=["status", "error"],
        )
        pending = GaugeMetricFamily(
            "cortex_push_receipts_pending",
            "Accepted pushes whose receipt is not read yet",
        )
        tokens = GaugeMetricFamily(
            "cortex_push_tokens", "Push tokens", labels=["active"]
        )
        with session_for(self._database_url) as session:
            for status, count in session.exec(
                select(Event.status, func.count()).group_by(Event.status)
            ):
                events.add_metric([status], count)
            for status, error, count in session.exec(
                select(PushDelivery.status, PushDelivery.error, func.count()).group_by(
                    PushDelivery.status, PushDelivery.error
                )
            ):
                pushes.add_metric([status, error or ""], count)
            pending.add_metric(
                [],
                session.exec(
                    select(func.count())
                    .select_from(PushDelivery)
                    .where(PushDelivery.status == "ok")
                    .where(col(PushDelivery.receipt_status).is_(None))
                ).one(),
            )
            for active, count in session.exec(
                select(PushToken.active, func.count()).group_by(PushToken.active)
            ):
                tokens.add_metric([str(active).lower()], count)
        yield from (events, pushes, pending, tokens)


def register_database_totals(database_url: str) -> DatabaseTotals:
    collector = DatabaseTotals(database_url)
    REGISTRY.register(collector)
    return collector


def unregister(collector: Collector) -> None:
    REGISTRY.unregister(collector)
