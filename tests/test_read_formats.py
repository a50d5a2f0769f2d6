"""Every kind of file people send loads as SPEC.md says: formats, encodings, separators, quotes."""

from __future__ import annotations

import copy
import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from loader.cli import main
from loader.columns import map_columns
from loader.errors import InputFileError, UsageError
from loader.normalise import Context
from loader.payload import build_bodies
from loader.read import Sheet, read_sheet
from loader.validate import Validation, validate_rows

FIXTURES = Path(__file__).parent / "fixtures"
CTX = Context(
    default_region="IN",
    timezone=zoneinfo.ZoneInfo("Asia/Kolkata"),
    now=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
)
AGENT = "agent-1"


def load(path: Path, **read_options: Any) -> tuple[Sheet, Validation, dict[int, dict[str, Any]]]:
    sheet = read_sheet(path, **read_options)
    validation = validate_rows(sheet, map_columns(sheet), CTX)
    return sheet, validation, build_bodies(sheet, validation, agent_id=AGENT, batch_id=None)


# The five valid contacts of tests/fixtures/contacts.*, as the API must receive them.
CONTACT_BODIES: dict[int, dict[str, Any]] = {
    2: {
        "to_number": "+919876543210",
        "agent_id": AGENT,
        "metadata": {
            "Name": "Zoë Fernandes",
            "City": "Panjim",
            "Age": 34,
            "Score": 2.5,
            "Customer ID": "007",
            "Notes": "Prefers calls after 9, not before",
        },
        "schedule_at": "2030-05-28T09:30:00",
        "min_trigger_time": "09:00",
        "max_trigger_time": "18:30",
        "carry_over": True,
        "number_of_retries": 3,
        "gap_between_retries": [30, 120],
        "priority": 5,
    },
    3: {
        "to_number": "+919876543211",
        "agent_id": AGENT,
        "metadata": {
            "Name": "José Müller",
            "City": "München",
            "Age": 41,
            "Score": 3.75,
            "Customer ID": "0042",
            "Notes": 'Said "call me" twice',
        },
        "min_trigger_time": "10:00",
        "max_trigger_time": "19:00",
        "carry_over": False,
        "number_of_retries": 2,
        "gap_between_retries": 45,
        "priority": -20,
    },
    4: {
        "to_number": "+919845012345",
        "agent_id": AGENT,
        "metadata": {
            "Name": "François Dubois",
            "City": "Orléans",
            "Customer ID": "A-17",
            "Notes": "Line one\nLine two",
        },
        "schedule_at": "2030-06-02T11:00:00",
    },
    5: {
        "to_number": "+919820011223",
        "agent_id": AGENT,
        "metadata": {
            "Name": "Ananya Iyer",
            "City": "Chennai",
            "Age": 29,
            "Score": 1,
            "Notes": "Øresund office; Åsa's desk",
        },
        "min_trigger_time": "08:30",
        "max_trigger_time": "20:30",
        "carry_over": True,
        "number_of_retries": 0,
        "gap_between_retries": [15, 30, 60],
        "priority": 100,
    },
    6: {
        "to_number": "+447911123456",
        "agent_id": AGENT,
        "metadata": {
            "Name": "Renée O'Brien",
            "City": "London",
            "Age": 52,
            "Score": 4.25,
            "Customer ID": "B 9",
            "Notes": "Ça va – “quoted” €",
        },
        "priority": 0,
    },
}
CONTACT_STATUSES = {2: "valid", 3: "valid", 4: "valid", 5: "valid", 6: "valid", 7: "invalid", 8: "duplicate"}


@pytest.mark.parametrize(
    ("name", "kind", "encoding", "delimiter"),
    [
        ("contacts.csv", "text", "utf-8", ","),
        ("contacts_cp1252.csv", "text", "cp1252", ","),
        ("contacts_unicode.txt", "text", "utf-16", "\t"),
        ("contacts.xlsx", "xlsx", None, None),
        ("contacts.xls", "xls", None, None),
        ("contacts.ods", "ods", None, None),
    ],
)
def test_the_same_contacts_saved_by_libreoffice_in_any_format_give_identical_request_bodies(
    name: str, kind: str, encoding: str | None, delimiter: str | None
) -> None:
    sheet, validation, bodies = load(FIXTURES / name)
    assert (sheet.kind, sheet.encoding, sheet.delimiter) == (kind, encoding, delimiter)
    assert validation.status.to_dict() == CONTACT_STATUSES
    assert bodies == CONTACT_BODIES


def test_semicolon_csv_from_european_excel_keeps_decimal_commas_as_the_text_written() -> None:
    sheet, validation, bodies = load(FIXTURES / "contacts_semicolon.csv")
    assert (sheet.encoding, sheet.delimiter) == ("cp1252", ";")
    expected = copy.deepcopy(CONTACT_BODIES)
    for row, score in {2: "2,50", 3: "3,75", 5: "1,00", 6: "4,25"}.items():
        expected[row]["metadata"]["Score"] = score
    assert bodies == expected
    assert validation.status.to_dict() == CONTACT_STATUSES


def test_cp1252_csv_keeps_accented_names_exactly() -> None:
    sheet = read_sheet(FIXTURES / "contacts_cp1252.csv")
    assert sheet.cells[0].tolist()[:5] == [
        "Zoë Fernandes",
        "José Müller",
        "François Dubois",
        "Ananya Iyer",
        "Renée O'Brien",
    ]


def test_dry_run_accepts_every_format_with_the_same_counts(tmp_path: Path, capsys: Any) -> None:
    for name in ("contacts.csv", "contacts_unicode.txt", "contacts.xlsx", "contacts.xls", "contacts.ods"):
        code = main(
            [
                "run",
                str(FIXTURES / name),
                "--agent-id",
                AGENT,
                "--dry-run",
                "--default-region",
                "IN",
                "--timezone",
                "Asia/Kolkata",
                "--output",
                str(tmp_path / f"{name}.results.csv"),
            ]
        )
        out = capsys.readouterr().out
        assert code == 1, name  # one invalid row on purpose
        assert "valid      5\ninvalid    1\nduplicate  1\n" in out, name


# --- encodings ---------------------------------------------------------------------------

CSV = "Name,Phone\nZoë Åström,+91 98765 43210\nJosé,+91 98765 43211\n"


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [
        (CSV.encode("utf-8"), "utf-8"),
        (CSV.encode("utf-8-sig"), "utf-8-sig"),
        (CSV.encode("utf-16"), "utf-16"),
        (CSV.encode("utf-16-le"), "utf-16-le"),
        (CSV.encode("cp1252"), "cp1252"),
        (CSV.encode("latin-1"), "cp1252"),
    ],
    ids=["utf8", "utf8-bom", "utf16-bom", "utf16-no-bom", "cp1252", "latin1"],
)
def test_text_encodings_are_detected(tmp_path: Path, raw: bytes, encoding: str) -> None:
    path = tmp_path / "leads.csv"
    path.write_bytes(raw)
    sheet = read_sheet(path)
    assert sheet.encoding == encoding
    assert sheet.headers == ["Name", "Phone"]
    assert sheet.cells[0].tolist() == ["Zoë Åström", "José"]


def test_a_byte_order_mark_is_not_part_of_the_first_header(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_bytes("Name,Phone\nAsha,+91 98765 43210\n".encode("utf-8-sig"))
    _, _, bodies = load(path)
    assert bodies[2]["metadata"] == {"Name": "Asha"}


def test_encoding_option_overrides_detection(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_bytes("Name,Phone\nΑλέξης,+30 691 234 5678\n".encode("cp1253"))
    sheet = read_sheet(path, encoding="cp1253")
    assert sheet.cells[0].tolist() == ["Αλέξης"]


def test_an_encoding_the_file_is_not_in_is_refused_naming_the_file(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "leads.csv"
    path.write_bytes(CSV.encode("cp1252"))
    assert main(["validate", str(path), "--encoding", "utf-8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"callkaro-loader: error: {path}: is not valid utf-8 text (byte ")


def test_an_unknown_encoding_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--encoding 'klingon' is not an encoding Python knows"):
        read_sheet(FIXTURES / "contacts.csv", encoding="klingon")


# --- separators and quotes -------------------------------------------------------------


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_the_separator_is_detected_even_when_values_hold_the_others(tmp_path: Path, sep: str) -> None:
    rows = [
        ["Name", "Phone", "Notes"],
        ["Asha", "+91 98765 43210", '"a, b; c | d\te"'],
        ["Bala", "+91 98765 43211", '"2,5"'],
    ]
    path = tmp_path / "leads.csv"
    path.write_text("\n".join(sep.join(r) for r in rows) + "\n", encoding="utf-8")
    sheet, _, bodies = load(path)
    assert sheet.delimiter == sep
    assert bodies[2]["metadata"]["Notes"] == "a, b; c | d\te"
    assert bodies[3]["metadata"]["Notes"] == "2,5"


def test_excel_sep_line_decides_the_separator_and_is_not_a_row(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("sep=;\nName;Phone\nAsha,Rao;+91 98765 43210\n", encoding="utf-8")
    sheet, _, bodies = load(path)
    assert sheet.delimiter == ";"
    assert bodies == {2: {"to_number": "+919876543210", "agent_id": AGENT, "metadata": {"Name": "Asha,Rao"}}}


def test_quoted_cells_with_commas_and_newlines_are_one_row_each(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(
        'Name,Phone,Notes\r\n"Rao, Asha",+91 98765 43210,"first line\r\nsecond, line"\r\n'
        'Bala,+91 98765 43211,"said ""hi"""\r\n',
        encoding="utf-8",
    )
    sheet, _, bodies = load(path)
    assert sheet.source_rows == [2, 3]
    assert bodies[2]["metadata"] == {"Name": "Rao, Asha", "Notes": "first line\r\nsecond, line"}
    assert bodies[3]["metadata"] == {"Name": "Bala", "Notes": 'said "hi"'}


def test_blank_lines_are_skipped_but_keep_their_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("Name,Phone\n\nAsha,+91 98765 43210\n,\n\nBala,+91 98765 43211\n\n", encoding="utf-8")
    assert read_sheet(path).source_rows == [3, 6]


def test_old_mac_line_endings_are_rows(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_bytes(b"Name,Phone\rAsha,+91 98765 43210\rBala,+91 98765 43211\r")
    assert read_sheet(path).source_rows == [2, 3]


# --- ragged rows -------------------------------------------------------------------------


def test_ragged_rows_are_reported_per_row_and_the_rest_of_the_file_loads(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(
        "Name,Phone,City\n"
        "Asha,+91 98765 43210,Pune\n"
        "Rao, Bala,+91 98765 43211,Delhi\n"  # an unquoted comma: one cell too many
        "Chitra,+91 98765 43212\n"  # a cell short
        "Dev,+91 98765 43213,Goa,,\n"  # trailing separators are not a problem
        "Esha,+91 98765 43214,\n",
        encoding="utf-8",
    )
    sheet, validation, bodies = load(path)
    assert validation.status.to_dict() == {2: "valid", 3: "invalid", 4: "invalid", 5: "valid", 6: "valid"}
    assert sorted(bodies) == [2, 5, 6]
    # The row's own problem comes first; its shifted cells are checked as usual.
    assert validation.message[3] == (
        "the row has 4 cells but there are only 3 column headers: a value holding a comma (,) needs "
        "double quotes around it, or there is a comma (,) too many; Phone: Bala is not a phone "
        "number (only digits, spaces, +, -, brackets and dots are allowed)"
    )
    assert validation.message[4] == (
        "the row has 2 cells but there are 3 column headers: a value or a comma (,) is missing, so "
        "values may be under the wrong headers; fix the row so each value is under its header"
    )
    assert main(["validate", str(path), "--default-region", "IN"]) == 1
    out = capsys.readouterr().out
    assert "  row 3 invalid: the row has 4 cells but there are only 3 column headers" in out
    assert "  row 4 invalid: the row has 2 cells but there are 3 column headers" in out


def test_a_space_before_an_opening_quote_is_named_as_what_splits_the_row(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text('Phone,Name,City\n+91 98765 43210, "Rao, Asha", Pune\n', encoding="utf-8")
    _, validation, _ = load(path)
    assert validation.message[2].startswith(
        "the row has 4 cells but there are only 3 column headers: a space between a comma (,) and a "
        "double quote stops the quotes from holding the value together; remove the space after the comma (,)"
    )


def test_a_row_of_one_cell_is_reported_in_words_that_read_right(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("Name,Phone\nAsha\nRavi,+91 98765 43211\n", encoding="utf-8")
    _, validation, _ = load(path)
    assert validation.message[2].startswith("the row has 1 cell but there are 2 column headers: ")


def test_a_quote_never_closed_refuses_the_file_naming_the_row(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "leads.csv"
    path.write_text('Name,Phone\nAsha,+91 98765 43210\n"Bala,+91 98765 43211\nChitra,+91 98765 43212\n')
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == (
        f'callkaro-loader: error: {path}: row 3 opens a double quote (") that is never closed, so every '
        "line below it would be read as one cell; close the quote or remove it\n"
    )


# --- the header row ------------------------------------------------------------------------


def test_header_row_skips_title_rows_and_keeps_spreadsheet_row_numbers(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("March leads\n\nName,Phone\nAsha,+91 98765 43210\nBala,12345\n", encoding="utf-8")
    sheet = read_sheet(path, header_row=3)
    assert sheet.headers == ["Name", "Phone"]
    assert sheet.source_rows == [4, 5]
    assert main(["validate", str(path), "--header-row", "3", "--default-region", "IN"]) == 1
    assert "  row 5 invalid: Phone: 12345 is not a valid phone number for IN" in capsys.readouterr().out


def test_without_header_row_a_title_row_gets_a_hint_to_use_it(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("March leads\n\nName,Phone\nAsha,+91 98765 43210\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"callkaro-loader: error: {path}: no phone number column (headers: 'March leads')"
    assert "--header-row N" in err[1]


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("0", "callkaro-loader: error: --header-row must be 1 or more, not 0"),
        ("40", "there is no row 40 to read headers from; the file has 8 rows"),
    ],
)
def test_a_header_row_that_cannot_be_is_refused(capsys: Any, argument: str, message: str) -> None:
    assert main(["validate", str(FIXTURES / "contacts.csv"), "--header-row", argument]) == 2
    assert message in capsys.readouterr().err


def test_a_header_row_that_is_not_a_number_is_a_usage_error(capsys: Any) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["validate", str(FIXTURES / "contacts.csv"), "--header-row", "abc"])
    assert caught.value.code == 2
    assert "argument --header-row: invalid int value: 'abc'" in capsys.readouterr().err


# --- content decides, not the suffix -----------------------------------------------------------


def test_a_csv_named_xls_or_xlsx_is_read_as_the_text_it_is(tmp_path: Path) -> None:
    for suffix in (".xls", ".xlsx", ".ods"):
        path = tmp_path / f"leads{suffix}"
        path.write_bytes((FIXTURES / "contacts.csv").read_bytes())
        sheet, _, bodies = load(path)
        assert sheet.kind == "text"
        assert bodies == CONTACT_BODIES


def test_a_workbook_named_csv_or_with_the_wrong_excel_suffix_is_read_as_the_workbook_it_is(
    tmp_path: Path,
) -> None:
    for source, target in [
        ("contacts.xlsx", "leads.csv"),
        ("contacts.xlsx", "leads.xls"),
        ("contacts.xlsx", "leads.xlsm"),
        ("contacts.ods", "leads.xlsx"),
        ("contacts.xls", "a.xlsx"),
    ]:
        path = tmp_path / target
        path.write_bytes((FIXTURES / source).read_bytes())
        sheet, _, bodies = load(path)
        assert sheet.kind == source.rsplit(".", 1)[1]
        assert bodies == CONTACT_BODIES


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        (
            "leads.xls",
            b"<html><body><table><tr><td>Phone</td></tr></table></body></html>",
            "is a web page (HTML), not a spreadsheet; open it in Excel or LibreOffice and save it as .xlsx "
            "or .csv",
        ),
        (
            "leads.xls",
            b'<?xml version="1.0"?>\n<Workbook xmlns="urn:schemas-microsoft-com:office:spreadsheet">',
            "is an Excel 2003 XML spreadsheet, not a spreadsheet the loader reads; open it in Excel or "
            "LibreOffice and save it as .xlsx or .csv",
        ),
        (
            "leads.xlsx",
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
            "is a PDF document, not a spreadsheet or a text table",
        ),
        (
            "leads.csv",
            b"\x1f\x8b\x08\x00\x00\x00",
            "is a gzip-compressed file; unpack it first, not a spreadsheet",
        ),
    ],
)
def test_a_file_that_is_something_else_is_refused_saying_what_it_really_is(
    tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputFileError) as caught:
        read_sheet(path)
    assert caught.value.problem.startswith(problem)


def test_sheet_option_on_a_text_file_says_what_the_file_is(tmp_path: Path) -> None:
    path = tmp_path / "leads.xlsx"
    path.write_bytes((FIXTURES / "contacts.csv").read_bytes())
    with pytest.raises(
        UsageError, match=r"--sheet only applies to workbooks, and leads.xlsx is a text file despite"
    ):
        read_sheet(path, sheet="Leads")


def test_the_first_visible_worksheet_is_read_by_default(tmp_path: Path) -> None:
    workbook = Workbook()
    lookup = workbook.active
    assert lookup is not None
    lookup.title = "lookup"
    lookup.append(["code", "meaning"])
    lookup.append(["A", "active"])
    lookup.sheet_state = "hidden"
    leads = workbook.create_sheet("Leads")
    leads.append(["Name", "Phone"])
    leads.append(["Asha", "+91 98765 43210"])
    path = tmp_path / "leads.xlsx"
    workbook.save(path)
    sheet = read_sheet(path)
    assert (sheet.sheet_name, sheet.headers) == ("Leads", ["Name", "Phone"])
    assert read_sheet(path, sheet=0).sheet_name == "lookup"
