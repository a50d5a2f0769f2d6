"""What a single spreadsheet cell is, and how it is shown back to people.

A cell is whatever the reader produced: ``str`` for text files; for
spreadsheets also ``int``, ``float``, ``bool``, ``datetime``, ``date``,
``time`` and ``timedelta``. A blank cell is ``""``: never ``None`` or NaN, so
nothing downstream has to guess what a missing value looks like.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd

Cell = Any  # str | int | float | bool | datetime | date | time | timedelta


def is_blank(value: Cell) -> bool:
    """True for an empty or whitespace-only cell."""
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float):
        return math.isnan(value)
    return value is None


#: Every character ``str.strip`` removes (``str.isspace``); none lies above U+3000.
WHITESPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())
#: A text cell that is blank, as a regular expression pyarrow (RE2) runs over whole columns.
_BLANK_PATTERN = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE) + "]*$"


def is_text_column(column: pd.Series) -> bool:
    """Whether ``column`` is a compact text column (pandas' arrow-backed ``str``), not Python objects."""
    return isinstance(column.dtype, pd.StringDtype)


def arrow_text(column: pd.Series) -> Any:
    """The pyarrow array behind a compact text column, or None for a column of Python objects."""
    dtype = column.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        import pyarrow as pa

        return pa.chunked_array(column.array._pa_array)
    return None


def column_matches(column: pd.Series, pattern: str) -> np.ndarray | None:
    """Which cells of a compact text column match ``pattern`` (RE2), or None for other columns."""
    values = arrow_text(column)
    if values is None:
        return None
    import pyarrow.compute as pc

    found = pc.fill_null(pc.match_substring_regex(values, pattern), False)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def blank_mask(column: pd.Series) -> np.ndarray:
    """``is_blank`` of every cell of ``column``, as a boolean array; text columns in one vectorised pass."""
    found = column_matches(column, _BLANK_PATTERN)
    if found is not None:
        return found
    values = np.asarray(column.to_numpy(dtype=object), dtype=object)
    kinds = cell_types(values)
    blank = np.zeros(len(values), dtype=bool)
    texts = of_type(kinds, str)
    if texts.any():
        import pyarrow as pa
        import pyarrow.compute as pc

        matched = pc.match_substring_regex(pa.array(values[texts], type=pa.large_string()), _BLANK_PATTERN)
        blank[texts] = np.asarray(matched.to_numpy(zero_copy_only=False), dtype=bool)
    floats = of_type(kinds, float)
    if floats.any():
        blank[floats] = np.isnan(values[floats].astype(float))
    blank[of_type(kinds, type(None))] = True
    return blank


#: ``type`` of every element of an object array, in one C loop.
_TYPE_OF = np.frompyfunc(type, 1, 1)


def of_type(kinds: np.ndarray, kind: type) -> np.ndarray:
    """Which of ``cell_types``' answers are exactly ``kind``, as a boolean array."""
    return np.asarray(kinds == kind, dtype=bool)  # noqa: E721 (numpy compares element-wise)


def cell_types(values: np.ndarray) -> np.ndarray:
    """The exact type of each cell of an object array (``bool`` is not ``int`` here, as in ``is_blank``)."""
    return np.asarray(_TYPE_OF(values), dtype=object) if len(values) else np.empty(0, dtype=object)


def cell_text(value: Cell) -> str:
    """The cell as a person would read it in the spreadsheet.

    Used for error messages and for CSV results, so an Excel number
    ``919876543210.0`` reads as ``919876543210`` and a date as ISO text.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ""
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.time):
        return value.isoformat(timespec="minutes" if not value.second else "seconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        total = int(value.total_seconds())
        hours, rest = divmod(abs(total), 3600)
        return f"{'-' if total < 0 else ''}{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return str(value)


def shorten(text: str, limit: int = 60) -> str:
    """A value quoted in a message, cut so one bad cell cannot flood the screen."""
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def distinct_cells(values: list[Any] | np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """Codes into the distinct values, and those values.

    1, 1.0 and True are equal as dict keys, but not as cells: cells are
    grouped by exact type first, and each group is factorised in C (a
    column of text, every CSV column, in one step); only a group whose
    cells cannot be hashed (a list, in a hand-made Sheet) goes cell by cell.
    """
    if isinstance(values, np.ndarray) and values.dtype == object:
        array = values
    else:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    if pd.api.types.infer_dtype(array, skipna=False) == "string":
        codes, uniques = pd.factorize(array)
        return codes, list(uniques)
    type_codes, types = pd.factorize(cell_types(array))
    codes = np.empty(len(array), dtype=np.int64)
    distinct: list[Any] = []
    for group, kind in enumerate(types):
        where = np.flatnonzero(type_codes == group)
        try:
            group_codes, uniques = pd.factorize(array[where], use_na_sentinel=False)
            found = uniques.tolist()
        except TypeError:
            found = []
        if not found or any(type(value) is not kind for value in found):
            # Unhashable cells, or ones pandas answers with another value (None comes back as NaN).
            group_codes, found = _distinct_one_by_one(array[where])
        codes[where] = group_codes + len(distinct)
        distinct.extend(found)
    return codes, distinct


def _distinct_one_by_one(values: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """``distinct_cells`` of cells of one type that may not be hashable."""
    codes = np.empty(len(values), dtype=np.int64)
    distinct: list[Any] = []
    index: dict[Any, int] = {}
    for position, value in enumerate(values.tolist()):
        try:
            code = index.get(value)
        except TypeError:  # unhashable: stands alone
            codes[position] = len(distinct)
            distinct.append(value)
            continue
        if code is None:
            code = index[value] = len(distinct)
            distinct.append(value)
        codes[position] = code
    return codes, distinct
