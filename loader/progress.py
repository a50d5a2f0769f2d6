"""The progress bar, behind an object that may do nothing.

Library code calls ``advance`` unconditionally; whether a bar is drawn is
decided once, at the edge (``--no-progress``, ``--quiet``, or stderr not
being a terminal, as under cron).
"""

from __future__ import annotations

import sys
from typing import IO, Any


class NoProgress:
    def advance(self, status: str) -> None:
        pass

    def close(self) -> None:
        pass


#: ``42%|####      | 420/1000 [00:05, ETA 00:07, 84.0call/s, scheduled=418, failed=2]``
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, ETA {remaining}, {rate_fmt}{postfix}]"


class BarProgress:
    """A tqdm bar on stderr showing scheduled/failed counts (and any other outcome) and an ETA."""

    def __init__(self, total: int, *, stream: IO[str] | None = None) -> None:
        from tqdm import tqdm

        self._counts: dict[str, int] = {"scheduled": 0, "failed": 0}
        self._bar: Any = tqdm(
            total=total,
            unit="call",
            file=stream or sys.stderr,
            dynamic_ncols=True,
            leave=False,
            bar_format=BAR_FORMAT,
            postfix="scheduled=0, failed=0",
        )

    def advance(self, status: str) -> None:
        self._counts[status] = self._counts.get(status, 0) + 1
        self._bar.set_postfix(self._counts, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def make_progress(total: int, *, enabled: bool, stream: IO[str] | None = None) -> NoProgress | BarProgress:
    stream = stream or sys.stderr
    if not enabled or total == 0 or not stream.isatty():
        return NoProgress()
    return BarProgress(total, stream=stream)
