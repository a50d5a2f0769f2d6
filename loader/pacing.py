"""How many requests may be in flight, and how fast they may start.

Two controls, both at the edge of the send stage:

* a fixed ceiling on the request rate (``--rate-limit R``), a leaky bucket
  from ``aiolimiter`` spaced at one request per ``1/R`` seconds so the
  server never sees a burst;
* an adaptive limit on requests in flight: each 429 halves it, and it grows
  back by one after as many successes in a row as the current limit
  (additive increase, multiplicative decrease, as TCP does), so a loader
  that is told to slow down does, instead of hammering the API.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiolimiter import AsyncLimiter


class Pacer:
    """Admission control for requests: ``async with pacer.slot(): send()``."""

    def __init__(self, concurrency: int, *, rate_limit: float | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be 1 or more")
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError("rate_limit must be above 0")
        self.ceiling = concurrency
        self.limit = concurrency
        self.in_flight = 0
        self.peak_in_flight = 0
        self.slowdowns = 0
        self._streak = 0
        self._changed = asyncio.Condition()
        self._rate = AsyncLimiter(1, 1.0 / rate_limit) if rate_limit else None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self._rate is not None:
                await self._rate.acquire()
            yield
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    async def slow_down(self) -> None:
        """The server said 429: halve the requests in flight (never below one)."""
        async with self._changed:
            self.limit = max(1, self.limit // 2)
            self._streak = 0
            self.slowdowns += 1

    async def succeeded(self) -> None:
        """A request went through: after a streak as long as the limit, allow one more."""
        if self.limit >= self.ceiling:
            return
        async with self._changed:
            self._streak += 1
            if self._streak >= self.limit:
                self.limit += 1
                self._streak = 0
                self._changed.notify_all()
