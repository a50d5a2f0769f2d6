"""Stage 7: the results file holds every input row, as read, with its outcome; safe to open in Excel."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from openpyxl import Workbook, load_workbook

from loader.cells import cell_text
from loader.columns import map_columns
from loader.normalise import Context
from loader.read import Sheet, read_sheet
from loader.results import inert, outcomes, results_table, write_results
from loader.state import IN_FLIGHT_MESSAGE, RowState
from loader.validate import validate_rows

OURS = ["source_row", "callkaro_status", "callkaro_call_id", "callkaro_message"]


def sent(row: int, status: str, call_id: str | None = None, message: str | None = None) -> RowState:
    return RowState(row, status, 1, call_id, message, "2030-01-01T00:00:00+00:00")


def results_of(
    sheet: Sheet, ctx: Context, state: dict[int, RowState] | None = None
) -> tuple[list[str], pd.DataFrame]:
    columns = map_columns(sheet)
    validation = validate_rows(sheet, columns, ctx)
    return results_table(sheet, outcomes(validation.status, validation.message, state or {}), columns.ignored)


def read_csv_results(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))


@pytest.fixture
def leads(tmp_path: Path) -> Path:
    path = tmp_path / "leads.csv"
    path.write_text(
        "Name,Phone,Code,Note\n"
        "Asha,+91 98765 43210,007,\n"
        ",,,\n"
        'Ravi,12345,-3,"line one\nline two"\n'
        'Meera,098765 43210,,=HYPERLINK("http://x")\n'
        "Dev,+919876543211,2.50,\n",
        encoding="utf-8",
    )
    return path


# --- the table --------------------------------------------------------------------------------------------


def test_every_row_in_input_order_with_its_cells_as_read_and_its_outcome(leads: Path, ctx: Context) -> None:
    sheet = read_sheet(leads)
    headers, cells = results_of(
        sheet, ctx, {2: sent(2, "scheduled", "call-1"), 6: sent(6, "failed", message="400: Agent busy")}
    )
    assert headers == ["Name", "Phone", "Code", "Note", *OURS]
    assert cells.values.tolist() == [
        ["Asha", "+91 98765 43210", "007", "", 2, "scheduled", "call-1", ""],
        [
            "Ravi",
            "12345",
            "-3",
            "line one\nline two",
            4,
            "invalid",
            "",
            "Phone: 12345 is not a valid phone number for IN",
        ],
        [
            "Meera",
            "098765 43210",
            "",
            '=HYPERLINK("http://x")',
            5,
            "duplicate",
            "",
            "Phone: +919876543210 already appears on row 2",
        ],
        ["Dev", "+919876543211", "2.50", "", 6, "failed", "", "400: Agent busy"],
    ]


def test_columns_from_an_earlier_results_file_are_replaced_not_duplicated(
    tmp_path: Path, ctx: Context
) -> None:
    path = tmp_path / "leads.results.csv"
    path.write_text(
        "Phone,Name,source_row,callkaro_status,callkaro_call_id,callkaro_message\n"
        '+919876543210,Asha,2,invalid,,"Priority: 150 is outside [-100, 100]"\n',
        encoding="utf-8",
    )
    headers, cells = results_of(read_sheet(path), ctx)
    assert headers == ["Phone", "Name", *OURS]
    assert cells.values.tolist() == [["+919876543210", "Asha", 2, "valid", "", ""]]


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_results_file_fixed_and_loaded_again_gets_one_set_of_outcome_columns(
    leads: Path, tmp_path: Path, ctx: Context, suffix: str
) -> None:
    first = tmp_path / f"first{suffix}"
    write_results(first, *results_of(read_sheet(leads), ctx))
    second = tmp_path / f"second{suffix}"
    write_results(second, *results_of(read_sheet(first), ctx))
    if suffix == ".csv":
        header = read_csv_results(second)[0]
    else:
        header = [c.value for c in next(load_workbook(second).active.iter_rows(max_row=1))]
    assert header == ["Name", "Phone", "Code", "Note", *OURS]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (sent(2, "scheduled", "c-9"), ["scheduled", "c-9", ""]),
        (sent(2, "failed", None, "404: Agent does not exist"), ["failed", "", "404: Agent does not exist"]),
        (sent(2, "uncertain", None, "no answer after 30 s"), ["uncertain", "", "no answer after 30 s"]),
        (sent(2, "sending"), ["uncertain", "", IN_FLIGHT_MESSAGE]),
        (
            sent(2, "sending", None, "retrying after: HTTP 500: Server error"),
            ["uncertain", "", IN_FLIGHT_MESSAGE],
        ),
        (sent(2, "pending"), ["pending", "", "not sent: the run stopped before this row"]),
        (
            sent(2, "pending", None, "the API refused the key"),
            ["pending", "", "not sent: the API refused the key"],
        ),
    ],
)
def test_outcome_of_a_sent_row_comes_from_the_state(record: RowState, expected: list[str]) -> None:
    status = pd.Series(["valid", "invalid"], index=[2, 3])
    message = pd.Series(["", "Phone: is blank; every row needs a phone number"], index=[2, 3])
    frame = outcomes(status, message, {2: record, 99: sent(99, "scheduled", "stale")})
    assert frame.loc[2].tolist() == expected
    assert frame.loc[3].tolist() == ["invalid", "", "Phone: is blank; every row needs a phone number"]
    assert list(frame.index) == [2, 3]


# --- CSV --------------------------------------------------------------------------------------------------


def test_csv_results_are_utf8_with_bom_and_read_back_exactly(
    leads: Path, tmp_path: Path, ctx: Context
) -> None:
    headers, cells = results_of(read_sheet(leads), ctx)
    out = tmp_path / "leads.results.csv"
    write_results(out, headers, cells)
    assert out.read_bytes().startswith(b"\xef\xbb\xbfName,Phone,Code,Note,source_row,")
    rows = read_csv_results(out)
    assert rows[0] == ["Name", "Phone", "Code", "Note", *OURS]
    assert [r[:5] for r in rows[1:]] == [
        ["Asha", "+91 98765 43210", "007", "", "2"],
        ["Ravi", "12345", "-3", "line one\nline two", "4"],
        ["Meera", "098765 43210", "", '\'=HYPERLINK("http://x")', "5"],
        ["Dev", "+919876543211", "2.50", "", "6"],
    ]


def test_csv_results_keep_every_script_readable(tmp_path: Path, make_sheet: Any, ctx: Context) -> None:
    sheet = make_sheet(["Phone", "नाम", "名前"], [["+919876543210", "आशा", "さくら"]])
    out = tmp_path / "out.csv"
    write_results(out, *results_of(sheet, ctx))
    assert read_csv_results(out)[:2] == [
        ["Phone", "नाम", "名前", *OURS],
        ["+919876543210", "आशा", "さくら", "2", "valid", "", ""],
    ]


def test_excel_cells_are_written_to_csv_as_a_person_reads_them(tmp_path: Path, ctx: Context) -> None:
    workbook = Workbook()
    workbook.active.append(["Phone", "When", "From", "VIP", "Joined", "Score"])
    workbook.active.append(
        [919876543210, dt.datetime(2030, 5, 28, 9, 30), dt.time(8, 30), True, dt.date(2024, 1, 15), 2.5]
    )
    source = tmp_path / "leads.xlsx"
    workbook.save(source)
    out = tmp_path / "leads.results.csv"
    write_results(out, *results_of(read_sheet(source), ctx))
    assert read_csv_results(out)[1][:6] == [
        "919876543210",
        "2030-05-28 09:30:00",
        "08:30",
        "TRUE",
        "2024-01-15",
        "2.5",
    ]


def test_excel_durations_are_written_to_csv_with_their_sign_and_size(tmp_path: Path, ctx: Context) -> None:
    workbook = Workbook()
    workbook.active.append(["Phone", "Talked", "Late by", "Over by"])
    workbook.active.append(
        [
            "+919876543210",
            dt.timedelta(hours=30),
            dt.timedelta(minutes=-30),
            dt.timedelta(hours=-26, minutes=-5, seconds=-7),
        ]
    )
    source = tmp_path / "leads.xlsx"
    workbook.save(source)
    out = tmp_path / "leads.results.csv"
    write_results(out, *results_of(read_sheet(source), ctx))
    # Made inert, as any cell starting with - that is not a plain number is.
    assert read_csv_results(out)[1][1:4] == ["30:00:00", "'-0:30:00", "'-26:05:07"]


# --- formula injection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("=1+2", "'=1+2"),
        ('=HYPERLINK("http://evil","click")', '\'=HYPERLINK("http://evil","click")'),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("+A1", "'+A1"),
        ("-A1", "'-A1"),
        ("-", "'-"),
        ("+", "'+"),
        ("\t=1+2", "'\t=1+2"),
        ("\r=1+2", "'\r=1+2"),
        ("\uff1d1+2", "'\uff1d1+2"),
        ("+919876543210", "+919876543210"),
        ("+91 98765 43210", "+91 98765 43210"),
        ("+1 (415) 555-2671", "+1 (415) 555-2671"),
        ("-3", "-3"),
        ("-2.5", "-2.5"),
        ("+5", "+5"),
        ("-1e5", "-1e5"),
        ("Asha", "Asha"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_cell_a_spreadsheet_would_run_is_written_inert(text: str, written: str) -> None:
    assert inert(text) == written


def test_csv_results_headers_are_inert_too(tmp_path: Path, make_sheet: Any, ctx: Context) -> None:
    out = tmp_path / "out.csv"
    write_results(out, *results_of(make_sheet(["Phone", "=cmd"], [["+919876543210", "-3"]]), ctx))
    assert read_csv_results(out)[:2] == [
        ["Phone", "'=cmd", *OURS],
        ["+919876543210", "-3", "2", "valid", "", ""],
    ]


# --- Excel ------------------------------------------------------------------------------------------------


def test_xlsx_results_open_in_excel_with_formula_looking_text_as_strings(
    leads: Path, tmp_path: Path, ctx: Context
) -> None:
    out = tmp_path / "leads.results.xlsx"
    write_results(out, *results_of(read_sheet(leads), ctx, {2: sent(2, "scheduled", "call-1")}))
    sheet = load_workbook(out).active
    rows = [[c.value for c in row] for row in sheet.iter_rows()]
    assert rows == [
        ["Name", "Phone", "Code", "Note", *OURS],
        ["Asha", "+91 98765 43210", "007", None, 2, "scheduled", "call-1", None],
        [
            "Ravi",
            "12345",
            "-3",
            "line one\nline two",
            4,
            "invalid",
            None,
            "Phone: 12345 is not a valid phone number for IN",
        ],
        [
            "Meera",
            "098765 43210",
            None,
            '=HYPERLINK("http://x")',
            5,
            "duplicate",
            None,
            "Phone: +919876543210 already appears on row 2",
        ],
        ["Dev", "+919876543211", "2.50", None, 6, "valid", None, None],
    ]
    formula_cell = sheet.cell(row=4, column=4)
    assert formula_cell.data_type == "s"


def test_xlsx_results_keep_excel_cell_types(tmp_path: Path, ctx: Context) -> None:
    workbook = Workbook()
    workbook.active.append(["Phone", "When", "VIP", "Score"])
    workbook.active.append([919876543210, dt.datetime(2030, 5, 28, 9, 30), True, 2.5])
    source = tmp_path / "leads.xlsx"
    workbook.save(source)
    out = tmp_path / "leads.results.xlsx"
    write_results(out, *results_of(read_sheet(source), ctx))
    row = next(load_workbook(out).active.iter_rows(min_row=2))
    assert [c.value for c in row] == [
        919876543210,
        dt.datetime(2030, 5, 28, 9, 30),
        True,
        2.5,
        2,
        "valid",
        None,
        None,
    ]
    # Every digit of a phone stored as a number shows (Excel's General format: 9.19877E+11).
    assert row[0].number_format == "0" and row[3].number_format == "General"


@pytest.mark.parametrize(
    "text",
    ["ref_x0041_7", "_x000D_", "a_x005F_b", "line one\r\nline two", "ends in\r", "_x00_ and _xZZZZ_"],
)
def test_xlsx_results_show_text_excel_would_decode_exactly_as_read(
    tmp_path: Path, make_sheet: Any, ctx: Context, text: str
) -> None:
    # Excel reads _xHHHH_ in a cell's text as the character HHHH, and XML turns a carriage return
    # into a line feed: the file must escape both, as Excel does when it saves such a cell.
    out = tmp_path / "out.xlsx"
    write_results(out, *results_of(make_sheet(["Phone", text], [["+919876543210", text]]), ctx))
    back = read_sheet(out)
    assert back.headers[1] == text.strip()
    assert back.cells.loc[2, 1] == text


# --- replacing the file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.csv", "out.xlsx"])
def test_results_replace_the_old_file_and_leave_no_temporary_files(
    tmp_path: Path, make_sheet: Any, ctx: Context, name: str
) -> None:
    out = tmp_path / name
    out.write_text("old results", encoding="utf-8")
    write_results(out, *results_of(make_sheet(["Phone"], [["+919876543210"]]), ctx))
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert out.read_bytes() != b"old results"


def test_results_folder_is_created_when_missing(tmp_path: Path, make_sheet: Any, ctx: Context) -> None:
    out = tmp_path / "runs" / "may" / "out.csv"
    write_results(out, *results_of(make_sheet(["Phone"], [["+919876543210"]]), ctx))
    assert read_csv_results(out)[1] == ["+919876543210", "2", "valid", "", ""]


def test_failed_write_keeps_the_old_results_whole_and_leaves_no_temporary_file(
    tmp_path: Path, make_sheet: Any, ctx: Context
) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("disk full")

    out = tmp_path / "out.csv"
    out.write_text("old results", encoding="utf-8")
    headers, cells = results_of(make_sheet(["Phone", "Name"], [["+919876543210", "Asha"]] * 3), ctx)
    cells.iloc[2, 1] = Unprintable()
    with pytest.raises(RuntimeError, match="disk full"):
        write_results(out, headers, cells)
    assert out.read_text(encoding="utf-8") == "old results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_csv_written_in_chunks_is_the_same_file_as_written_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import loader.results as results

    headers = ["Name", "Phone", "Notes", "Age"]
    cells = pd.DataFrame(
        [
            ["Asha", "+91 98765 43210", "=HYPERLINK(1)", 34],
            ["Ravi", "-5", "@SUM(A1)", 2.5],
            ["", "+919876543211", "plain", dt.date(2030, 1, 2)],
            ["Meera", "098450 12345", "+cmd", True],
            ["Kabir", "", "", ""],
        ],
        dtype=object,
    )
    write_results(tmp_path / "once.csv", headers, cells)
    monkeypatch.setattr(results, "CHUNK_ROWS", 2)
    write_results(tmp_path / "chunks.csv", headers, cells)
    once = (tmp_path / "once.csv").read_bytes()
    assert (tmp_path / "chunks.csv").read_bytes() == once
    rows = list(csv.reader(io.StringIO(once.decode("utf-8-sig"))))
    assert rows[1] == ["Asha", "+91 98765 43210", "'=HYPERLINK(1)", "34"]
    assert rows[2] == ["Ravi", "-5", "'@SUM(A1)", "2.5"]
    assert rows[4][2:] == ["'+cmd", "TRUE"]


def test_a_text_column_is_written_as_each_of_its_cells_would_be() -> None:
    from loader.results import csv_texts

    cells = ["=HYPERLINK(1)", None, "+91 98765 43210", "-5", "@x", "plain", ""]
    column = pd.Series(cells, dtype="str")
    assert csv_texts(column) == [inert(cell_text(c)) for c in column.astype(object)]
    assert csv_texts(column) == csv_texts(column.astype(object))


def test_a_column_of_row_numbers_is_written_as_each_of_its_cells_would_be() -> None:
    from loader.results import csv_texts

    for dtype in ("int64", "uint32"):
        column = pd.Series([2, 3, 1_048_576, 0], dtype=dtype)
        assert (
            csv_texts(column)
            == [inert(cell_text(c)) for c in column.astype(object)]
            == ["2", "3", "1048576", "0"]
        )
