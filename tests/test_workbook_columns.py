"""Workbooks gathered column by column give the very sheet the row-by-row reading gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from loader import columnar, workbooks
from loader.errors import LoaderError
from loader.read import read_sheet

FIXTURES = Path(__file__).parent / "fixtures"


def _outcome(path: Path, **options: Any) -> Any:
    try:
        sheet = read_sheet(path, **options)
    except LoaderError as exc:
        return ("refused", str(exc))
    return (
        sheet.headers,
        [[(type(c).__name__, c) for c in sheet.cells[i].tolist()] for i in sheet.cells.columns],
        sheet.source_rows,
        sheet.above_header,
        sheet.sheet_name,
    )


def _both_ways(path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> None:
    by_columns = _outcome(path, **options)
    real = workbooks.rows_of
    asked: list[bool] = []

    def by_rows(opened: dict[str, Any], collect: Any) -> Any:
        asked.append(True)
        return real(opened, None)  # to_python(skip_empty_area=False): the plain rows

    with monkeypatch.context() as patched:
        patched.setattr(workbooks, "rows_of", by_rows)
        assert _outcome(path, **options) == by_columns
    assert asked, "the workbook was not read through rows_of: nothing was compared"


@pytest.mark.parametrize(
    "name", ["contacts.xlsx", "contacts.ods", "excel_damage.xlsx", "template_filled.xlsx"]
)
def test_fixture_workbooks_read_the_same_by_columns_and_by_rows(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _both_ways(FIXTURES / name, monkeypatch)
    if name == "excel_damage.xlsx":
        _both_ways(FIXTURES / name, monkeypatch, header_row=3)


def test_a_sheet_that_starts_below_and_right_of_a1_keeps_its_row_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = Workbook()
    sheet = book.active
    sheet["C3"], sheet["D3"] = "Phone", "Name"
    sheet["C4"], sheet["D4"] = "+919876543210", "Asha"
    sheet["C6"], sheet["D6"] = 919876543211, None
    path = tmp_path / "offset.xlsx"
    book.save(path)
    _both_ways(path, monkeypatch, header_row=3)
    assert read_sheet(path, header_row=3).source_rows == [4, 6]


@pytest.mark.parametrize(
    "cells",
    [
        {"A3": "Phone", "B3": "Name", "A4": "+919876543210", "C5": 5},  # rows 1-2 blank, from column A
        {"B2": "Phone", "C2": "Name", "B3": 919876543210, "D4": "x"},  # from B2: rows padded on the left
        {"A1": "Phone", "E1": "Notes", "A2": "+919876543210", "C7": 2.5},  # ragged, from A1
        {"B1": "Phone", "A2": "+919876543210", "B2": "Asha"},  # column A used only below row 1
    ],
)
def test_sheets_starting_anywhere_read_the_same_by_columns_and_by_rows(
    cells: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = Workbook()
    sheet = book.active
    for ref, value in cells.items():
        sheet[ref] = value
    path = tmp_path / "placed.xlsx"
    book.save(path)
    header_row = int(min(cells, key=lambda ref: int(ref[1:]))[1:])
    _both_ways(path, monkeypatch, header_row=header_row)


def test_slices_of_rows_join_into_the_same_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = Workbook()
    sheet = book.active
    sheet.append(["Phone", "Age", "Name"])
    for i in range(25):
        sheet.append([f"+9198765432{i:02d}", i if i % 7 else "", "x" * (i % 3)])
    path = tmp_path / "many.xlsx"
    book.save(path)
    monkeypatch.setattr(columnar, "CHUNK_ROWS", 4)
    _both_ways(path, monkeypatch)


def test_an_overlong_cell_is_named_by_its_row_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = Workbook()
    sheet = book.active
    sheet.append(["Phone", "Notes", "Age"])
    sheet.append(["+919876543210", "ok", 5])
    sheet.append(["+919876543211", "x" * 40_000, 6])
    path = tmp_path / "long.xlsx"
    book.save(path)
    _both_ways(path, monkeypatch)


def test_the_first_overlong_cell_in_reading_order_is_named() -> None:
    import numpy as np
    import pyarrow as pa

    long = "x" * 40_000
    found = columnar.Columns(
        arrays=[
            pa.chunked_array([pa.array(["a", "b", long, long], type=pa.large_string())]),
            np.array(["a", 5, "b", long + "y"], dtype=object),
            np.array(["a", long + "yy", 5, ""], dtype=object),
        ],
        height=4,
    )
    with pytest.raises(LoaderError, match="row 2 has a cell of 40,002 characters"):
        found.check_cell_sizes(Path("long.xlsx"))


def test_cells_as_long_as_a_cell_can_be_are_read_however_many_bytes_their_characters_take(
    tmp_path: Path,
) -> None:
    from loader.limits import MAX_CELL_CHARS

    # More bytes than MAX_CELL_CHARS in UTF-8, but not more characters: nothing is too long.
    accented, devanagari, astral = "é" * MAX_CELL_CHARS, "अ" * MAX_CELL_CHARS, "\U0001d7d7" * MAX_CELL_CHARS
    book = Workbook()
    sheet = book.active
    sheet.append(["Phone", "Notes", "Mixed"])
    sheet.append(["+919876543210", accented, 5])
    sheet.append(["+919876543211", devanagari, astral])
    path = tmp_path / "long_but_not_too_long.xlsx"
    book.save(path)
    cells = read_sheet(path).cells
    assert cells[1].tolist() == [accented, devanagari]
    assert cells[2].tolist() == [5, astral]


def test_an_overlong_cell_is_named_past_cells_of_many_bytes_but_not_too_many_characters() -> None:
    import numpy as np
    import pyarrow as pa

    from loader.limits import MAX_CELL_CHARS

    wide = "\U0001d7d7" * MAX_CELL_CHARS  # four bytes a character
    found = columnar.Columns(
        arrays=[
            pa.chunked_array([pa.array(["a", wide, "b", "c"], type=pa.large_string())]),
            np.array(["a", 5, wide, "x" * (MAX_CELL_CHARS + 1)], dtype=object),
        ],
        height=4,
    )
    with pytest.raises(LoaderError, match=f"row 4 has a cell of {MAX_CELL_CHARS + 1:,} characters"):
        found.check_cell_sizes(Path("long.xlsx"))
