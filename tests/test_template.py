"""``callkaro-loader template``: a sheet to fill in that loads unchanged, in Excel or as CSV."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from loader.cli import main
from loader.columns import ROW_FIELDS, map_columns
from loader.normalise import Context
from loader.payload import build_bodies
from loader.read import read_sheet
from loader.template import write_template
from loader.validate import validate_rows

FIXTURES = Path(__file__).parent / "fixtures"
HEADERS = [*ROW_FIELDS, "name", "city"]
CTX = Context(
    default_region="IN",
    timezone=zoneinfo.ZoneInfo("Asia/Kolkata"),
    now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
)
EXAMPLE_BODY = {
    "to_number": "+919876543210",
    "agent_id": "a",
    "metadata": {"name": "Asha Rao", "city": "Pune"},
    "schedule_at": "2030-01-08T10:00:00",
    "min_trigger_time": "09:00",
    "max_trigger_time": "18:00",
    "carry_over": True,
    "number_of_retries": 2,
    "gap_between_retries": [30, 120],
    "priority": 0,
}


def bodies(path: Path) -> dict[int, dict[str, Any]]:
    sheet = read_sheet(path)
    validation = validate_rows(sheet, map_columns(sheet), CTX)
    assert set(validation.status) == {"valid"}, validation.message.to_dict()
    return build_bodies(sheet, validation, agent_id="a", batch_id=None)


def test_the_excel_template_guards_every_column(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "contacts.xlsx"
    assert main(["template", str(path)]) == 0
    assert capsys.readouterr().out == f"template: {path}\n"
    sheet = load_workbook(path).active
    assert sheet is not None
    assert [c.value for c in sheet[1]] == HEADERS
    assert all(c.comment is not None and c.comment.text for c in sheet[1])
    assert "country code" in sheet["A1"].comment.text
    # Excel cannot turn a typed phone number (or "30,120") into a number: the columns are text.
    assert sheet.column_dimensions["A"].number_format == "@"
    assert sheet.column_dimensions["G"].number_format == "@"
    rules = {str(v.sqref).split(":")[0]: v for v in sheet.data_validations.dataValidation}
    assert (rules["E2"].type, rules["E2"].formula1) == ("list", '"yes,no"')
    assert (rules["F2"].type, rules["F2"].operator, rules["F2"].formula1) == (
        "whole",
        "greaterThanOrEqual",
        "0",
    )
    assert (rules["H2"].type, rules["H2"].formula1, rules["H2"].formula2) == ("whole", "-100", "100")
    assert rules["C2"].type == rules["D2"].type == "time"
    assert sheet.freeze_panes == "A2"


def test_the_excel_template_has_no_row_a_run_would_send_and_rows_typed_below_load(tmp_path: Path) -> None:
    path = write_template(tmp_path / "contacts.xlsx")
    workbook = load_workbook(path)
    sheet = workbook.active
    assert sheet is not None
    # The examples live in the header comments: a rep typing leads below dials none of them.
    assert sheet.max_row == 1
    assert "+91 98765 43210" in sheet["A1"].comment.text
    # What a person types: Excel makes times of "10:00", keeps text in the text columns.
    sheet.append(["98450 12345", None, dt.time(10, 0), dt.time(17, 30), "no", 1, "60", 10, "Vikram", None])
    workbook.save(path)
    assert bodies(path) == {
        2: {
            "to_number": "+919845012345",
            "agent_id": "a",
            "metadata": {"name": "Vikram"},
            "min_trigger_time": "10:00",
            "max_trigger_time": "17:30",
            "carry_over": False,
            "number_of_retries": 1,
            "gap_between_retries": 60,
            "priority": 10,
        }
    }


def test_the_template_filled_in_and_saved_by_libreoffice_loads() -> None:
    loaded = bodies(FIXTURES / "template_filled.xlsx")
    assert loaded[2] == EXAMPLE_BODY
    assert loaded[3]["to_number"] == "+919845012345"
    assert loaded[3]["schedule_at"] == "2030-02-01T11:00:00"
    assert loaded[4] == {
        "to_number": "+919900123456",
        "agent_id": "a",
        "metadata": {"name": "Meera", "city": "Mumbai"},
    }


def test_the_csv_template_is_the_headers_alone_and_rows_typed_below_load(tmp_path: Path) -> None:
    path = write_template(tmp_path / "contacts.csv")
    assert path.read_text(encoding="utf-8-sig").splitlines() == [",".join(HEADERS)]
    with path.open("a", encoding="utf-8", newline="") as handle:
        handle.write("+91 98765 43211,,,,,,,,Bala,\r\n")
    assert bodies(path) == {
        2: {"to_number": "+919876543211", "agent_id": "a", "metadata": {"name": "Bala"}},
    }


@pytest.mark.parametrize("name", ["new.xlsx", "new.csv"])
def test_a_new_template_validates_to_nothing_a_run_would_send(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["template", name]) == 0
    capsys.readouterr()
    code = main(["validate", name, "--default-region", "IN"])
    out, err = capsys.readouterr()
    assert "valid" not in out
    assert (code, err.splitlines()[0]) == (
        2,
        f"callkaro-loader: error: {name}: has a header row but no data rows below row 1",
    )
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("name", "exists", "message"),
    [
        ("contacts.ods", False, "template {path} must end in .xlsx or .csv"),
        ("contacts.xlsx", True, "{path} already exists; the template never replaces a file"),
    ],
)
def test_a_template_path_that_cannot_work_is_refused(
    tmp_path: Path, capsys: Any, name: str, exists: bool, message: str
) -> None:
    path = tmp_path / name
    if exists:
        path.write_text("keep me")
    assert main(["template", str(path)]) == 2
    assert message.format(path=path) in capsys.readouterr().err
    assert not exists or path.read_text() == "keep me"


def test_a_template_into_a_folder_that_cannot_be_written_is_an_error_naming_it_not_a_traceback(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sheets").write_text("a file where the folder should be\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["template", "sheets/contacts.xlsx"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "callkaro-loader: error: sheets/contacts.xlsx cannot be written (sheets is a file, not a folder)",
        "hint: Choose a path in a folder you can write to.",
    ]
