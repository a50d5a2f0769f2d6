"""The column-wise helpers give, for whole columns, exactly what their one-cell definitions give."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loader.cells import WHITESPACE, blank_mask, cell_text, is_blank
from loader.normalise import Context, parse_column
from loader.results import csv_texts, inert

TEXTS = [
    "",
    " ",
    "\t\r\n",
    "\xa0",
    "\u3000\u2028",
    "\x1c\x1f",
    "\u200b",  # zero-width space: not whitespace to Python
    "\ufeff",
    "a",
    " a ",
    "=1+2",
    "@SUM(A1)",
    "+919876543210",
    "+91 98765 43210",
    "-3",
    "-cmd",
    "\tx",
    "\uff1dx",
    "007",
    "Zoë",
]


def test_whitespace_is_every_character_python_strips() -> None:
    assert "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()) == WHITESPACE


@pytest.mark.parametrize("dtype", ["str", object])
def test_blank_cells_are_found_column_wise_as_one_at_a_time(dtype: Any) -> None:
    column = pd.Series(TEXTS, dtype=dtype)
    assert blank_mask(column).tolist() == [is_blank(t) for t in TEXTS]


def test_blank_typed_cells_are_found_as_one_at_a_time() -> None:
    cells = ["", 0, 0.0, float("nan"), None, False, dt.date(2030, 1, 1), " "]
    assert blank_mask(pd.Series(cells, dtype=object)).tolist() == [is_blank(c) for c in cells]


@pytest.mark.parametrize("dtype", ["str", object])
def test_results_cells_are_made_inert_column_wise_as_one_at_a_time(dtype: Any) -> None:
    assert csv_texts(pd.Series(TEXTS, dtype=dtype)) == [inert(cell_text(t)) for t in TEXTS]


def test_typed_results_cells_are_shown_and_made_inert_as_one_at_a_time() -> None:
    cells = [919876543210.0, -3, True, dt.datetime(2030, 5, 28, 9, 30), "=x", ""]
    assert csv_texts(pd.Series(cells, dtype=object)) == [inert(cell_text(c)) for c in cells]


@pytest.mark.parametrize(
    "name, texts",
    [
        ("priority", ["5", " 5 ", "", "x", "5", "150", "-3", "5.0"]),
        ("carry_over", ["yes", "Y", "", "no", "maybe", "yes"]),
        ("gap_between_retries", ["30", "30,120", "[30, 120]", "", "x", "30,120"]),
        ("min_trigger_time", ["09:30", "8:30 PM", "", "25:00", "09:30"]),
        ("schedule_at", ["2030-05-28 09:30", "2030-05-28", "", "soon", "2030-05-28 09:30"]),
        ("to_number", ["+919876543210", "98765 43210", "", "12", "9.19877E+11", "+919876543210"]),
    ],
)
def test_a_text_column_parses_each_distinct_value_once_with_the_same_answers(
    name: str, texts: list[str], ctx: Context
) -> None:
    compact = _lists(parse_column(name, pd.Series(texts, dtype="str"), ctx))
    objects = _lists(parse_column(name, pd.Series(texts, dtype=object), ctx))
    assert compact == objects


def _lists(parsed: tuple[Any, Any]) -> tuple[list[Any], list[Any]]:
    """Values and problems as lists, a missing value (NaN in text, NA in numbers) as None."""
    values, problems = parsed
    return [v if isinstance(v, list) or not pd.isna(v) else None for v in values], list(problems)


def test_each_repeat_of_a_number_points_at_its_first_row(make_sheet: Any, ctx: Context) -> None:
    from loader.columns import map_columns
    from loader.validate import validate_rows

    phones = ["+919876543210", "+919876543211", "", "x", "+919876543210", "+91 98765 43211", "+919876543210"]
    for dtype in ("str", object):
        sheet = make_sheet(["Phone"], [[p] for p in phones])
        sheet.cells[0] = sheet.cells[0].astype(dtype)
        validation = validate_rows(sheet, map_columns(sheet), ctx)
        assert validation.status.tolist() == [
            "valid", "valid", "invalid", "invalid", "duplicate", "duplicate", "duplicate",
        ]  # fmt: skip
        assert validation.message.tolist()[4:] == [
            "Phone: +919876543210 already appears on row 2",
            "Phone: +919876543211 already appears on row 3",
            "Phone: +919876543210 already appears on row 2",
        ]


@settings(max_examples=200, deadline=None)
@given(
    picks=st.lists(st.sampled_from(["+919876543210", "+14155550123", "+447911123456", None]), max_size=40),
    dtype=st.sampled_from(["str", object]),
)
def test_duplicates_point_at_the_first_row_with_the_same_number(picks: list[str | None], dtype: Any) -> None:
    from loader.validate import _mark_duplicates

    index = pd.RangeIndex(2, 2 + len(picks))
    numbers = pd.Series(picks, index=index, dtype=dtype)
    status = pd.Series("valid", index=index, dtype=object)
    message = pd.Series("", index=index, dtype=object)
    _mark_duplicates(numbers, status, message, "Phone")
    first: dict[str, int] = {}
    for row, number in zip(index.tolist(), picks, strict=True):
        if number is None:
            assert status[row] == "valid"
        elif number in first:
            assert status[row] == "duplicate"
            assert message[row] == f"Phone: {number} already appears on row {first[number]}"
        else:
            first[number] = row
            assert status[row] == "valid" and message[row] == ""
