"""The push reliability view for operators: per day, what push really did."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from cortex.models import Event, PushDelivery, PushToken, utcnow

SENT = ("ok", "error", "unknown")


def daily_push_report(session: Session, days: int) -> list[dict[str, Any]]:
    since = (utcnow() - timedelta(days=days - 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    rows: dict[date, dict[str, Any]] = defaultdict(
        lambda: {
            "sent": 0,
            "ok": 0,
            "errors": Counter(),
            "tokensDeactivated": 0,
            "pushedEvents": 0,
            "pushedEventsAcked": 0,
        }
    )

    for push in session.exec(
        select(PushDelivery).where(col(PushDelivery.created_at) >= since)
    ):
        day = rows[_day(push.created_at)]
        day["sent"] += push.status in SENT
        day["ok"] += push.status == "ok"
        if push.status in ("error", "failed") and push.error:
            day["errors"][push.error] += 1
        if push.receipt_error:
            day["errors"][f"receipt:{push.receipt_error}"] += 1

    for token in session.exec(
        select(PushToken).where(col(PushToken.deactivated_at) >= since)
    ):
        rows[_day(token.deactivated_at)]["tokensDeactivated"] += 1  # type: ignore[arg-type]

    for event in session.exec(
        select(Event)
        .where(Event.channel == "push")
        .where(col(Event.created_at) >= since)
    ):
        day = rows[_day(event.created_at)]
        day["pushedEvents"] += 1
        day["pushedEventsAcked"] += event.status == "acked"

    return [
        {
            "day": day.isoformat(),
            **{
                k: (dict(v) if isinstance(v, Counter) else v) for k, v in values.items()
            },
            "ackedShare": (
                round(values["pushedEventsAcked"] / values["pushedEvents"], 4)
                if values["pushedEvents"]
                else None
            ),
        }
        for day, values in sorted(rows.items(), reverse=True)
    ]


def _day(moment: datetime) -> date:
    return moment.date()
