"""Numbers for the delivery dashboard, read from the database."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from cortex.models import Event, PushDelivery, PushToken, utcnow

LATENCY_SAMPLE = 10_000
TIMELINE_MINUTES = 60


def delivery_stats(session: Session) -> dict[str, Any]:
    now = utcnow()
    by_status = dict(
        session.exec(select(Event.status, func.count()).group_by(Event.status)).all()
    )
    by_channel = Counter(
        {
            (channel or "none"): count
            for channel, count in session.exec(
                select(Event.channel, func.count()).group_by(Event.channel)
            ).all()
        }
    )
    total = sum(by_status.values())

    acked = session.exec(
        select(Event.created_at, Event.acked_at)
        .where(col(Event.acked_at).is_not(None))
        .order_by(col(Event.id).desc())
        .limit(LATENCY_SAMPLE)
    ).all()
    latencies = sorted((a - c).total_seconds() for c, a in acked)

    recent = session.exec(
        select(Event.created_at, Event.channel).where(
            col(Event.created_at) >= now - timedelta(minutes=TIMELINE_MINUTES)
        )
    ).all()
    timeline = _per_minute(recent, now)

    push_errors = dict(
        session.exec(
            select(PushDelivery.error, func.count())
            .where(col(PushDelivery.status).in_(("error", "failed")))
            .group_by(PushDelivery.error)
        ).all()
    )
    receipt_errors = session.exec(
        select(PushDelivery.receipt_error, func.count())
        .where(col(PushDelivery.receipt_error).is_not(None))
        .group_by(PushDelivery.receipt_error)
    ).all()
    for code, count in receipt_errors:
        push_errors[f"receipt:{code}"] = count

    return {
        "generatedAt": now.isoformat(),
        "totalEvents": total,
        "byStatus": by_status,
        "byChannel": {
            "stream": by_channel["stream"],
            "push": by_channel["push"],
            "none": by_channel["none"],
        },
        "undelivered": by_status.get("undelivered", 0),
        "acked": by_status.get("acked", 0),
        "ackLatencySeconds": {
            "count": len(latencies),
            "p50": _percentile(latencies, 0.50),
            "p90": _percentile(latencies, 0.90),
            "p99": _percentile(latencies, 0.99),
        },
        "eventsLastMinute": sum(
            1 for created, _ in recent if created >= now - timedelta(minutes=1)
        ),
        "eventsLastHour": len(recent),
        "pushesSent": session.exec(
            select(func.count())
            .select_from(PushDelivery)
            .where(col(PushDelivery.status).in_(("ok", "error", "unknown")))
        ).one(),
        "pushErrors": push_errors,
        "tokensDeactivated": session.exec(
            select(func.count())
            .select_from(PushToken)
            .where(col(PushToken.active).is_(False))
        ).one(),
        "timeline": timeline,
    }


def _percentile(ordered: list[float], share: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))
    return round(ordered[index], 3)


def _per_minute(rows: list[tuple[Any, str | None]], now: Any) -> list[dict[str, Any]]:
    start = now.replace(second=0, microsecond=0) - timedelta(
        minutes=TIMELINE_MINUTES - 1
    )
    buckets = [
        {
            "minute": (start + timedelta(minutes=i)).strftime("%H:%M"),
            "stream": 0,
            "push": 0,
            "none": 0,
        }
        for i in range(TIMELINE_MINUTES)
    ]
    for created, channel in rows:
        index = int((created - start).total_seconds() // 60)
        if 0 <= index < TIMELINE_MINUTES:
            buckets[index][channel or "none"] += 1
    return buckets
