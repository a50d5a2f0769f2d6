"""Do-not-call lists (``--suppress``): read like the sheet, matched after normalising, never skipped."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import pytest
from openpyxl import Workbook

import loader
from loader.cli import main
from loader.errors import ColumnError, InputFileError
from loader.normalise import Context
from loader.suppress import read_suppression_list

SHEET = (
    "Name,Phone,City\n"
    "Aarav,+91 98765 43210,Bengaluru\n"
    "Priya,098450 12345,Kochi\n"
    "Rohan,919820011223,Mumbai\n"
    "Ananya,+91-99001-23456,Chennai\n"
)


def numbers(path: Path, ctx: Context) -> set[str]:
    return set(read_suppression_list(path, ctx).numbers)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("dnc.txt", "+91 98765 43210\n098450 12345\n", id="one number per line"),
        pytest.param(
            "dnc.txt", "# from compliance\n\n+919876543210  # asked twice\n0091 98450 12345\n", id="comments"
        ),
        pytest.param("dnc", "9876543210\r\n9845012345\r\n", id="no suffix, Windows line ends"),
        pytest.param(
            "dnc.csv", "phone,added\n+91 98765 43210,2026-11-02\n98450-12345,2026-11-03\n", id="csv"
        ),
        pytest.param(
            "dnc.csv", "Added;Mobile Number\n2026-11-02;9876543210\n;(+91) 98450 12345\n", id="semicolons"
        ),
        pytest.param("dnc.csv", "+91 98765 43210\n+91 98450 12345\n", id="csv without a header"),
    ],
)
def test_lists_in_every_shape_give_the_same_numbers(
    tmp_path: Path, ctx: Context, name: str, text: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert numbers(path, ctx) == {"+919876543210", "+919845012345"}


def test_an_excel_list_with_numbers_stored_as_numbers(tmp_path: Path, ctx: Context) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Customer", "Mobile"])
    sheet.append(["Aarav", 919876543210])
    sheet.append(["Priya", "098450 12345"])
    book.save(tmp_path / "dnc.xlsx")
    assert numbers(tmp_path / "dnc.xlsx", ctx) == {"+919876543210", "+919845012345"}


def test_an_entry_that_is_not_a_number_refuses_the_list_naming_the_file_and_the_line(
    tmp_path: Path, ctx: Context
) -> None:
    path = tmp_path / "dnc.txt"
    path.write_text("+91 98765 43210\n9.19877E+11\n98450 1234x\n", encoding="utf-8")
    with pytest.raises(InputFileError) as raised:
        read_suppression_list(path, ctx)
    assert str(raised.value) == (
        f"{path}: do-not-call list entries that are not phone numbers: line 2: 9.19877E+11 was mangled by a "
        "spreadsheet into scientific notation, so its digits are lost; format the column as text and type "
        "the number again; line 3: 98450 1234x is not a phone number (only digits, spaces, +, -, brackets "
        "and dots are allowed)"
    )


def test_a_national_number_without_a_default_region_refuses_the_list(tmp_path: Path, ctx: Context) -> None:
    path = tmp_path / "dnc.txt"
    path.write_text("098765 43210\n", encoding="utf-8")
    no_region = Context(default_region=None, timezone=ctx.timezone, now=ctx.now)
    with pytest.raises(InputFileError, match="line 1: 098765 43210 has no country code"):
        read_suppression_list(path, no_region)


def test_a_number_cell_that_may_have_lost_its_leading_zero_refuses_the_list(
    tmp_path: Path, ctx: Context
) -> None:
    # 4397264885 is valid in Italy as written and with the 0 back: two different numbers.
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Phone"])
    sheet.append([4397264885])
    book.save(tmp_path / "dnc.xlsx")
    italy = Context(default_region="IT", timezone=ctx.timezone, now=ctx.now)
    with pytest.raises(InputFileError, match="row 2: 4397264885 was stored as a number, so a leading 0 may"):
        read_suppression_list(tmp_path / "dnc.xlsx", italy)


def test_a_well_formed_number_that_is_not_valid_is_ignored(tmp_path: Path, ctx: Context) -> None:
    path = tmp_path / "dnc.txt"
    path.write_text("+91 98765 43210\n+91 12345\n", encoding="utf-8")
    assert numbers(path, ctx) == {"+919876543210"}


def test_an_entry_kept_without_its_plus_is_read_with_its_country_code_too(
    tmp_path: Path, ctx: Context
) -> None:
    # Not numbers of India (the run's region): a US and a UK number kept without their +.
    path = tmp_path / "dnc.txt"
    path.write_text("12125550100\n44 7911 123456\n+91 98765 43210\n0 12345\n", encoding="utf-8")
    assert numbers(path, ctx) == {"+12125550100", "+447911123456", "+919876543210"}


def test_a_number_cell_that_is_not_valid_is_ignored_like_the_same_text(tmp_path: Path, ctx: Context) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Phone"])
    sheet.append([919876543210])
    sheet.append([12345])
    book.save(tmp_path / "dnc.xlsx")
    assert numbers(tmp_path / "dnc.xlsx", ctx) == {"+919876543210"}


def test_a_workbook_with_numbers_on_a_second_sheet_is_refused_not_half_read(
    tmp_path: Path, ctx: Context
) -> None:
    book = Workbook()
    first = book.active
    assert first is not None
    first.title = "Unsubscribed"
    first.append(["Phone"])
    first.append(["+91 98765 43210"])
    book.create_sheet("Empty")
    only_header = book.create_sheet("Later")
    only_header.append(["Phone"])
    book.save(tmp_path / "dnc.xlsx")
    assert numbers(tmp_path / "dnc.xlsx", ctx) == {"+919876543210"}  # empty sheets are no reason to refuse

    complaints = book.create_sheet("Complaints")
    complaints.append(["Phone"])
    complaints.append(["+91 98765 43212"])
    book.save(tmp_path / "dnc.xlsx")
    with pytest.raises(InputFileError) as refused:
        read_suppression_list(tmp_path / "dnc.xlsx", ctx)
    assert refused.value.problem == (
        "has rows on more than one sheet ('Unsubscribed', 'Complaints'); a do-not-call list is read from "
        "one sheet"
    )


def test_a_table_without_a_phone_column_is_refused_with_a_hint(tmp_path: Path, ctx: Context) -> None:
    path = tmp_path / "dnc.csv"
    path.write_text("Customer,Added\nAarav,2026-11-02\n", encoding="utf-8")
    with pytest.raises(ColumnError) as raised:
        read_suppression_list(path, ctx)
    assert str(raised.value) == (
        f"{path}: cannot be used as a do-not-call list: no phone number column (headers: 'Customer', 'Added')"
    )
    assert raised.value.hint == (
        'Give it one column headed "phone" (or "mobile", "to_number"...), '
        "or use a plain text file with one number per line."
    )


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "leads.csv").write_text(SHEET, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALLKARO_API_KEY", raising=False)
    return tmp_path


def results(path: Path) -> dict[str, tuple[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return {r["Name"]: (r["callkaro_status"], r["callkaro_message"]) for r in csv.DictReader(handle)}


RUN = ["run", "leads.csv", "--agent-id", "demo-agent", "--sandbox", "--default-region", "IN", "--no-progress"]


def test_listed_rows_are_suppressed_naming_the_list_and_the_run_exits_0(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "dnc.txt").write_text("9876543210\n", encoding="utf-8")
    (here / "legal hold.csv").write_text("Phone\n+91 99001 23456\n", encoding="utf-8")
    code = main([*RUN, "--suppress", "dnc.txt", "--suppress", "legal hold.csv"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[:2] == ["scheduled   2", "suppressed  2"]
    assert results(here / "leads.results.csv") == {
        "Aarav": ("suppressed", "on the do-not-call list dnc.txt"),
        "Priya": ("scheduled", ""),
        "Rohan": ("scheduled", ""),
        "Ananya": ("suppressed", "on the do-not-call list legal hold.csv"),
    }


def test_validate_shows_which_rows_a_list_suppresses(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / "dnc.txt").write_text("9876543210\n", encoding="utf-8")
    code = main(["validate", "leads.csv", "--default-region", "IN", "--suppress", "dnc.txt"])
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        "valid       3",
        "suppressed  1",
        "  row 2 suppressed: on the do-not-call list dnc.txt",
    ]


def test_an_unreadable_list_exits_2_naming_it_and_sends_nothing(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "dnc.xlsx").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    code = main([*RUN, "--suppress", "dnc.xlsx"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.startswith("callkaro-loader: error: dnc.xlsx: ")
    assert "(a do-not-call list given with --suppress)" in err
    assert not (here / "leads.results.csv").exists()

    code = main([*RUN, "--suppress", "missing.txt"])
    assert code == 2
    assert capsys.readouterr().err == (
        "callkaro-loader: error: missing.txt: no such file (given as a do-not-call list with --suppress)\n"
    )


def test_on_resume_a_newly_listed_row_is_not_sent_and_a_scheduled_one_stays_scheduled(here: Path) -> None:
    options = {"agent_id": "demo-agent", "sandbox": True, "default_region": "IN", "no_progress": True}
    assert loader.load_campaign("leads.csv", **options).counts == {"scheduled": 4}
    # As if that run had been stopped after Aarav and Priya: Rohan and Ananya are still pending.
    with sqlite3.connect(here / "leads.results.csv.state") as db:
        db.execute("UPDATE rows SET status = 'pending', call_id = NULL WHERE source_row IN (4, 5)")

    # Before the run is resumed, Aarav (already called) and Rohan (not yet) are put on the list.
    (here / "dnc.txt").write_text("+91 98765 43210\n919820011223\n", encoding="utf-8")
    sent: list[tuple[int, str]] = []

    class Record:
        def outcome(self, source_row: int, status: str, **_: object) -> None:
            sent.append((source_row, status))

        def retry(self, source_row: int, **_: object) -> None:
            pass

    resumed = loader.load_campaign("leads.csv", suppress=["dnc.txt"], events=Record(), **options)
    assert sent == [(5, "scheduled")]  # only Ananya was sent
    found = results(here / "leads.results.csv")
    earlier = found["Aarav"][1]
    assert earlier.startswith("scheduled by an earlier run on ") and earlier.endswith("; not sent again")
    assert found == {
        "Aarav": ("scheduled", earlier),  # scheduled before it was listed: that call exists
        "Priya": ("scheduled", earlier),
        "Rohan": ("suppressed", "on the do-not-call list dnc.txt"),
        "Ananya": ("scheduled", ""),
    }
    assert resumed.counts == {"scheduled": 3, "suppressed": 1}
    assert resumed.calls == {"this_run": 1, "earlier_runs": 2}
