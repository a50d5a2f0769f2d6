"""The clock every run in the test suite starts from, command-line runs included.

The sample sheets' ``schedule_at`` values fall on 2030-05-28..30: judged by the real clock, the
suite would start failing on that day. ``conftest`` sets ``CALLKARO_TEST_NOW``
(``loader.state.TEST_NOW_VAR``) to ``RUNS_START`` unless it is already set, so every library
call and every CLI process a test starts reads this clock (it moves on from there in real time).
"""

from __future__ import annotations

import datetime as dt
import os

from loader.state import TEST_NOW_VAR

#: 10:00 UTC: the same date everywhere from UTC-10 to UTC+13.
RUNS_START = dt.datetime(2030, 1, 1, 10, 0, tzinfo=dt.UTC)


def pin() -> None:
    os.environ.setdefault(TEST_NOW_VAR, RUNS_START.isoformat())


def run_date(zone: dt.tzinfo) -> str:
    """The date, in ``zone``, of a run started now in a test (what ``{date}`` becomes)."""
    return dt.datetime.fromisoformat(os.environ[TEST_NOW_VAR]).astimezone(zone).date().isoformat()


def clean_env() -> dict[str, str]:
    """This environment without the user's ``CALLKARO_`` settings (key, base URL), clock kept."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CALLKARO_") or k == TEST_NOW_VAR}
