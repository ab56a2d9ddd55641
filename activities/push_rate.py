"""A rate limit on Expo sends shared by every worker: a counter per second in
the database, reserved with one conditional upsert, so two workers can never
together exceed the limit in any wall-clock second."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from cortex.db import engine_for
from cortex.models import PushRateWindow

KEEP_WINDOWS_SECONDS = 120


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
        dialect = self._engine.dialect.name
        self._insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]

    def acquire(self, count: int, on_wait: Callable[[], None] | None = None) -> None:
        """Block until ``count`` notifications fit in the current second."""
        if count > self.per_second:
            raise ValueError(f"cannot send {count} at once under {self.per_second}/s")
        while not self._reserve(int(self._clock()), count):
            if on_wait is not None:
                on_wait()
            self._sleep(1 - self._clock() % 1 + 0.001)

    def _reserve(self, second: int, count: int) -> bool:
        table = PushRateWindow.__table__  # type: ignore[attr-defined]
        statement = self._insert(table).values(second=second, sent=count)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.second],
            set_={"sent": table.c.sent + statement.excluded.sent},
            where=table.c.sent + statement.excluded.sent <= self.per_second,
        ).returning(table.c.sent)
        with self._engine.begin() as connection:
            # A row comes back only when the insert or the guarded update ran
            # (rowcount is not reliable for upserts across drivers).
            reserved = connection.execute(statement).first() is not None
            if reserved and second % 60 == 0:
                connection.execute(
                    delete(PushRateWindow).where(
                        col(PushRateWindow.second) < second - KEEP_WINDOWS_SECONDS
                    )
                )
        return reserved
