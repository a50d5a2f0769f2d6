"""What Excel does to a contact list is repaired where it can be, and refused row by row where it cannot."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from loader.cells import Cell
from loader.columns import map_columns
from loader.normalise import Context, parse_phone, parse_schedule_at, parse_time_of_day
from loader.payload import build_bodies
from loader.read import read_sheet
from loader.validate import validate_rows

FIXTURES = Path(__file__).parent / "fixtures"
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")


def ctx(region: str | None = "IN") -> Context:
    return Context(default_region=region, timezone=KOLKATA, now=NOW)


MANGLED = (
    "was mangled by a spreadsheet into scientific notation, so its digits are lost; format the column "
    "as text and type the number again"
)


def test_the_damaged_sheet_saved_by_libreoffice_loads_what_can_be_trusted() -> None:
    sheet = read_sheet(FIXTURES / "excel_damage.xlsx", header_row=3)
    # A byte-order mark and stray spaces around headers do not stop them matching.
    assert sheet.headers == [
        "Name",
        "Phone",
        "schedule_at",
        "Min Trigger Time",
        "max_trigger_time",
        "carry_over",
        "priority",
        "VIP",
        "Joined",
        "Amount",
        "Notes",
    ]
    # The formatted and merged rows and columns past the data are not part of the table.
    assert sheet.source_rows == [4, 5, 6, 7, 8]
    validation = validate_rows(sheet, map_columns(sheet), ctx())
    bodies = build_bodies(sheet, validation, agent_id="a", batch_id=None)
    assert bodies == {
        4: {
            # A national number stored as a number; the country from --default-region.
            "to_number": "+919876543210",
            "agent_id": "a",
            "metadata": {
                "Name": "Asha",
                "VIP": True,  # a boolean stays a boolean
                "Joined": "2024-01-02",  # a date cell becomes ISO text
                "Amount": 1500,  # a whole Excel number becomes an integer
                "Notes": "national number stored as a number",
            },
            "schedule_at": "2030-05-28T09:30:00",
            "min_trigger_time": "09:00",  # 0.375 of a day
            "max_trigger_time": "18:00",
            "carry_over": True,
            "priority": 5,  # =2+3, its cached value
        },
        5: {
            "to_number": "+919876543211",
            "agent_id": "a",
            "metadata": {
                "Name": "Bala",
                "VIP": False,
                "Joined": "2024-03-04T10:15:00",
                "Amount": 99.5,
                "Notes": "number with its country code",
            },
            "schedule_at": "2030-05-28T14:00:00",
            "min_trigger_time": "09:30",
            "max_trigger_time": "17:00",
            "carry_over": False,
            "priority": 10,
        },
        7: {
            "to_number": "+919876543213",  # shown as 9.20E+11, but the cell kept every digit
            "agent_id": "a",
            "metadata": {"Name": "Dev", "Notes": "shown as 9.20E+11"},
        },
    }
    problems = validation.problems[["source_row", "column", "value", "error"]].values.tolist()
    assert problems == [
        [6, "Phone", "9.19877E+11", MANGLED],
        [8, "schedule_at", "2030-05-28", "is a date without a time; add the time, e.g. 2030-05-28 09:30"],
    ]


@pytest.mark.parametrize(
    ("cell", "region", "expected"),
    [
        (9876543210.0, "IN", ("+919876543210", None)),
        (9876543210, "IN", ("+919876543210", None)),
        (919876543210.0, "IN", ("+919876543210", None)),
        (
            919876543210.0,
            None,
            (None, "has no country code; write it as +<country code><number> or use --default-region"),
        ),
        # Rome's 06 landlines keep their 0 in the number: a number cell lost it, and it is put back.
        (612345678, "IT", ("+390612345678", None)),
        # Italian mobile or a Como landline that lost its 0? Refused, not guessed.
        (
            3123456789,
            "IT",
            (
                None,
                "was stored as a number, so a leading 0 may have been lost: it could be +393123456789 or "
                "+3903123456789; format the column as text and type the number again",
            ),
        ),
        ("9.19877E+11", "IN", (None, MANGLED)),
        ("9,19877E+11", "IN", (None, MANGLED)),
        (9.5, "IN", (None, "is not a phone number")),
        (True, "IN", (None, "is not a phone number")),
    ],
)
def test_excel_phone_cells(cell: Cell, region: str | None, expected: tuple[Any, Any]) -> None:
    assert parse_phone(cell, ctx(region)) == expected


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (dt.time(9, 30), "09:30"),
        (dt.datetime(1899, 12, 30, 9, 30), "09:30"),  # a time on Excel's epoch day
        (0.395833333, "09:30"),  # a time cell that lost its format: a fraction of a day
        (0.5, "12:00"),
        (dt.timedelta(hours=8, minutes=15), "08:15"),
        ("9:30:00", "09:30"),
    ],
)
def test_excel_time_cells_become_hh_mm(cell: Cell, expected: str) -> None:
    assert parse_time_of_day(cell, ctx()) == (expected, None)


@pytest.mark.parametrize(
    "cell",
    [dt.datetime(2030, 5, 28, 9, 30), "2030-05-28 9:30:00", "2030-05-28 09:30", "2030-05-28T09:30:00"],
)
def test_excel_date_time_cells_and_their_text_forms_become_iso(cell: Cell) -> None:
    assert parse_schedule_at(cell, ctx()) == ("2030-05-28T09:30:00", None)


def test_a_workbook_written_by_a_program_reads_typed_cells_the_same(tmp_path: Path) -> None:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["phone", "min_trigger_time", "carry_over", "priority", "Joined"])
    sheet.append([919876543210, dt.time(8, 30), True, 3, dt.date(2024, 1, 2)])
    sheet.append([None, None, None, None, None])  # an empty trailing row
    path = tmp_path / "leads.xlsx"
    workbook.save(path)
    loaded = read_sheet(path)
    validation = validate_rows(loaded, map_columns(loaded), ctx())
    assert build_bodies(loaded, validation, agent_id="a", batch_id=None) == {
        2: {
            "to_number": "+919876543210",
            "agent_id": "a",
            "metadata": {"Joined": "2024-01-02"},
            "min_trigger_time": "08:30",
            "carry_over": True,
            "priority": 3,
        }
    }
