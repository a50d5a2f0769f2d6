"""What a person sees in a workbook is what is called: hidden rows are not, and a country code shown
by a number format is the one dialled.

Workbooks are made as people make them (openpyxl stands for Excel; LibreOffice itself, when it is
installed), read by the loader's own ``validate`` and ``run``, and a run's calls are counted where
they arrive: the sandbox's ``GET /_sandbox/calls``.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import shutil
import subprocess
import sys
import zipfile
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import Workbook, load_workbook
from sandbox_process import CLI, running_sandbox

from loader import load_campaign, validate_file
from loader.cli import main
from loader.columns import map_columns
from loader.normalise import Context
from loader.read import read_sheet
from loader.validate import validate_rows
from loader.workbook_view import as_shown, shows_plus

FIXTURES = Path(__file__).parent / "fixtures"
HIDDEN_MESSAGE = "hidden in the sheet (unhide the row, or run with --include-hidden-rows, to call it)"
HEADERS = ["Name", "Phone", "Status"]
#: (name, phone, status) for spreadsheet rows 2-7; the "drop" rows are the ones a person hides.
LEADS = [
    ("Asha", "+91 98765 43210", "call"),
    ("Bala", "+91 98765 43211", "drop"),
    ("Chitra", "+91 98765 43212", "call"),
    ("Dev", "+91 98765 43213", "drop"),
    ("Esha", "+91 98765 43214", "call"),
    ("Farid", "+91 98765 43215", "drop"),
]
SHOWN = {"+919876543210", "+919876543212", "+919876543214"}
HIDDEN_ROWS = {3, 5, 7}
CTX_IN = Context(
    default_region="IN",
    timezone=zoneinfo.ZoneInfo("Asia/Kolkata"),
    now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
)


def _hide(sheet: Any, row: int) -> None:
    sheet.row_dimensions[row].hidden = True


def _zero_height(sheet: Any, row: int) -> None:
    # openpyxl drops a height of 0 and keeps customHeight="1"; leads_workbook writes the ht="0".
    sheet.row_dimensions[row].height = 0


def _collapsed(sheet: Any, row: int) -> None:
    # Excel's Data > Group, then the minus button: the detail row is hidden, at outline level 1.
    sheet.row_dimensions.group(row, row, outline_level=1, hidden=True)


def _filtered(sheet: Any, row: int) -> None:
    # Excel applies an autofilter by hiding the rows it filters out, and saves them hidden.
    sheet.auto_filter.ref = f"A1:C{len(LEADS) + 1}"
    sheet.auto_filter.add_filter_column(2, ["call"])
    sheet.row_dimensions[row].hidden = True


HIDE_BY = {"hidden": _hide, "zero height": _zero_height, "collapsed": _collapsed, "filtered": _filtered}


def leads_workbook(
    path: Path, hide: Callable[[Any, int], None] | None = None, *, every_way: bool = False
) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Leads"
    sheet.append(HEADERS)
    for lead in LEADS:
        sheet.append(list(lead))
    ways = list(HIDE_BY.values())
    for number, row in enumerate(sorted(HIDDEN_ROWS)):
        if every_way:
            ways[number % len(ways)](sheet, row)
        elif hide is not None:
            hide(sheet, row)
    if every_way:
        _filtered(sheet, max(HIDDEN_ROWS))
    workbook.save(path)
    _write_zero_heights(path)
    return path


def _write_zero_heights(path: Path) -> None:
    """The rows openpyxl saved with a custom height of 0, saved with ht="0" as Excel reads them."""
    _rewrite_sheet(path, lambda xml: xml.replace(b' customHeight="1"', b' ht="0" customHeight="1"'))


def _rewrite_sheet(path: Path, change: Callable[[bytes], bytes]) -> None:
    with zipfile.ZipFile(path) as source:
        parts = {info: source.read(info) for info in source.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info, data in parts.items():
            out.writestr(info, change(data) if info.filename == "xl/worksheets/sheet1.xml" else data)


def statuses(path: Path, **options: Any) -> dict[int, tuple[str, str]]:
    result = validate_file(path, default_region="IN", **options)
    frame = result.outcomes
    return {
        int(row): (status, message)
        for row, status, message in zip(
            frame.index, frame["callkaro_status"], frame["callkaro_message"], strict=True
        )
    }


# --- hidden rows, read ----------------------------------------------------------------------------


@pytest.mark.parametrize("way", list(HIDE_BY))
def test_rows_hidden_in_an_excel_workbook_are_suppressed_saying_how_to_call_them(
    tmp_path: Path, way: str
) -> None:
    path = leads_workbook(tmp_path / "leads.xlsx", HIDE_BY[way])
    found = statuses(path)
    assert {row for row, (status, _) in found.items() if status == "suppressed"} == HIDDEN_ROWS
    assert {found[row][1] for row in HIDDEN_ROWS} == {HIDDEN_MESSAGE}
    assert {status for row, (status, _) in found.items() if row not in HIDDEN_ROWS} == {"valid"}


def test_rows_left_at_a_sheet_default_height_of_zero_are_hidden(tmp_path: Path) -> None:
    # Excel's "hide every row below": the sheet's default height becomes 0 and rows that show
    # carry their own height.
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(HEADERS)
    for lead in LEADS[:3]:
        sheet.append(list(lead))
    sheet.sheet_format.zeroHeight = True
    for row in (1, 2, 4):
        sheet.row_dimensions[row].height = 15
    workbook.save(tmp_path / "leads.xlsx")
    assert statuses(tmp_path / "leads.xlsx") == {
        2: ("valid", ""),
        3: ("suppressed", HIDDEN_MESSAGE),
        4: ("valid", ""),
    }


def test_validate_counts_the_hidden_rows(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    leads_workbook(tmp_path / "leads.xlsx", every_way=True)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "leads.xlsx", "--default-region", "IN"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "valid       3",
        "suppressed  3",
        *[f"  row {row} suppressed: {HIDDEN_MESSAGE}" for row in sorted(HIDDEN_ROWS)],
    ]


def test_include_hidden_rows_reads_every_row_on_purpose(tmp_path: Path, capsys: Any) -> None:
    path = leads_workbook(tmp_path / "leads.xlsx", every_way=True)
    assert {status for status, _ in statuses(path, include_hidden_rows=True).values()} == {"valid"}
    config = tmp_path / "nightly.toml"
    config.write_text('default_region = "IN"\ninclude_hidden_rows = true\n', encoding="utf-8")
    assert main(["validate", str(path), "--config", str(config)]) == 0
    assert main(["validate", str(path), "--default-region", "IN", "--include-hidden-rows"]) == 0
    assert capsys.readouterr().out.splitlines() == ["valid  6", "valid  6"]


def test_load_campaign_suppresses_hidden_rows_unless_asked_to_include_them(tmp_path: Path) -> None:
    path = leads_workbook(tmp_path / "leads.xlsx", every_way=True)
    common: dict[str, Any] = {
        "agent_id": "demo-agent",
        "sandbox": True,
        "default_region": "IN",
        "no_progress": True,
    }
    result = load_campaign(path, output=str(tmp_path / "a.results.csv"), **common)
    assert result.counts == {"scheduled": 3, "suppressed": 3}
    assert result.outcomes.loc[sorted(HIDDEN_ROWS), "callkaro_message"].tolist() == [HIDDEN_MESSAGE] * 3
    result = load_campaign(path, output=str(tmp_path / "b.results.csv"), include_hidden_rows=True, **common)
    assert result.counts == {"scheduled": 6}


def test_a_hidden_row_does_not_make_a_row_a_person_sees_a_duplicate(tmp_path: Path) -> None:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(HEADERS)
    sheet.append(["Old", "+91 98765 43210", "drop"])
    sheet.append(["New", "+91 98765 43210", "call"])
    sheet.row_dimensions[2].hidden = True
    workbook.save(tmp_path / "leads.xlsx")
    assert statuses(tmp_path / "leads.xlsx") == {2: ("suppressed", HIDDEN_MESSAGE), 3: ("valid", "")}


def test_a_hidden_row_of_a_do_not_call_list_still_stops_its_number(tmp_path: Path) -> None:
    # Hiding a row of a do-not-call list does not take the number off the list.
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["Phone"])
    sheet.append(["+91 98765 43299"])
    sheet.append(["+91 98765 43210"])
    sheet.row_dimensions[3].hidden = True
    workbook.save(tmp_path / "dnc.xlsx")
    path = leads_workbook(tmp_path / "leads.xlsx")
    result = validate_file(path, default_region="IN", suppress=[str(tmp_path / "dnc.xlsx")])
    assert result.outcomes.loc[2, "callkaro_status"] == "suppressed"
    assert "dnc.xlsx" in result.outcomes.loc[2, "callkaro_message"]


def test_an_invalid_hidden_row_is_reported_hidden_and_not_as_a_problem_to_fix(tmp_path: Path) -> None:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(HEADERS)
    sheet.append(["Asha", "+91 98765 43210", "call"])
    sheet.append(["Typo", "98765", "drop"])
    sheet.row_dimensions[3].hidden = True
    workbook.save(tmp_path / "leads.xlsx")
    result = validate_file(tmp_path / "leads.xlsx", default_region="IN")
    assert result.counts == {"valid": 1, "suppressed": 1}
    assert result.problems.empty


def _ods_with_hidden_rows(target: Path) -> Path:
    """The LibreOffice-saved contacts fixture with row 3 hidden and row 5 filtered out, as LibreOffice
    writes them."""
    with zipfile.ZipFile(FIXTURES / "contacts.ods") as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "content.xml":
                text = data.decode("utf-8")
                start = text.index('<table:table table:name="Leads"')
                rows = text[start:].split("<table:table-row ")
                rows[3] = 'table:visibility="collapse" ' + rows[3]
                rows[5] = 'table:visibility="filter" ' + rows[5]
                data = (text[:start] + "<table:table-row ".join(rows)).encode("utf-8")
            out.writestr(info, data)
    return target


def test_rows_hidden_or_filtered_in_an_ods_workbook_are_suppressed(tmp_path: Path) -> None:
    found = statuses(_ods_with_hidden_rows(tmp_path / "contacts.ods"))
    plain = statuses(FIXTURES / "contacts.ods")
    assert {row for row, (status, _) in found.items() if status == "suppressed"} == {3, 5}
    assert {row: found[row] for row in found if row not in (3, 5)} == {
        row: plain[row] for row in plain if row not in (3, 5)
    }


def test_a_row_hidden_in_an_xlsx_saved_by_libreoffice_is_suppressed(tmp_path: Path) -> None:
    # LibreOffice writes hidden="false" on every row and hidden="true" on the hidden ones.
    path = tmp_path / "contacts.xlsx"
    shutil.copy(FIXTURES / "contacts.xlsx", path)
    _rewrite_sheet(
        path,
        lambda xml: xml.replace(
            b'<row r="4" customFormat="false" ht="15" hidden="false"',
            b'<row r="4" customFormat="false" ht="15" hidden="true"',
        ),
    )
    found, plain = statuses(path), statuses(FIXTURES / "contacts.xlsx")
    assert found[4] == ("suppressed", HIDDEN_MESSAGE)
    assert {row: found[row] for row in found if row != 4} == {row: plain[row] for row in plain if row != 4}


def test_rows_hidden_in_an_excel_97_2003_workbook_are_suppressed(tmp_path: Path) -> None:
    # Excel saves a hidden (or filtered, zero-height, collapsed) row of an .xls with the fDyZero flag
    # of its ROW record; set here on rows 3 and 5 of the LibreOffice-saved fixture.
    data = bytearray((FIXTURES / "contacts.xls").read_bytes())
    for index in (2, 4):  # 0-based row numbers
        at = data.find(b"\x08\x02\x10\x00" + index.to_bytes(2, "little"))
        data[at + 4 + 12] |= 0x20
    path = tmp_path / "contacts.xls"
    path.write_bytes(bytes(data))
    found, plain = statuses(path), statuses(FIXTURES / "contacts.xls")
    assert {row for row, (status, _) in found.items() if status == "suppressed"} == {3, 5}
    assert {row: found[row] for row in found if row not in (3, 5)} == {
        row: plain[row] for row in plain if row not in (3, 5)
    }


def test_a_row_of_zero_height_in_an_excel_97_2003_workbook_is_suppressed(tmp_path: Path) -> None:
    # A ROW record whose height (miyRw, after row and columns) is 0, without the hidden flag: row 4.
    data = bytearray((FIXTURES / "contacts.xls").read_bytes())
    at = data.find(b"\x08\x02\x10\x00" + (3).to_bytes(2, "little"))
    data[at + 4 + 6 : at + 4 + 8] = b"\x00\x00"
    path = tmp_path / "contacts.xls"
    path.write_bytes(bytes(data))
    found, plain = statuses(path), statuses(FIXTURES / "contacts.xls")
    assert found[4] == ("suppressed", HIDDEN_MESSAGE)
    assert {row: found[row] for row in found if row != 4} == {row: plain[row] for row in plain if row != 4}


def test_a_number_cell_of_an_xls_workbook_is_read_with_the_country_code_its_format_shows(
    tmp_path: Path,
) -> None:
    # Row 3's phone is the number 9876543211. Its cell is given the style of the date cells, whose
    # format (19 characters) is rewritten in place to one of the same length showing "+91 ".
    data = bytes((FIXTURES / "contacts.xls").read_bytes())
    date_format = b"yyyy\\-mm\\-dd\\ hh:mm"
    assert data.count(date_format) == 1
    data = data.replace(date_format, b'"+91 "###0000000000')
    number_cell = b"\x03\x02\x0e\x00" + b"\x02\x00\x01\x00" + b"\x0f\x00"  # NUMBER, row 2, col 1, XF 15
    assert data.count(number_cell) == 1
    data = data.replace(number_cell, number_cell[:-2] + (22).to_bytes(2, "little"))  # XF 22: the date style
    path = tmp_path / "contacts.xls"
    path.write_bytes(data)
    us = Context(default_region="US", timezone=zoneinfo.ZoneInfo("Asia/Kolkata"), now=CTX_IN.now)
    sheet = read_sheet(path)
    validation = validate_rows(sheet, map_columns(sheet), us)
    assert (validation.requests["to_number"][3], validation.status[3]) == ("+919876543211", "valid")


def _labelsst_past_the_strings(data: bytes) -> bytes:
    """``data`` with the text cell B2 pointing past the end of the shared strings: calamine reads the
    cell as empty, xlrd cannot read the sheet's records at all."""
    label = b"\xfd\x00\x0a\x00" + b"\x01\x00\x01\x00"  # LABELSST, 10 bytes: row 1, column 1 (B2)
    at = data.index(label) + len(label) + 2  # past the style: the 4-byte string number
    return data[:at] + b"\xf0\xff\x00\x00" + data[at + 4 :]


def test_an_xls_whose_hidden_rows_cannot_be_read_is_refused_not_called_in_full(
    tmp_path: Path, capsys: Any
) -> None:
    # Read without its view, the rows a person hid would be called.
    path = tmp_path / "leads.xls"
    path.write_bytes(_labelsst_past_the_strings((FIXTURES / "contacts.xls").read_bytes()))
    assert main(["validate", str(path), "--default-region", "IN"]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == (
        "",
        f"callkaro-loader: error: {path}: is a damaged workbook the loader cannot read (which of its rows "
        "are hidden cannot be read)\n",
    )


def _damaged_copies() -> Iterator[tuple[str, bytes]]:
    """contacts.xls cut short, and with bytes changed (seeded), as disks and mail damage files."""
    data = (FIXTURES / "contacts.xls").read_bytes()
    for end in (600, 2048, len(data) // 2, len(data) - 700):
        yield f"cut at {end}", data[:end]
    rnd = random.Random(13)
    for number in range(12):
        changed = bytearray(data)
        for _ in range(rnd.randint(1, 40)):
            changed[rnd.randrange(512, len(changed))] = rnd.randrange(256)
        yield f"changed {number}", bytes(changed)


def test_a_damaged_xls_is_read_or_refused_in_one_line_never_a_traceback(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each copy is read (exit 0 or 1) or refused (exit 2) in one line naming the file; none hangs
    # (the child reading it is bounded in time and memory).
    monkeypatch.chdir(tmp_path)
    outcomes: Counter[int] = Counter()
    for name, data in _damaged_copies():
        (tmp_path / "leads.xls").write_bytes(data)
        code = main(["validate", "leads.xls", "--default-region", "IN"])
        captured = capsys.readouterr()
        if code == 2:
            assert captured.out == "", name
            assert re.fullmatch(r"callkaro-loader: error: leads\.xls: [^\n]+\n", captured.err), (
                name,
                captured,
            )
        else:
            assert (code, captured.err) in ((0, ""), (1, "")), (name, code, captured.err)
        outcomes[code] += 1
    assert outcomes[2] >= 1


#: Runs the .xls reader's ``with_view`` as its child process does, with ``_read_view`` replaced by
#: ``READ`` (a stand-in for xlrd on a hostile file), and prints what it answers.
_CHILD = """
import importlib.util, sys, threading
spec = importlib.util.spec_from_file_location("reader", sys.argv[1])
reader = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reader)
reader.VIEW_SECONDS, reader.VIEW_MEMORY, reader.VIEW_MEMORY_PER_BYTE = 0.2, 64 << 20, 0
{read}
print(reader.with_view(sys.argv[2], {{"name": "Leads", "rows": []}}))
"""


@pytest.mark.parametrize(
    ("read", "answer"),
    [
        (  # never finishes: the answer does not wait for it
            "reader._read_view = lambda path, name: threading.Event().wait()",
            "{'problem': 'damaged', 'detail': 'reading which rows are hidden took over 0.2 s'}",
        ),
        (  # asks for a gigabyte: refused by the limit on the child's memory, not the machine's
            "def grab(path, name):\n    try:\n        return bytearray(1 << 30)\n"
            "    except MemoryError:\n        return 'out of memory'\nreader._read_view = grab",
            "{'problem': 'damaged', 'detail': 'out of memory'}",
        ),
    ],
    ids=["time", "memory"],
)
def test_reading_an_xls_view_is_bounded_in_time_and_memory(tmp_path: Path, read: str, answer: str) -> None:
    import loader.calamine_reader

    if not Path("/proc/self/statm").exists() and "bytearray" in read:
        pytest.skip("the memory limit is set where the system has /proc (Linux)")
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            _CHILD.format(read=read),
            loader.calamine_reader.__file__,
            str(FIXTURES / "contacts.xls"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, answer, "")


# --- LibreOffice ----------------------------------------------------------------------------------

FODS = """<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:number="urn:oasis:names:tc:opendocument:xmlns:datastyle:1.0"
 xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0"
 office:version="1.2" office:mimetype="application/vnd.oasis.opendocument.spreadsheet">
 <office:automatic-styles>
  <number:number-style style:name="N900"><number:text>+44 </number:text>
   <number:number number:decimal-places="0" number:min-integer-digits="10"/></number:number-style>
  <style:style style:name="ce900" style:family="table-cell" style:data-style-name="N900"/>
 </office:automatic-styles>
 <office:body><office:spreadsheet>
  <table:table table:name="Leads">
{rows}
  </table:table>
  <table:database-ranges>
   <table:database-range table:name="__Anonymous_Sheet_DB__0" table:target-range-address="Leads.A1:Leads.C7"
    table:display-filter-buttons="true">
    <table:filter><table:filter-condition table:field-number="2" table:value="drop" table:operator="!="/>
    </table:filter>
   </table:database-range>
  </table:database-ranges>
 </office:spreadsheet></office:body>
</office:document>
"""
#: Row 8 of the LibreOffice workbooks: the number 7911123456 with the number format "+44 "0000000000.
UK_ROW = (
    '   <table:table-row><table:table-cell office:value-type="string"><text:p>Uma</text:p></table:table-cell>'
    '<table:table-cell table:style-name="ce900" office:value-type="float" office:value="7911123456">'
    "<text:p>+44 7911123456</text:p></table:table-cell>"
    '<table:table-cell office:value-type="string"><text:p>call</text:p></table:table-cell></table:table-row>'
)
LIBREOFFICE_SUFFIXES = ["xlsx", "ods", "xls"]


def _fods_row(cells: tuple[str, ...], visibility: str | None = None) -> str:
    shown = f' table:visibility="{visibility}"' if visibility else ""
    inner = "".join(
        f'<table:table-cell office:value-type="string"><text:p>{c}</text:p></table:table-cell>' for c in cells
    )
    return f"   <table:table-row{shown}>{inner}</table:table-row>"


@pytest.fixture(scope="module")
def libreoffice_workbooks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The leads saved by LibreOffice as .xlsx, .ods and .xls: row 3 hidden by hand, row 5 in a
    collapsed outline group, row 7 filtered out by the autofilter, and row 8 a number formatted to show
    +44."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        pytest.skip(
            "LibreOffice is not installed (no soffice or libreoffice on PATH): the workbooks it saves "
            "with hidden and filtered rows cannot be made here; apt-get install libreoffice-calc"
        )
    folder = tmp_path_factory.mktemp("libreoffice")
    rows = [_fods_row(tuple(HEADERS))]
    for row, lead in enumerate(LEADS, start=2):
        if row == 5:
            group = '<table:table-row-group table:display="false">{}</table:table-row-group>'
            rows.append(group.format(_fods_row(lead, "collapse")))
        else:
            rows.append(_fods_row(lead, {3: "collapse", 7: "filter"}.get(row)))
    source = folder / "leads.fods"
    source.write_text(FODS.format(rows="\n".join([*rows, UK_ROW])), encoding="utf-8")
    # One profile for every conversion: LibreOffice makes it on the first (a second), then reuses it.
    profile = f"-env:UserInstallation={(folder / 'profile').as_uri()}"
    for suffix in LIBREOFFICE_SUFFIXES:  # one output format per run of soffice
        subprocess.run(
            [soffice, profile, "--headless", "--convert-to", suffix, "--outdir", str(folder), str(source)],
            check=True,
            capture_output=True,
            timeout=180,
        )
    return {suffix: folder / f"leads.{suffix}" for suffix in LIBREOFFICE_SUFFIXES}


@pytest.mark.parametrize("suffix", LIBREOFFICE_SUFFIXES)
def test_rows_hidden_and_filtered_in_libreoffice_are_suppressed(
    libreoffice_workbooks: dict[str, Path], suffix: str
) -> None:
    found = statuses(libreoffice_workbooks[suffix])
    assert {row for row, (status, _) in found.items() if status == "suppressed"} == HIDDEN_ROWS
    assert {status for row, (status, _) in found.items() if row not in HIDDEN_ROWS} == {"valid"}


@pytest.mark.parametrize("suffix", LIBREOFFICE_SUFFIXES)
def test_a_country_code_format_saved_by_libreoffice_is_the_one_dialled(
    libreoffice_workbooks: dict[str, Path], suffix: str
) -> None:
    sheet = read_sheet(libreoffice_workbooks[suffix])
    validation = validate_rows(sheet, map_columns(sheet), CTX_IN)
    assert (validation.requests["to_number"][8], validation.status[8]) == ("+447911123456", "valid")


@pytest.mark.parametrize("suffix", LIBREOFFICE_SUFFIXES)
def test_a_libreoffice_workbook_as_a_do_not_call_list_blocks_its_hidden_rows_and_shown_codes(
    libreoffice_workbooks: dict[str, Path], suffix: str, tmp_path: Path
) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text(
        "Name,Phone\nOliver,+447911123456\nDev,+919876543213\nZoya,+919876543299\n", encoding="utf-8"
    )
    result = validate_file(leads, default_region="IN", suppress=[str(libreoffice_workbooks[suffix])])
    assert result.outcomes["callkaro_status"].tolist() == ["suppressed", "suppressed", "valid"]


# --- number formats that show a country code ------------------------------------------------------


def phones_workbook(path: Path, cells: list[tuple[Any, str]]) -> Path:
    """One phone cell per row: (value, number format)."""
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["Name", "Phone"])
    for number, (value, number_format) in enumerate(cells, start=2):
        sheet.append([f"Lead {number}", value])
        sheet.cell(row=number, column=2).number_format = number_format
    workbook.save(path)
    return path


def test_a_number_cell_is_read_with_the_country_code_its_format_shows(tmp_path: Path) -> None:
    path = phones_workbook(
        tmp_path / "leads.xlsx",
        [
            (7911123456, '"+44 "0000000000'),  # Excel shows +44 7911123456
            (9876543210, "\\+91\\ 0000000000"),  # +91 9876543210, the plus escaped as Excel writes it
            (447911123457, "+000000000000"),  # +447911123457
            ("7911123458", '"+44 "@'),  # text, shown as +44 7911123458 by the format's text section
            (9876543211, "General"),  # no code shown: --default-region applies
        ],
    )
    result = validate_file(path, default_region="US")
    assert result.counts == {"valid": 4, "invalid": 1}
    result = validate_file(path, default_region="IN")
    assert result.counts == {"valid": 5}


@pytest.mark.parametrize(
    ("value", "code", "shown"),
    [
        (7911123456, '"+44 "0000000000', "+44 7911123456"),
        (7911123456.0, '[Blue]"+44 "0000000000', "+44 7911123456"),
        (201555012, '"+1 "000-000-0000', "+1 020-155-5012"),
        (9876543210, "\\+91\\ ##########", "+91 9876543210"),
        (9876543210, "+91 0000000000", "+91 9876543210"),
        (7911123456, '"+44 "0000000000;"-"0', "+44 7911123456"),
        (7911123456, '"+44 "#,##0', None),
        (7911123456.5, '"+44 "0000000000', None),
        (7911123456, '"+44 "0.00', None),
        ("07911 123456", '"+44 "@', "+44 07911 123456"),
    ],
)
def test_a_format_is_shown_exactly_or_not_at_all(value: Any, code: str, shown: str | None) -> None:
    assert shows_plus(code)
    assert as_shown(value, code) == shown


@pytest.mark.parametrize("code", ["General", "0", "0.00E+00", "##0.0E+0", "yyyy-mm-dd hh:mm", "@", "#,##0"])
def test_formats_that_show_no_country_code_leave_the_number_as_it_is(code: str) -> None:
    assert not shows_plus(code)


def test_a_workbook_written_without_row_and_cell_references_is_read_the_same(tmp_path: Path) -> None:
    path = phones_workbook(
        tmp_path / "leads.xlsx", [(7911123456, '"+44 "0000000000'), ("+91 98765 43211", "@")]
    )
    workbook = load_workbook(path)
    sheet = workbook.active
    assert sheet is not None
    sheet.row_dimensions[3].hidden = True
    workbook.save(path)
    # Some writers leave out r="..." on rows and cells; they are then counted.
    _rewrite_sheet(path, lambda xml: re.sub(rb'(<(?:row|c)\b[^>]*?) r="[A-Z]*\d+"', rb"\1", xml))
    assert statuses(path) == {2: ("valid", ""), 3: ("suppressed", HIDDEN_MESSAGE)}
    assert validate_file(path, default_region="US").counts == {"valid": 1, "suppressed": 1}


def test_a_format_showing_a_country_code_the_loader_cannot_read_exactly_is_refused(tmp_path: Path) -> None:
    path = phones_workbook(tmp_path / "leads.xlsx", [(7911123456, '"+44 "#,##0')])
    found = statuses(path)
    assert found == {
        2: (
            "invalid",
            'Phone: 7911123456 is shown with a country code by its number format "+44 "#,##0, which '
            "the loader cannot read exactly; type the number as text, with its country code "
            "(e.g. +44 7911 123456)",
        )
    }


def test_a_number_cell_of_an_ods_workbook_is_read_as_the_file_shows_it(tmp_path: Path) -> None:
    # LibreOffice writes each cell's shown text beside its value: row 2's phone becomes the number
    # 7911123456 with the style "+44 "0000000000, as LibreOffice saves it.
    style = (
        '<number:number-style style:name="N900"><number:text>+44 </number:text><number:number '
        'number:decimal-places="0" number:min-decimal-places="0" number:min-integer-digits="10"/>'
        '</number:number-style><style:style style:name="ce900" style:family="table-cell" '
        'style:parent-style-name="Default" style:data-style-name="N900"/>'
    )
    typed = (
        '<table:table-cell table:style-name="ce1" office:value-type="string" calcext:value-type="string">'
        "<text:p>+91 98765 43210</text:p></table:table-cell>"
    )
    formatted = (
        '<table:table-cell table:style-name="ce900" office:value-type="float" office:value="7911123456" '
        'calcext:value-type="float"><text:p>+44 7911123456</text:p></table:table-cell>'
    )
    path = tmp_path / "contacts.ods"
    with zipfile.ZipFile(FIXTURES / "contacts.ods") as source, zipfile.ZipFile(path, "w") as out:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "content.xml":
                text = data.decode("utf-8")
                assert typed in text
                text = text.replace(typed, formatted, 1).replace(
                    "</office:automatic-styles>", style + "</office:automatic-styles>"
                )
                data = text.encode("utf-8")
            out.writestr(info, data)
    sheet = read_sheet(path)
    validation = validate_rows(sheet, map_columns(sheet), CTX_IN)
    assert validation.requests["to_number"][2] == "+447911123456"
    assert validation.status[2] == "valid"
    plain = read_sheet(FIXTURES / "contacts.ods")
    assert (
        validation.requests["to_number"]
        .drop(2)
        .equals(validate_rows(plain, map_columns(plain), CTX_IN).requests["to_number"].drop(2))
    )


# --- end to end: the real command against the sandbox ---------------------------------------------


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with running_sandbox() as server:
        yield server.url


def calls_to(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{url}/_sandbox/calls", timeout=10).json())


def run_cli(folder: Path, url: str, *args: str) -> tuple[subprocess.CompletedProcess[str], Counter[str]]:
    """``callkaro-loader *args`` in ``folder`` against the sandbox; what it printed, and the calls that
    arrived, by number."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLKARO_")}
    env |= {"CALLKARO_API_KEY": "sandbox-key", "XDG_STATE_HOME": str(folder / "state")}
    before = len(calls_to(url))
    done = subprocess.run(
        [CLI, *args, "--base-url", url, "--agent-id", "demo-agent", "--no-progress"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, Counter(call["body"]["to_number"] for call in calls_to(url)[before:])


def test_a_run_calls_only_the_rows_a_person_sees(tmp_path: Path, sandbox_url: str) -> None:
    leads_workbook(tmp_path / "leads.xlsx", every_way=True)
    done, called = run_cli(tmp_path, sandbox_url, "run", "leads.xlsx", "--default-region", "IN")
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert called == Counter(SHOWN)
    assert done.stdout.splitlines()[:2] == ["scheduled   3", "suppressed  3"]


def test_a_run_dials_the_country_code_a_format_shows_never_the_default_region(
    tmp_path: Path, sandbox_url: str
) -> None:
    phones_workbook(tmp_path / "uk.xlsx", [(7911123456, '"+44 "0000000000')])
    phones_workbook(tmp_path / "india.xlsx", [(9876543210, '"+91 "0000000000')])
    done, called = run_cli(tmp_path, sandbox_url, "run", "uk.xlsx", "--default-region", "IN")
    assert (done.returncode, called) == (0, Counter({"+447911123456": 1})), done.stdout + done.stderr
    done, called = run_cli(tmp_path, sandbox_url, "run", "india.xlsx", "--default-region", "US")
    assert (done.returncode, called) == (0, Counter({"+919876543210": 1})), done.stdout + done.stderr
