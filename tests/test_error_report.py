"""``validate --report``: a sheet a person can fix in Excel and load again, or one line per problem."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook
from openpyxl.worksheet.worksheet import Worksheet

from loader.cli import main
from loader.report import BAD_FILL

REGION = ["--default-region", "IN", "--timezone", "Asia/Kolkata"]
HEADERS = ["Name", "Mobile", "schedule_at", "min_trigger_time", "max_trigger_time", "priority", "Joined"]


def leads_workbook(path: Path, *, title_rows: int = 0) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Leads"
    for _ in range(title_rows):
        sheet.append(["Leads for March"])
    sheet.append(HEADERS)
    sheet.append(
        ["Asha", "+91 98765 43210", dt.datetime(2030, 5, 28, 9, 30), "09:00", "18:00", 5, dt.date(2024, 1, 2)]
    )
    sheet.append(["Bala", "12345", None, "9 o'clock", None, 150, None])  # three bad cells
    sheet.append([None] * len(HEADERS))  # a blank row keeps its place
    sheet.append(["Chitra", 9876543212, None, "19:00", "09:00", None, None])  # window the wrong way round
    sheet.append(["Dev", None, "2030-05-28", None, None, "high", None])  # three bad cells, one blank
    sheet.append(["Esha", "+91 98765 43210", None, None, None, None, None])  # duplicate: not a bad cell
    workbook.save(path)
    return path


def red_cells(sheet: Worksheet) -> set[str]:
    return {
        cell.coordinate
        for row in sheet.iter_rows()
        for cell in row
        if cell.fill.fill_type == "solid" and str(cell.fill.fgColor.rgb).endswith(BAD_FILL)
    }


def commented_cells(sheet: Worksheet) -> dict[str, str]:
    return {cell.coordinate: cell.comment.text for row in sheet.iter_rows() for cell in row if cell.comment}


def test_the_excel_report_marks_exactly_the_bad_cells_and_fixing_them_validates(
    tmp_path: Path, capsys: Any
) -> None:
    source = leads_workbook(tmp_path / "leads.xlsx")
    report = tmp_path / "errors.xlsx"
    assert main(["validate", str(source), "--report", str(report), *REGION]) == 1
    assert f"report: {report}" in capsys.readouterr().out

    workbook = load_workbook(report)
    sheet = workbook.active
    assert sheet is not None
    bad = {"B3", "D3", "F3", "D5", "B6", "C6", "F6"}
    assert red_cells(sheet) == bad
    comments = commented_cells(sheet)
    assert set(comments) == bad
    assert (
        comments["F3"]
        == "priority: 150 is outside [-100, 100]\nTo fix: Type a whole number from -100 to 100."
    )
    assert comments["B6"].startswith(
        "Mobile: is blank; every row needs a phone number\nTo fix: Type the number"
    )
    assert comments["D5"].startswith("min_trigger_time: 19:00 is not before max_trigger_time 09:00\nTo fix:")
    # A copy of the sheet, row for row: headers, values and types as they were, then callkaro_message.
    assert [c.value for c in sheet[1]] == [*HEADERS, "callkaro_message"]
    assert sheet.freeze_panes == "A2"
    assert [c.value for c in sheet[2]][:7] == [
        "Asha",
        "+91 98765 43210",
        dt.datetime(2030, 5, 28, 9, 30),
        "09:00",
        "18:00",
        5,
        dt.datetime(2024, 1, 2),
    ]
    assert sheet["B5"].value == 9876543212
    assert all(c.value is None for c in sheet[4])
    assert sheet["H3"].value == (
        "Mobile: 12345 is not a valid phone number for IN; min_trigger_time: 9 o'clock is not a time of day; "
        "write it as HH:MM, e.g. 08:30 or 8:30 PM; priority: 150 is outside [-100, 100]"
    )
    assert sheet["H2"].value is None
    assert sheet["H7"].value == "Mobile: +919876543210 already appears on row 2"
    # Rows without problems are plain.
    assert all(c.fill.fill_type is None and c.comment is None for c in sheet[2])

    # The person fixes the red cells in Excel and checks the same file again.
    sheet["B3"] = "+91 98765 43211"
    sheet["D3"] = "09:00"
    sheet["F3"] = 100
    sheet["D5"] = "08:00"
    sheet["B6"] = "+91 98765 43213"
    sheet["C6"] = dt.datetime(2030, 5, 28, 10, 0)
    sheet["F6"] = -5
    sheet.delete_rows(7)  # the duplicate
    workbook.save(report)
    assert main(["validate", str(report), *REGION]) == 0
    assert capsys.readouterr().out.startswith("valid  4\n")


def test_the_report_keeps_title_rows_so_row_numbers_and_header_row_still_match(tmp_path: Path) -> None:
    source = leads_workbook(tmp_path / "leads.xlsx", title_rows=2)
    report = tmp_path / "errors.xlsx"
    assert main(["validate", str(source), "--header-row", "3", "--report", str(report), *REGION]) == 1
    sheet = load_workbook(report).active
    assert sheet is not None
    assert sheet["A1"].value == "Leads for March"
    assert sheet.freeze_panes == "A4"
    assert red_cells(sheet) == {"B5", "D5", "F5", "D7", "B8", "C8", "F8"}
    assert main(["validate", str(report), "--header-row", "3", *REGION]) == 1


def test_a_problem_with_the_row_as_a_whole_is_marked_on_its_message(tmp_path: Path) -> None:
    source = tmp_path / "leads.csv"
    source.write_text("Name,Phone\nAsha,+91 98765 43210\nRao, Bala,+91 98765 43211\n", encoding="utf-8")
    report = tmp_path / "errors.xlsx"
    assert main(["validate", str(source), "--report", str(report), *REGION]) == 1
    sheet = load_workbook(report).active
    assert sheet is not None
    # The extra cell sits in a column with no header; the message column comes after it.
    assert [c.value for c in sheet[3]] == ["Rao", " Bala", "+91 98765 43211", sheet["D3"].value]
    assert red_cells(sheet) == {"B3", "D3"}
    assert commented_cells(sheet)["D3"].startswith("the row has 3 cells but there are only 2 column headers")


def test_the_csv_report_has_one_line_per_problem(tmp_path: Path) -> None:
    source = leads_workbook(tmp_path / "leads.xlsx")
    report = tmp_path / "errors.csv"
    assert main(["validate", str(source), "--report", str(report), *REGION]) == 1
    with report.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["source_row", "column", "value", "error"]
    assert rows[1:4] == [
        ["3", "Mobile", "12345", "is not a valid phone number for IN"],
        [
            "3",
            "min_trigger_time",
            "9 o'clock",
            "is not a time of day; write it as HH:MM, e.g. 08:30 or 8:30 PM",
        ],
        ["3", "priority", "150", "is outside [-100, 100]"],
    ]
    assert len(rows) == 8


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("errors.txt", "--report {report} must end in .csv (one line per problem) or .xlsx"),
        ("leads.xlsx", "--report {report} is the input file; the loader never overwrites its input"),
    ],
)
def test_a_report_path_that_cannot_work_is_refused(
    tmp_path: Path, capsys: Any, name: str, message: str
) -> None:
    source = leads_workbook(tmp_path / "leads.xlsx")
    before = source.read_bytes()
    report = tmp_path / name
    assert main(["validate", str(source), "--report", str(report), *REGION]) == 2
    assert message.format(report=report) in capsys.readouterr().err
    assert source.read_bytes() == before


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("problems.csv", "Is a directory"),  # a folder of that name
        ("reports/problems.xlsx", "reports is a file, not a folder"),
    ],
)
def test_a_report_that_cannot_be_written_is_an_error_naming_it_not_a_traceback(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, name: str, why: str
) -> None:
    leads_workbook(tmp_path / "leads.xlsx")
    (tmp_path / "problems.csv").mkdir()
    (tmp_path / "reports").write_text("a file where the folder should be\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "leads.xlsx", "--report", name, *REGION, "--quiet"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"callkaro-loader: error: --report {name} cannot be written ({why})",
        "hint: Choose a path in a folder you can write to.",
    ]


def test_a_stray_control_character_is_written_as_a_replacement_mark_not_a_crash(tmp_path: Path) -> None:
    rows = ["phone,name", *[f"+91987654{i:04d},name {i}" for i in range(60)]]
    rows[5] = "+919876540004,bad\x01name"
    source = tmp_path / "leads.csv"
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    report, results = tmp_path / "errors.xlsx", tmp_path / "results.xlsx"
    assert main(["validate", str(source), "--report", str(report)]) == 0
    assert main(["run", str(source), "--agent-id", "a", "--dry-run", "--output", str(results)]) == 0
    for written in (report, results.with_name("results.preview.xlsx")):
        sheet = load_workbook(written).active
        assert sheet is not None
        assert sheet["B6"].value == "bad\ufffdname"


def test_a_phone_stored_as_a_number_shows_every_digit_in_the_excel_report(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Phone", "Priority"])
    sheet.append([919876543210, 500])  # the priority is wrong, so the report has something to mark
    source = tmp_path / "leads.xlsx"
    book.save(source)
    report = tmp_path / "errors.xlsx"
    assert main(["validate", str(source), "--default-region", "IN", "--report", str(report)]) == 1
    written = load_workbook(report).active
    assert written is not None
    assert (written["A2"].value, written["A2"].number_format) == (919876543210, "0")  # not 9.19877E+11
    assert written["B2"].number_format == "General"
