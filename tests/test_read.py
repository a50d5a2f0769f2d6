"""Stage 1: a contacts file becomes a table of cells, exactly as the user wrote them."""

from __future__ import annotations

import datetime as dt
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from openpyxl import Workbook

from loader.cells import Cell
from loader.errors import InputFileError, UsageError
from loader.read import read_sheet


def write_text(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def write_xlsx(tmp_path: Path, sheets: dict[str, Sequence[Sequence[Cell]]], name: str = "leads.xlsx") -> Path:
    """A workbook with one sheet per entry, written by openpyxl as Excel would store the cells."""
    workbook = Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(list(row))
    path = tmp_path / name
    workbook.save(path)
    return path


def with_cached_values(path: Path, cached: dict[str, str]) -> Path:
    """Give formulas the cached results Excel stores beside them (openpyxl writes none).

    ``cached`` maps a formula as written in the XML to the value Excel would have saved.
    """
    source = zipfile.ZipFile(path)
    patched = path.with_name("cached " + path.name)
    with zipfile.ZipFile(patched, "w") as out:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.startswith("xl/worksheets/"):
                for formula, value in cached.items():
                    data = data.replace(
                        f"<f>{formula}</f><v />".encode(), f"<f>{formula}</f><v>{value}</v>".encode()
                    )
            out.writestr(item, data)
    return patched


# --- CSV cells stay text --------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "007",
        "+91 98765 43210",
        "0091-98765-43210",
        "919876543210",
        "1e5",
        "9.19877E+11",
        "2.50",
        "NaN",
        "NULL",
        "None",
        "N/A",
        "#N/A",
        "-",
        "TRUE",
        " padded ",
        "=1+2",
    ],
)
def test_csv_cell_stays_the_exact_text_typed(tmp_path: Path, typed: str) -> None:
    path = write_text(tmp_path, "leads.csv", f"Phone,Value\n+919876543210,{typed}\n")
    sheet = read_sheet(path)
    assert sheet.cells.loc[2, 1] == typed
    assert type(sheet.cells.loc[2, 1]) is str


def test_csv_blank_cells_are_empty_text_never_nan(tmp_path: Path) -> None:
    path = write_text(tmp_path, "leads.csv", "Phone,Name,Note\n+919876543210,,\n,Asha,\n")
    sheet = read_sheet(path)
    assert sheet.cells.values.tolist() == [["+919876543210", "", ""], ["", "Asha", ""]]
    assert not sheet.cells.isna().any().any()


def test_quoted_commas_quotes_and_newlines_stay_inside_one_cell(tmp_path: Path) -> None:
    path = write_text(
        tmp_path,
        "leads.csv",
        'Phone,Address,Note\n+919876543210,"12, MG Road\nBengaluru","she said ""call after 6"""\n'
        "+919876543211,Pune,\n",
    )
    sheet = read_sheet(path)
    assert sheet.cells.values.tolist() == [
        ["+919876543210", "12, MG Road\nBengaluru", 'she said "call after 6"'],
        ["+919876543211", "Pune", ""],
    ]
    # A record spanning two lines is still one spreadsheet row.
    assert sheet.source_rows == [2, 3]


@pytest.mark.parametrize("encoding", [None, "utf-8", "utf-8-sig"])
def test_utf8_bom_from_excel_does_not_stick_to_the_first_header(tmp_path: Path, encoding: str | None) -> None:
    path = write_text(tmp_path, "leads.csv", "\ufeffName,Phone\nAsha,+919876543210\n")
    sheet = read_sheet(path, encoding=encoding)
    assert sheet.headers == ["Name", "Phone"]


def test_utf16_file_from_excel_unicode_text_is_read(tmp_path: Path) -> None:
    path = write_text(tmp_path, "leads.txt", "Phone\tName\n+919876543210\tआशा\n".encode("utf-16"))
    sheet = read_sheet(path)
    assert sheet.cells.values.tolist() == [["+919876543210", "आशा"]]


def test_explicit_encoding_reads_a_legacy_windows_file(tmp_path: Path) -> None:
    path = write_text(tmp_path, "leads.csv", "Phone,Name\n+919876543210,José\n".encode("cp1252"))
    assert read_sheet(path, encoding="cp1252").cells.loc[2, 1] == "José"


def test_unknown_encoding_name_is_a_usage_error(tmp_path: Path) -> None:
    path = write_text(tmp_path, "leads.csv", "Phone\n+919876543210\n")
    with pytest.raises(UsageError, match=r"^--encoding 'klingon' is not an encoding Python knows$"):
        read_sheet(path, encoding="klingon")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("comma.csv", "Phone,Name,Amount\n+919876543210,Asha,5\n+919876543211,Ravi,6\n"),
        ("semicolon.csv", "Phone;Name;Amount\n+919876543210;Asha;2,5\n+919876543211;Ravi;6,5\n"),
        ("tab.txt", "Phone\tName\tAmount\n+919876543210\tAsha\t5\n+919876543211\tRavi\t6\n"),
        ("pipe.csv", "Phone|Name|Amount\n+919876543210|Asha|5\n+919876543211|Ravi|6\n"),
        ("tab.tsv", "Phone\tName\tAmount\n+919876543210\tAsha, Jr\t5\n+919876543211\tRavi\t6\n"),
    ],
)
def test_delimiter_is_detected_from_the_file(tmp_path: Path, name: str, content: str) -> None:
    sheet = read_sheet(write_text(tmp_path, name, content))
    assert sheet.headers == ["Phone", "Name", "Amount"]
    assert sheet.cells[0].tolist() == ["+919876543210", "+919876543211"]
    assert len(sheet.cells.columns) == 3


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        # European Excel: semicolons, and a comma in a header and in every address.
        ("Name;Phone;Address, City\nAsha;+919876543210;MG Road, Pune\n", ["Name", "Phone", "Address, City"]),
        # Commas, and a quoted header and cells holding semicolons.
        (
            'Name,Phone,"Hours; Mon; Tue; Sat"\nAsha,+919876543210,"9-5; 10-6; 9-1; -"\n',
            ["Name", "Phone", "Hours; Mon; Tue; Sat"],
        ),
    ],
)
def test_separator_inside_a_header_does_not_win_over_the_real_one(
    tmp_path: Path, content: str, headers: list[str]
) -> None:
    sheet = read_sheet(write_text(tmp_path, "leads.csv", content))
    assert sheet.headers == headers
    assert sheet.cells.loc[2, 1] == "+919876543210"


# --- Excel cells keep their type ---------------------------------------------------------------


def test_excel_cells_keep_the_type_the_spreadsheet_gave_them(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path,
        {
            "Leads": [
                ["Phone", "When", "From", "Date", "Carry", "Code", "Score"],
                [
                    919876543210,
                    dt.datetime(2030, 5, 28, 9, 30),
                    dt.time(8, 30),
                    dt.date(2030, 5, 28),
                    True,
                    "007",
                    2.5,
                ],
            ]
        },
    )
    cells = read_sheet(path).cells.loc[2].tolist()
    assert cells == [
        919876543210.0,
        dt.datetime(2030, 5, 28, 9, 30),
        dt.time(8, 30),
        dt.date(2030, 5, 28),
        True,
        "007",
        2.5,
    ]
    assert [type(c) for c in cells] == [float, dt.datetime, dt.time, dt.date, bool, str, float]


def test_excel_formula_cell_reads_as_its_cached_value(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path, {"Leads": [["Phone", "Total"], ["+919876543210", "=1+2"]]})
    # What calamine gives: the value Excel saved, never the formula text; nothing when none was saved.
    assert read_sheet(path).cells.loc[2, 1] == ""
    assert read_sheet(with_cached_values(path, {"1+2": "3"})).cells.loc[2, 1] == 3.0


# --- choosing a sheet ---------------------------------------------------------------------------


@pytest.fixture
def two_sheets(tmp_path: Path) -> Path:
    return write_xlsx(
        tmp_path,
        {
            "Read me": [["How to fill this in"], ["one number per row"]],
            "Leads": [["Phone", "Name"], ["+919876543210", "Asha"]],
        },
    )


def test_first_sheet_is_read_when_none_is_named(two_sheets: Path) -> None:
    sheet = read_sheet(two_sheets)
    assert (sheet.sheet_name, sheet.headers) == ("Read me", ["How to fill this in"])


@pytest.mark.parametrize("choice", ["Leads", 1, "1"])
def test_sheet_is_chosen_by_name_or_zero_based_index(two_sheets: Path, choice: str | int) -> None:
    sheet = read_sheet(two_sheets, sheet=choice)
    assert (sheet.sheet_name, sheet.headers) == ("Leads", ["Phone", "Name"])


@pytest.mark.parametrize(("choice", "shown"), [("Contacts", "'Contacts'"), (2, "2"), ("-1", "'-1'")])
def test_missing_sheet_error_lists_the_sheets_there_are(
    two_sheets: Path, choice: str | int, shown: str
) -> None:
    with pytest.raises(InputFileError) as caught:
        read_sheet(two_sheets, sheet=choice)
    assert str(caught.value) == (
        f"{two_sheets}: has no sheet {shown}; its sheets are 'Read me', 'Leads' (or 0-1)"
    )


def test_missing_sheet_error_of_a_one_sheet_workbook_names_its_only_sheet(tmp_path: Path) -> None:
    path = tmp_path / "leads.xlsx"
    workbook = Workbook()
    assert workbook.active is not None
    workbook.active.title = "Leads"
    workbook.save(path)
    with pytest.raises(InputFileError) as caught:
        read_sheet(path, sheet="Contacts")
    assert str(caught.value) == f"{path}: has no sheet 'Contacts'; its only sheet is 'Leads' (or 0)"


def test_sheet_option_on_a_csv_is_a_usage_error(tmp_path: Path) -> None:
    path = write_text(tmp_path, "leads.csv", "Phone\n+919876543210\n")
    with pytest.raises(
        UsageError, match=r"^--sheet only applies to workbooks, and leads.csv is a text file$"
    ):
        read_sheet(path, sheet="Leads")


# --- rows and columns ---------------------------------------------------------------------------


def test_csv_blank_rows_are_skipped_and_rows_keep_their_spreadsheet_numbers(tmp_path: Path) -> None:
    path = write_text(
        tmp_path,
        "leads.csv",
        "Phone,Name\n+919876543210,Asha\n,\n\n+919876543211,Ravi\n  ,  \n+919876543212,\n",
    )
    sheet = read_sheet(path)
    assert sheet.source_rows == [2, 5, 7]
    assert sheet.cells[1].tolist() == ["Asha", "Ravi", ""]


def test_excel_blank_rows_are_skipped_and_rows_keep_their_spreadsheet_numbers(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path,
        {"Leads": [["Phone"], [919876543210], [None], [None], [919876543211], [""], [919876543212]]},
    )
    assert read_sheet(path).source_rows == [2, 5, 7]


def test_excel_title_rows_above_the_headers_are_skipped_with_header_row(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path,
        {"Leads": [["May leads", None], [None, None], ["Phone", "Name"], [919876543210, "Asha"]]},
    )
    sheet = read_sheet(path, header_row=3)
    assert sheet.headers == ["Phone", "Name"]
    assert sheet.source_rows == [4]


def test_csv_title_line_above_the_headers_is_skipped_with_header_row(tmp_path: Path) -> None:
    path = write_text(tmp_path, "leads.csv", "May leads\n\nPhone,Name\n+919876543210,Asha\n")
    sheet = read_sheet(path, header_row=3)
    assert sheet.headers == ["Phone", "Name"]
    assert sheet.cells.loc[4].tolist() == ["+919876543210", "Asha"]


def test_header_row_zero_is_a_usage_error(tmp_path: Path) -> None:
    path = write_text(tmp_path, "leads.csv", "Phone\n+919876543210\n")
    with pytest.raises(UsageError, match=r"^--header-row must be 1 or more, not 0$"):
        read_sheet(path, header_row=0)


def test_csv_trailing_empty_columns_are_dropped(tmp_path: Path) -> None:
    path = write_text(tmp_path, "leads.csv", "Phone,Name,,,\n+919876543210,Asha,,,\n+919876543211,Ravi,,,\n")
    sheet = read_sheet(path)
    assert sheet.headers == ["Phone", "Name"]
    assert list(sheet.cells.columns) == [0, 1]


def test_excel_formatting_far_past_the_data_adds_no_rows_or_columns(tmp_path: Path) -> None:
    from openpyxl.styles import Font

    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Phone", "Name"])
    sheet.append(["+919876543210", "Asha"])
    sheet["H1"].font = Font(bold=True)
    sheet["H40"].font = Font(bold=True)
    path = tmp_path / "leads.xlsx"
    workbook.save(path)
    read = read_sheet(path)
    assert (read.headers, read.source_rows) == (["Phone", "Name"], [2])


def test_unnamed_column_with_data_is_kept_with_a_blank_header(tmp_path: Path) -> None:
    path = write_text(tmp_path, "leads.csv", "Phone,,Name\n+919876543210,VIP,Asha\n")
    sheet = read_sheet(path)
    assert sheet.headers == ["Phone", "", "Name"]
    assert sheet.cells.loc[2].tolist() == ["+919876543210", "VIP", "Asha"]


def test_csv_row_longer_than_the_header_keeps_its_extra_cells(tmp_path: Path) -> None:
    path = write_text(tmp_path, "leads.csv", "Phone,Name\n+919876543210,Asha,VIP\n+919876543211\n")
    sheet = read_sheet(path)
    assert sheet.headers == ["Phone", "Name", ""]
    assert sheet.cells.values.tolist() == [["+919876543210", "Asha", "VIP"], ["+919876543211", "", ""]]


# --- files that cannot be used ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("leads.csv", "", "the file is empty"),
        ("leads.csv", " \n\n\t\n", "the file is empty"),
        ("leads.csv", "Phone,Name\n", "has a header row but no data rows below row 1"),
        ("leads.csv", "Phone,Name\n,\n\n", "has a header row but no data rows below row 1"),
        ("leads.csv", ",,\n+919876543210,,\n", "row 1 has no column headers"),
        (
            "leads.csv",
            'Phone,Name\n+919876543210,"Asha\n',
            'row 2 opens a double quote (") that is never closed, so every line below it would be read '
            "as one cell; close the quote or remove it",
        ),
        (
            "leads.json",
            '{"phone": "+919876543210"}',
            "cannot read .json; use one of .csv, .ods, .tsv, .txt, .xls, .xlsm, .xlsx",
        ),
        (
            "leads",
            "Phone\n+919876543210\n",
            "cannot read files without a suffix; use one of .csv, .ods, .tsv, .txt, .xls, .xlsm, .xlsx",
        ),
    ],
)
def test_unusable_file_is_an_input_error_naming_the_file(
    tmp_path: Path, name: str, content: str, problem: str
) -> None:
    path = write_text(tmp_path, name, content)
    with pytest.raises(InputFileError) as caught:
        read_sheet(path)
    assert str(caught.value) == f"{path}: {problem}"


def test_header_row_past_the_end_of_the_file_is_an_input_error(tmp_path: Path) -> None:
    path = write_text(tmp_path, "leads.csv", "Phone\n+919876543210\n")
    with pytest.raises(InputFileError) as caught:
        read_sheet(path, header_row=5)
    assert str(caught.value) == f"{path}: there is no row 5 to read headers from; the file has 2 rows"


def test_missing_file_is_an_input_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    with pytest.raises(InputFileError) as caught:
        read_sheet(path)
    assert str(caught.value) == f"{path}: no such file"


def test_folder_instead_of_a_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.mkdir()
    with pytest.raises(InputFileError) as caught:
        read_sheet(path)
    assert str(caught.value) == f"{path}: is a folder, not a file"


def test_excel_header_only_is_an_input_error(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path, {"Leads": [["Phone", "Name"]]})
    with pytest.raises(InputFileError) as caught:
        read_sheet(path)
    assert str(caught.value) == f"{path}: has a header row but no data rows below row 1"


@pytest.mark.parametrize("name", ["leads.xlsx", "leads.xls", "leads.ods"])
def test_csv_saved_with_a_workbook_suffix_is_read_as_the_text_it_is(tmp_path: Path, name: str) -> None:
    path = write_text(tmp_path, name, "Phone,Name\n+919876543210,Asha\n")
    sheet = read_sheet(path)
    assert sheet.headers == ["Phone", "Name"]
    assert sheet.cells.values.tolist() == [["+919876543210", "Asha"]]
