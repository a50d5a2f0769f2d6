"""Stage 3a: turn each call-field cell into the value the API expects.

Every parser takes one cell and returns ``(value, None)`` or ``(None,
problem)``, where ``problem`` completes the sentence ``"<column>: <value>
..."`` (e.g. ``"is not a whole number"``). Parsing only decides what a cell
*says*; the rules about what is allowed (ranges, order, E.164 shape) live in
``schemas.calls`` so they read like the API's field table.

Columns are parsed one distinct value at a time: lead sheets repeat the same
windows, priorities and retry settings on thousands of rows. Phone numbers,
distinct on nearly every row, go through ``loader.phones``' column-wise path.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from loader import phones
from loader.cells import Cell, cell_text, distinct_cells, is_blank, is_text_column

Parsed = tuple[Any, str | None]


@dataclass(frozen=True)
class Context:
    """What parsing depends on besides the cell itself."""

    default_region: str | None
    timezone: dt.tzinfo
    now: dt.datetime
    allow_past: bool = False

    @functools.cached_property
    def local_now(self) -> dt.datetime:  # asked once per distinct date-time cell
        return self.now.astimezone(self.timezone).replace(tzinfo=None)

    @functools.cached_property
    def instant_now(self) -> dt.datetime:  # ``now`` with an offset, for cells that have one
        return self.now.astimezone()


# --- phone numbers -----------------------------------------------------------
# The rules live in loader.phones, which also reads whole columns at once.


def parse_phone(cell: Cell, ctx: Context) -> Parsed:
    return phones.parse_phone(cell, ctx.default_region)


# --- date-times and times -------------------------------------------------------

_DATE_ONLY = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$")
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}")
# LibreOffice and openpyxl show a date-time as "2030-05-28 9:30:00"; ISO wants two hour digits.
_ONE_DIGIT_HOUR = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d:)")


def parse_schedule_at(cell: Cell, ctx: Context) -> Parsed:
    if isinstance(cell, dt.datetime):
        moment = cell
    elif isinstance(cell, dt.date):
        return None, "is a date without a time; add the time, e.g. 2030-05-28 09:30"
    elif isinstance(cell, str):
        text = cell.strip()
        if _DATE_ONLY.match(text):
            return None, "is a date without a time; add the time, e.g. 2030-05-28 09:30"
        if not _ISO_DATETIME.match(text):
            return None, "is not a date and time; write it as 2030-05-28 09:30"
        try:
            moment = dt.datetime.fromisoformat(_ONE_DIGIT_HOUR.sub(r"\1T0\2", text).replace("z", "Z"))
        except ValueError:
            return None, "is not a date and time; write it as 2030-05-28 09:30"
    else:
        return None, "is not a date and time; write it as 2030-05-28 09:30"
    # A value with an offset is an instant: judged against now as one, since local wall-clock
    # times repeat in the hour the clocks go back.
    now = ctx.instant_now if moment.tzinfo is not None else ctx.local_now
    past = moment.replace(microsecond=0) < now
    if moment.tzinfo is not None:
        moment = moment.astimezone(ctx.timezone)
    moment = moment.replace(tzinfo=None, microsecond=0)
    if not ctx.allow_past and past:
        return None, "is in the past; use a later time or --allow-past"
    return moment.isoformat(timespec="seconds"), None  # four year digits even before 1000


_TIME = re.compile(
    r"^(?P<h>\d{1,2})(?::(?P<m>\d{2})(?::(?P<s>\d{2}))?)?\s*(?P<ampm>[ap])?\.?\s*(?:m\.?)?$",
    re.IGNORECASE,
)


def seconds_of_day(cell: Cell) -> tuple[float | None, str | None]:
    """The time of day ``cell`` says, in seconds after midnight (fractions kept), or a problem."""
    problem = "is not a time of day; write it as HH:MM, e.g. 08:30 or 8:30 PM"
    if isinstance(cell, dt.datetime):
        # Excel stores a bare time as a date-time on its epoch day.
        if cell.year > 1900:
            return None, "is a date and time, not a time of day; write it as HH:MM"
        cell = cell.time()
    if isinstance(cell, dt.time):
        return cell.hour * 3600 + cell.minute * 60 + cell.second + cell.microsecond / 1e6, None
    if isinstance(cell, dt.timedelta):
        seconds = cell.total_seconds()
        return (seconds, None) if 0 <= seconds < 86400 else (None, problem)
    if isinstance(cell, float) and not isinstance(cell, bool) and 0 <= cell < 1:
        # A time cell that lost its format is a fraction of a day; Excel keeps whole seconds.
        seconds = round(cell * 86400)
        return (seconds, None) if seconds < 86400 else (None, problem)
    if not isinstance(cell, str):
        return None, problem
    match = _TIME.match(cell.strip())
    if not match or (match["m"] is None and match["ampm"] is None):
        return None, problem
    hour, minute, second = int(match["h"]), int(match["m"] or 0), int(match["s"] or 0)
    if match["ampm"]:
        if not 1 <= hour <= 12:
            return None, problem
        hour = hour % 12 + (12 if match["ampm"].lower() == "p" else 0)
    if hour > 23 or minute > 59 or second > 59:
        return None, problem
    return hour * 3600 + minute * 60 + second, None


def parse_time_of_day(cell: Cell, ctx: Context, *, round_up: bool = False) -> Parsed:
    """``HH:MM``, as the API takes it. Seconds narrow the window, never widen it: the end of a
    window (the default) rounds down to its minute, the start (``round_up``) up to the next."""
    seconds, problem = seconds_of_day(cell)
    if seconds is None:
        return None, problem
    minutes = math.ceil(seconds / 60) if round_up else math.floor(seconds / 60)
    if minutes >= 1440:
        return None, "rounds up to midnight: no whole minute of the day is left to call in"
    return f"{minutes // 60:02d}:{minutes % 60:02d}", None


def parse_window_start(cell: Cell, ctx: Context) -> Parsed:
    return parse_time_of_day(cell, ctx, round_up=True)


# --- booleans and numbers ------------------------------------------------------

_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


def parse_bool(cell: Cell, ctx: Context) -> Parsed:
    if isinstance(cell, bool):
        return cell, None
    if isinstance(cell, int | float) and cell in (0, 1):
        return bool(cell), None
    text = cell_text(cell).strip().casefold()
    if text in _TRUE:
        return True, None
    if text in _FALSE:
        return False, None
    return None, "is not yes or no; write true/false, yes/no, y/n or 1/0"


_WHOLE = re.compile(r"^[+-]?\d+(?:\.0*)?$")
#: The API's integers are 64-bit; anything larger is a typo, and pandas' Int64 cannot hold it.
_INT64 = 2**63


def _whole(cell: Cell) -> int | None:
    if isinstance(cell, bool):
        return None
    if isinstance(cell, int):
        return cell
    if isinstance(cell, float):
        return int(cell) if math.isfinite(cell) and cell.is_integer() else None
    if isinstance(cell, str):
        text = cell.strip()
        if _WHOLE.match(text):
            try:
                return int(text.split(".")[0])
            except ValueError:  # more digits than Python converts (4300)
                return None
    return None


def parse_whole_number(cell: Cell, ctx: Context) -> Parsed:
    value = _whole(cell)
    if value is None:
        return None, "is not a whole number"
    if not -_INT64 <= value < _INT64:
        return None, "is out of range"
    return value, None


def parse_gap(cell: Cell, ctx: Context) -> Parsed:
    problem = "is not whole minutes; write one number (30) or several (30,120)"
    single = _whole(cell)
    if single is not None:
        return (single, None) if -_INT64 <= single < _INT64 else (None, "is out of range")
    if not isinstance(cell, str):
        return None, problem
    text = cell.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    parts = [p.strip() for p in re.split(r"[,;]", text)]
    values = [_whole(p) for p in parts]
    if not parts or any(v is None for v in values):
        return None, problem
    if any(not -_INT64 <= v < _INT64 for v in values if v is not None):
        return None, "is out of range"
    return (values[0] if len(values) == 1 else values), None


PARSERS: dict[str, Callable[[Cell, Context], Parsed]] = {
    "to_number": parse_phone,
    "schedule_at": parse_schedule_at,
    "min_trigger_time": parse_window_start,
    "max_trigger_time": parse_time_of_day,
    "carry_over": parse_bool,
    "number_of_retries": parse_whole_number,
    "gap_between_retries": parse_gap,
    "priority": parse_whole_number,
}


#: The pandas dtype of each call field's parsed values (missing where a cell was blank or wrong).
DTYPES: dict[str, Any] = {
    "to_number": "str",
    "schedule_at": "str",
    "min_trigger_time": "str",
    "max_trigger_time": "str",
    "carry_over": "boolean",
    "number_of_retries": "Int64",
    "gap_between_retries": object,  # one number or a list of them
    "priority": "Int64",
}


def parse_column(name: str, cells: pd.Series, ctx: Context) -> tuple[Any, np.ndarray]:
    """Parse every cell of one call-field column; blanks give neither a value nor a problem.

    Returns the parsed values, as an array of ``DTYPES[name]`` (missing where
    there is none), and the problems (None where there is none), both in the
    column's order. Phone numbers take the vectorised path of ``loader.phones``.
    """
    if name == "to_number":
        return phones.parse_phone_column(cells, ctx.default_region)
    # Each distinct cell parsed once, the answers spread back by code.
    if is_text_column(cells):
        codes, uniques = pd.factorize(cells)
        distinct: list[Cell] = uniques.tolist()
    else:
        codes, distinct = distinct_cells(cells.to_numpy(dtype=object))
    return _spread(*parse_distinct(name, distinct, ctx), codes, DTYPES[name])


def parse_distinct(name: str, cells: list[Cell], ctx: Context) -> tuple[list[Any], list[str | None]]:
    """Parse distinct cells of one call-field column (no cell twice), blanks giving ``(None, None)``."""
    parser = PARSERS[name]
    values: list[Any] = []
    problems: list[str | None] = []
    for cell in cells:
        # Two lists, not a list of pairs: a million distinct cells would hold a million pairs.
        value, problem = (None, None) if is_blank(cell) else parser(cell, ctx)
        values.append(value)
        problems.append(problem)
    return values, problems


def _spread(
    values: list[Any], problems: list[str | None], codes: np.ndarray, dtype: Any
) -> tuple[Any, np.ndarray]:
    """Each cell's answer from its distinct value's (``codes`` as ``pd.factorize`` gives them).

    The distinct answers become an array of ``dtype`` first, so a million cells never pass
    through Python one by one; code -1 (a missing cell) takes the empty slot after the last.
    """
    index = np.where(codes < 0, len(values), codes)
    if dtype is object:
        by_code = np.empty(len(values) + 1, dtype=object)
        for code, value in enumerate(values):
            by_code[code] = value  # one by one: a value may be a list (several retry gaps)
        spread = by_code.take(index)
    else:
        spread = pd.array([*values, None], dtype=dtype).take(index)
    found = np.empty(len(problems) + 1, dtype=object)
    found[:-1] = problems
    found[-1] = None
    return spread, found.take(index)


# --- metadata -----------------------------------------------------------------

_CANONICAL_INT = re.compile(r"^(?:0|-?[1-9][0-9]*)\Z")  # ASCII digits, no trailing line break
_PLAIN_DECIMAL = re.compile(r"^-?(?:0|[1-9][0-9]*)\.[0-9]+\Z")
#: The largest integer every JSON reader holds exactly: JavaScript's and most others' numbers are
#: doubles, which skip integers above 2**53 (12345678901234567 reads as 12345678901234568).
EXACT_INT = 2**53


def metadata_value(cell: Cell) -> Any:
    """The JSON value a metadata cell is sent as, or ``None`` to leave it out.

    Text that is a canonical integer within ±2**53, or a plain decimal that a
    double holds as written (its ``repr`` is the text: ``2.5``, not ``1.10``
    or ``12345678901234567890.5``), becomes a number; everything else stays
    the exact text (``007`` stays ``"007"``), so no reader can change it.
    """
    if isinstance(cell, str):
        if not cell.strip():
            return None
        if _CANONICAL_INT.match(cell):
            # Compared by length first: int() of thousands of digits is refused (4300) or slow.
            if len(cell) <= 17 and abs(number := int(cell)) <= EXACT_INT:
                return number
            return cell
        if _PLAIN_DECIMAL.match(cell):
            decimal = float(cell)
            return decimal if repr(decimal) == cell else cell
        return cell
    if isinstance(cell, bool):
        return cell
    if isinstance(cell, int):
        return cell if abs(cell) <= EXACT_INT else str(cell)
    if isinstance(cell, float):
        if not math.isfinite(cell):
            return None
        # A float cell is a double already: sent as one, it reads back as the same double.
        return int(cell) if cell.is_integer() and abs(cell) <= EXACT_INT else cell
    if isinstance(cell, dt.datetime):
        return cell.replace(microsecond=0).isoformat()
    if isinstance(cell, dt.date | dt.time):
        return cell.isoformat()
    if cell is None:
        return None
    return cell_text(cell)
