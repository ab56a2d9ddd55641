"""A rate limit on Expo sends shared by every worker: a sliding one-second
log of reservations in the database. A worker writes its reservation, sums
the last second, and keeps it only if the sum is within the limit; writers
are serialised (SQLite's write lock, a PostgreSQL advisory lock), so no
one-second window, wherever it starts, ever holds more than the limit."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import delete, func, insert, select, text
from sqlmodel import col

from cortex.db import engine_for
from cortex.models import PushReservation

WINDOW_SECONDS = 1.0
RETRY_SECONDS = 0.02
# Any fixed number: the advisory lock that serialises reservations on PostgreSQL.
RESERVATION_LOCK_KEY = 7_310_513


class PushRateLimiter:
    def __init__(
        self,
        database_url: str,
        per_second: int,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._engine = engine_for(database_url)
        self.per_second = per_second
        self._clock, self._sleep = clock, sleep

    def acquire(self, count: int, on_wait: Callable[[], None] | None = None) -> None:
        """Block until ``count`` notifications fit in the last second."""
        if count > self.per_second:
            raise ValueError(f"cannot send {count} at once under {self.per_second}/s")
        while not self._reserve(count):
            if on_wait is not None:
                on_wait()
            self._sleep(RETRY_SECONDS)

    def _reserve(self, count: int) -> bool:
        now = self._clock()
        table = PushReservation.__table__  # type: ignore[attr-defined]
        with self._engine.begin() as connection:
            if self._engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": RESERVATION_LOCK_KEY},
                )
            # On SQLite this first write takes the database's write lock, so
            # the sum below sees every other worker's committed reservations.
            connection.execute(insert(table).values(at=now, count=count))
            in_window = connection.execute(
                select(func.sum(table.c.count)).where(table.c.at > now - WINDOW_SECONDS)
            ).scalar_one()
            if in_window > self.per_second:
                connection.rollback()
                return False
            connection.execute(
                delete(PushReservation).where(col(PushReservation.at) < now - 60)
            )
        return True
