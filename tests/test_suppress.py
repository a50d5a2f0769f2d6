"""Do-not-call lists (``--suppress``): read like the sheet, matched after normalising, never skipped."""

from __future__ import annotations

import csv
import datetime as dt
import os
import sqlite3
import subprocess
import zoneinfo
from pathlib import Path

import httpx
import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import Workbook
from sandbox_process import CLI, running_sandbox

import loader
from loader.cli import main
from loader.errors import ColumnError, InputFileError
from loader.list_entries import EntryNumbers, read_entries
from loader.normalise import Context
from loader.suppress import read_suppression_list

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
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


def test_a_number_cell_that_may_have_lost_its_leading_zero_suppresses_both_numbers(
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
    # Either may be the listed person: neither is called.
    assert numbers(tmp_path / "dnc.xlsx", italy) >= {"+394397264885", "+3904397264885"}


def test_a_well_formed_number_that_is_not_valid_refuses_the_list(tmp_path: Path, ctx: Context) -> None:
    path = tmp_path / "dnc.txt"
    path.write_text("+91 98765 43210\n+91 12345\n", encoding="utf-8")
    with pytest.raises(InputFileError) as refused:
        read_suppression_list(path, ctx)
    assert refused.value.problem == (
        "do-not-call list entries that are not phone numbers: line 2: +91 12345 is not a valid phone number "
        "for IN: too short (a valid one looks like +91 81234 56789)"
    )


def test_an_entry_kept_without_its_plus_is_read_with_its_country_code_too(
    tmp_path: Path, ctx: Context
) -> None:
    # Not numbers of India (the run's region): a US and a UK number kept without their +.
    path = tmp_path / "dnc.txt"
    path.write_text("12125550100\n44 7911 123456\n+91 98765 43210\n", encoding="utf-8")
    assert numbers(path, ctx) >= {"+12125550100", "+447911123456", "+919876543210"}


def test_a_number_cell_that_is_not_valid_refuses_the_list_like_the_same_text(
    tmp_path: Path, ctx: Context
) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Phone"])
    sheet.append([919876543210])
    sheet.append([12345])
    book.save(tmp_path / "dnc.xlsx")
    with pytest.raises(InputFileError, match="row 3: 12345 is not a valid phone number for IN"):
        read_suppression_list(tmp_path / "dnc.xlsx", ctx)


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
        'Give it a column headed "phone" (or "mobile", "to_number"...), point at its phone columns with '
        '--map "HEADER=to_number", or use a plain text file with one number per line.'
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


# --- issue 13 problem 6: entries written in common ways are matched or the list is refused ----------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param("dnc.csv", "Phone\n9876543210.0\n", {"+919876543210"}, id="pandas float export"),
        pytest.param("dnc.txt", "919876543210.0\n", {"+919876543210"}, id="float export, plain list"),
        pytest.param("dnc.txt", "091 98201 77889\n", {"+919820177889"}, id="0 and the country code"),
        pytest.param("dnc.txt", "0091 98201 77889\n", {"+919820177889"}, id="00 prefix"),
        pytest.param("dnc.txt", "919820177889\n", {"+919820177889"}, id="country code without +"),
        pytest.param(
            "dnc.txt", "9000011122/23\n", {"+919000011122", "+919000011123"}, id="slash: two numbers"
        ),
        pytest.param(
            "dnc.csv",
            'Phone\n"9000011122, 9000011123"\n',
            {"+919000011122", "+919000011123"},
            id="comma: two numbers",
        ),
        pytest.param(
            "dnc.csv",
            "Phone\n9000011122 / 9000011123\n9876543210 or 9845012345\n",
            {"+919000011122", "+919000011123", "+919876543210", "+919845012345"},
            id="several numbers written out",
        ),
        pytest.param(
            "dnc.csv",
            "Phone\n9876543210 x123\n+91 98450 12345 ext. 12\n",
            {"+919876543210", "+919845012345"},
            id="extensions",
        ),
        pytest.param(
            "dnc.csv", "Phone\n9.19876543210E+11\n", {"+919876543210"}, id="scientific, digits kept"
        ),
        # A program's shortest form leaves out one trailing zero (issue 16: 9.87654321E9 is read).
        pytest.param(
            "dnc.csv", "Phone\n9.1987654321E+11\n", {"+919876543210"}, id="scientific, last zero left out"
        ),
    ],
)
def test_entries_written_in_common_ways_are_read_as_the_numbers_they_are(
    tmp_path: Path, ctx: Context, name: str, text: str, expected: set[str]
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert numbers(path, ctx) >= expected


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param("+91 12345", id="too short"),
        pytest.param("0 12345", id="national, too short"),
        pytest.param("9000011122, 12", id="second number unreadable"),
        pytest.param("9.198765432E+11", id="scientific, digits may be lost"),
        pytest.param("98765 43210 / 0000 0000 000", id="slash, then too many digits"),
        pytest.param("call 98450 after 6", id="words and digits"),
    ],
)
def test_an_entry_with_digits_that_is_not_read_as_numbers_refuses_the_list(
    tmp_path: Path, ctx: Context, entry: str
) -> None:
    path = tmp_path / "dnc.csv"
    path.write_text(f'Phone\n+91 98765 43210\n"{entry}"\n', encoding="utf-8")
    with pytest.raises(InputFileError) as refused:
        read_suppression_list(path, ctx)
    assert refused.value.problem.startswith("do-not-call list entries that are not phone numbers: row 3: ")


def test_entries_without_digits_are_not_numbers_and_are_skipped(tmp_path: Path, ctx: Context) -> None:
    path = tmp_path / "dnc.csv"
    path.write_text("Phone,Alt Phone\n9876543210,N/A\n9845012345,-\n", encoding="utf-8")
    assert numbers(path, ctx) == {"+919876543210", "+919845012345"}


def test_an_excel_number_cell_is_read_as_its_number(tmp_path: Path, ctx: Context) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Phone"])
    sheet.append([9876543210.0])
    sheet.append([919845012345])
    book.save(tmp_path / "dnc.xlsx")
    assert numbers(tmp_path / "dnc.xlsx", ctx) == {"+919876543210", "+919845012345"}


def test_a_work_phone_column_that_is_not_read_refuses_the_list_naming_it(
    tmp_path: Path, ctx: Context
) -> None:
    path = tmp_path / "dnc.csv"
    path.write_text(
        "Name,Phone,Work Phone\nAarav,9876543210,9845012345\nPriya,,9988776655\n", encoding="utf-8"
    )
    with pytest.raises(ColumnError) as refused:
        read_suppression_list(path, ctx)
    assert refused.value.problem == (
        "column 'Work Phone' holds phone numbers (2 of its 2 entries), but a do-not-call list is read "
        "only from its phone columns"
    )
    assert refused.value.hint == (
        'Read it too with --map "Work Phone=to_number" (or map in the config file), or remove the column '
        "from the list if it holds no phone numbers."
    )
    read = read_suppression_list(path, ctx, column_map={"Work Phone": "to_number"})
    assert read.numbers == {"+919876543210", "+919845012345", "+919988776655"}


def test_a_list_headed_phone_and_alt_phone_reads_both_or_is_refused(tmp_path: Path, ctx: Context) -> None:
    path = tmp_path / "dnc.csv"
    path.write_text("Phone,Alt Phone\n9876543210,9845012345\n", encoding="utf-8")
    with pytest.raises(ColumnError, match="column 'Alt Phone' holds phone numbers"):
        read_suppression_list(path, ctx)
    read = read_suppression_list(path, ctx, column_map={"Alt Phone": "to_number"})
    assert read.numbers == {"+919876543210", "+919845012345"}


@pytest.mark.parametrize(
    "header",
    [
        "Mobile No",
        "Mobile No.",
        "Phone No.",
        "Contact No.",
        "Cell",
        "Mob",
        "WhatsApp Number",
        "मोबाइल नंबर",
        "फ़ोन नंबर",
    ],
)
def test_a_list_headed_as_crm_exports_head_phone_columns_is_read(
    tmp_path: Path, ctx: Context, header: str
) -> None:
    path = tmp_path / "dnc.csv"
    path.write_text(f"Customer,{header}\nAarav,9876543210\n", encoding="utf-8")
    assert numbers(path, ctx) == {"+919876543210"}


def test_a_list_with_a_column_named_by_map_is_read(tmp_path: Path, ctx: Context) -> None:
    path = tmp_path / "dnc.csv"
    path.write_text("Customer,DND Registered\nAarav,9876543210\n", encoding="utf-8")
    with pytest.raises(ColumnError):
        read_suppression_list(path, ctx)
    read = read_suppression_list(path, ctx, column_map={"DND Registered": "to_number"})
    assert read.numbers == {"+919876543210"}


def lone_number_workbook(path: Path, *, first: bool) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Unsubscribed"
    if first:
        sheet.append(["+91 98765 43210"])
    else:
        sheet.append(["Phone"])
        sheet.append(["+91 98450 12345"])
        book.create_sheet("Later").append(["+91 98765 43210"])
    book.save(path)


def test_a_headerless_number_alone_on_a_second_sheet_refuses_the_list(tmp_path: Path, ctx: Context) -> None:
    lone_number_workbook(tmp_path / "dnc.xlsx", first=False)
    with pytest.raises(InputFileError) as refused:
        read_suppression_list(tmp_path / "dnc.xlsx", ctx)
    assert refused.value.problem.startswith("has rows on more than one sheet ('Unsubscribed', 'Later')")


def test_a_list_workbook_holding_only_one_number_is_read(tmp_path: Path, ctx: Context) -> None:
    lone_number_workbook(tmp_path / "dnc.xlsx", first=True)
    assert numbers(tmp_path / "dnc.xlsx", ctx) == {"+919876543210"}


def test_map_applies_to_lists_from_the_command_line_config_and_library(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "dnc.csv").write_text("Customer,DND Registered\nAarav,9876543210\n", encoding="utf-8")
    argv = ["validate", "leads.csv", "--default-region", "IN", "--suppress", "dnc.csv"]
    assert main(argv) == 2
    assert "--map" in capsys.readouterr().err
    assert main([*argv, "--map", "DND Registered=to_number"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["valid       3", "suppressed  1"]
    (here / "c.toml").write_text('map = ["DND Registered=to_number"]\n', encoding="utf-8")
    assert main([*argv, "--config", "c.toml"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["valid       3", "suppressed  1"]
    result = loader.validate_file(
        "leads.csv", default_region="IN", suppress=["dnc.csv"], map={"DND Registered": "to_number"}
    )
    assert result.counts == {"valid": 3, "suppressed": 1}
    ran = loader.load_campaign(
        "leads.csv",
        agent_id="demo-agent",
        sandbox=True,
        default_region="IN",
        no_progress=True,
        suppress=["dnc.csv"],
        map=["DND Registered=to_number"],
    )
    assert ran.counts == {"scheduled": 3, "suppressed": 1}


def test_a_list_with_two_phone_alias_columns_reads_both(tmp_path: Path, ctx: Context) -> None:
    path = tmp_path / "dnc.csv"
    path.write_text("Phone,Mobile No.\n9876543210,\n,9845012345\n", encoding="utf-8")
    assert numbers(path, ctx) == {"+919876543210", "+919845012345"}


def test_a_number_on_a_hidden_row_of_a_list_is_still_on_the_list(tmp_path: Path, ctx: Context) -> None:
    # Hidden rows of a lead sheet are not called; on a do-not-call list they still protect the person.
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Phone"])
    sheet.append(["+91 98765 43210"])
    sheet.append(["+91 98450 12345"])
    sheet.row_dimensions[3].hidden = True
    book.save(tmp_path / "dnc.xlsx")
    assert numbers(tmp_path / "dnc.xlsx", ctx) == {"+919876543210", "+919845012345"}


# --- every entry with digits is matched or refused: properties ---------------------------------------

#: Pieces list entries are made of: digits, the punctuation numbers are written with, separators,
#: extension marks, scientific notation and words.
_PIECES = st.sampled_from(
    [
        *"0123456789",
        " ",
        "+",
        "-",
        "(",
        ")",
        ".",
        "/",
        ",",
        ";",
        "x",
        "#",
        "E+",
        ".0",
        "ext. ",
        " or ",
        "N/A",
        "Tel:",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    entry=st.one_of(
        st.lists(_PIECES, min_size=1, max_size=24).map("".join),
        st.integers(min_value=-(10**16), max_value=10**16),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    region=st.sampled_from(["IN", "US", "GB", None]),
)
def test_an_entry_with_digits_is_matched_to_numbers_or_refused_never_dropped(
    entry: str | int | float, region: str | None
) -> None:
    read = read_entries([entry], region)[0]
    if any(ch.isdigit() for ch in str(entry)):
        assert bool(read.numbers) != (read.problem is not None), (entry, read)
    else:
        assert read == EntryNumbers(frozenset())


@settings(max_examples=100, deadline=None)
@given(
    entry=st.lists(_PIECES, min_size=1, max_size=24)
    .map("".join)
    .filter(lambda e: any(c.isdigit() for c in e))
)
def test_a_list_entry_with_digits_is_matched_or_the_list_is_refused(
    tmp_path_factory: pytest.TempPathFactory, entry: str
) -> None:
    path = tmp_path_factory.mktemp("entry") / "dnc.csv"
    path.write_text(f'Phone\n"{entry}"\n', encoding="utf-8")
    in_india = Context(default_region="IN", timezone=zoneinfo.ZoneInfo("Asia/Kolkata"), now=NOW)
    try:
        found = read_suppression_list(path, in_india)
    except InputFileError:
        return  # refused: the run stops before anything is sent
    assert found.numbers, f"{entry!r} was dropped"


@settings(max_examples=200, deadline=None)
@given(
    national=st.from_regex(r"[6-9][0-9]{9}", fullmatch=True),
    last=st.from_regex(r"[0-9]{2}", fullmatch=True),
    form=st.sampled_from(
        [
            "{n}",
            "{n}.0",
            "0{n}",
            "91{n}",
            "091 {a} {b}",
            "0091-{a}-{b}",
            "+91 ({a}) {b}",
            "{n} x123",
            "{a} {b} ext. 12",
            "{n}/{last}",
            "{n}, {other}",
            "{n} or +91{other}",
        ]
    ),
)
def test_an_indian_number_written_in_common_ways_is_on_the_list(national: str, last: str, form: str) -> None:
    other = national[:-2] + last
    assume_valid = [phonenumbers.is_valid_number(phonenumbers.parse(n, "IN")) for n in (national, other)]
    entry = form.format(n=national, a=national[:5], b=national[5:], last=last, other=other)
    read = read_entries([entry], "IN")[0]
    if not all(assume_valid):
        assert bool(read.numbers) != (read.problem is not None)
        return
    expected = {"+91" + national} | ({"+91" + other} if "{last}" in form or "{other}" in form else set())
    assert read.problem is None and read.numbers >= expected, (entry, read)


def test_excel_number_cells_are_read_as_their_numbers() -> None:
    read = read_entries([9876543210, 9876543210.0, 919876543210, 98765.5, True], "IN")
    assert [r.numbers for r in read[:3]] == [frozenset({"+919876543210"})] * 3
    assert read[3].problem == "is a number that is not a whole positive number"
    assert read[4] == EntryNumbers(frozenset())


# --- end to end: the real command against the sandbox process ------------------------------------

SIX = {
    "A": "+919876543210",  # listed as a pandas float export: 9876543210.0
    "B": "+919820177889",  # listed as 091 98201 77889
    "C": "+919000011122",  # listed as 9000011122/23 ...
    "D": "+919000011123",  # ... with D
    "E": "+919845012345",  # listed in a Work Phone column
    "F": "+919988776655",  # on no list: the one person called
}


def write_problem_6_lists(folder: Path, *, fixed: bool) -> list[str]:
    """The lists of issue 13, problem 6; ``fixed``: the workbook's second sheet moved onto its first."""
    (folder / "leads.csv").write_text(
        "Name,Phone\n" + "".join(f"{name},{number}\n" for name, number in SIX.items()), encoding="utf-8"
    )
    (folder / "export.csv").write_text("Phone\n9876543210.0\n", encoding="utf-8")
    (folder / "crm.csv").write_text(
        "Name,Phone,Work Phone\nB,091 98201 77889,9845012345\nC,9000011122/23,\n", encoding="utf-8"
    )
    book = Workbook()
    first = book.active
    assert first is not None
    first.append(["Phone"])
    first.append(["+91 98765 43210"])
    if fixed:
        first.append(["+91 98201 77889"])
    else:
        book.create_sheet("Later").append(["+91 98201 77889"])  # a headerless number alone on a sheet
    book.save(folder / "dnc.xlsx")
    return ["--suppress", "export.csv", "--suppress", "crm.csv", "--suppress", "dnc.xlsx"]


def test_problem_6_lists_against_the_real_api_refuse_or_leave_exactly_one_call(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLKARO_")}
    env["CALLKARO_API_KEY"] = "sandbox-key"
    lists = write_problem_6_lists(tmp_path, fixed=False)
    with running_sandbox() as sandbox:

        def loader_cli(*args: str) -> subprocess.CompletedProcess[str]:
            argv = [CLI, *args, "--default-region", "IN"]
            return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

        def called() -> list[str]:
            return [
                c["body"]["to_number"] for c in httpx.get(f"{sandbox.url}/_sandbox/calls", timeout=10).json()
            ]

        run = ["run", "leads.csv", "--agent-id", "demo-agent", "--base-url", sandbox.url, "--no-progress"]
        refused = loader_cli(*run, *lists)
        assert (refused.returncode, refused.stdout, called()) == (2, "", [])
        assert "crm.csv: column 'Work Phone' holds phone numbers" in refused.stderr
        assert '--map "Work Phone=to_number"' in refused.stderr

        mapped = [*lists, "--map", "Work Phone=to_number"]
        refused = loader_cli(*run, *mapped)
        assert (refused.returncode, refused.stdout, called()) == (2, "", [])
        assert "dnc.xlsx: has rows on more than one sheet ('Sheet', 'Later')" in refused.stderr
        assert not (tmp_path / "leads.results.csv").exists()

        write_problem_6_lists(tmp_path, fixed=True)
        previewed = loader_cli("validate", "leads.csv", *mapped)
        assert (previewed.returncode, previewed.stdout.splitlines()[:2]) == (
            0,
            ["valid       1", "suppressed  5"],
        )
        done = loader_cli(*run, *mapped)
        assert (done.returncode, done.stderr) == (0, "")
        assert called() == [SIX["F"]]
    assert results(tmp_path / "leads.results.csv") == {
        "A": ("suppressed", "on the do-not-call list export.csv"),
        "B": ("suppressed", "on the do-not-call list crm.csv"),
        "C": ("suppressed", "on the do-not-call list crm.csv"),
        "D": ("suppressed", "on the do-not-call list crm.csv"),
        "E": ("suppressed", "on the do-not-call list crm.csv"),
        "F": ("scheduled", ""),
    }


def test_without_a_default_region_a_column_of_national_numbers_still_refuses_the_list(
    tmp_path: Path, ctx: Context
) -> None:
    path = tmp_path / "dnc.csv"
    path.write_text("Phone,Work Phone\n+91 98765 43210,98450 12345\n", encoding="utf-8")
    no_region = Context(default_region=None, timezone=ctx.timezone, now=ctx.now)
    with pytest.raises(ColumnError, match="column 'Work Phone' holds phone numbers"):
        read_suppression_list(path, no_region)


# --- a number cell whose format shows a country code ----------------------------------------------

UK = "+447911123456"  # listed as the number 7911123456, shown "+44 7911123456" by its format
SHOWS_44 = '"+44 "0000000000'


def formatted_list(path: Path, shape: str, number_format: str = SHOWS_44) -> Path:
    """A do-not-call workbook whose one UK number is a number cell formatted to show +44, in ``shape``:
    under a Phone header, alone with no header (row 1), or first of a headerless column."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    rows = {
        "headed": [["Phone"], [7911123456], ["+91 98450 12345"]],
        "alone": [[7911123456]],
        "headerless column": [[7911123456], ["+91 98450 12345"]],
    }[shape]
    for row in rows:
        sheet.append(row)
    cell = sheet.cell(row=2 if shape == "headed" else 1, column=1)
    assert cell.value == 7911123456
    cell.number_format = number_format
    book.save(path)
    return path


@pytest.mark.parametrize("shape", ["headed", "alone", "headerless column"])
def test_a_list_number_cell_formatted_with_a_country_code_is_read_with_that_code(
    tmp_path: Path, ctx: Context, shape: str
) -> None:
    # Read with --default-region IN it would be +917911123456, and the listed UK person called.
    listed = numbers(formatted_list(tmp_path / "dnc.xlsx", shape), ctx)
    assert UK in listed
    assert not {n for n in listed if n.endswith("7911123456") and n != UK}


def test_a_list_number_whose_country_code_format_cannot_be_read_exactly_refuses_the_list(
    tmp_path: Path, ctx: Context
) -> None:
    path = formatted_list(tmp_path / "dnc.xlsx", "headed", '"+44 "#,##0')
    with pytest.raises(InputFileError) as refused:
        read_suppression_list(path, ctx)
    assert refused.value.problem == (
        "do-not-call list entries that are not phone numbers: row 2: 7911123456 is shown with a country "
        'code by its number format "+44 "#,##0, which the loader cannot read exactly; type the number as '
        "text, with its country code (e.g. +44 7911 123456)"
    )


def test_a_run_does_not_call_a_person_listed_with_a_country_code_shown_by_a_format(tmp_path: Path) -> None:
    (tmp_path / "leads.csv").write_text(f"Name,Phone\nOliver,{UK}\nAarav,+91 98765 43210\n", encoding="utf-8")
    formatted_list(tmp_path / "dnc.xlsx", "headed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLKARO_")}
    env |= {"CALLKARO_API_KEY": "sandbox-key", "XDG_STATE_HOME": str(tmp_path / "state")}
    with running_sandbox() as sandbox:
        argv = [CLI, "run", "leads.csv", "--agent-id", "demo-agent", "--base-url", sandbox.url]
        argv += ["--no-progress", "--default-region", "IN", "--suppress", "dnc.xlsx"]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        calls = httpx.get(f"{sandbox.url}/_sandbox/calls", timeout=10).json()
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert [c["body"]["to_number"] for c in calls] == ["+919876543210"]
    assert results(tmp_path / "leads.results.csv") == {
        "Oliver": ("suppressed", "on the do-not-call list dnc.xlsx"),
        "Aarav": ("scheduled", ""),
    }


def test_a_map_for_a_list_never_changes_which_column_of_the_sheet_is_called(tmp_path: Path) -> None:
    """The hint for a list's ``Alt Phone`` is ``--map "Alt Phone=to_number"``; a lead sheet with its
    own ``Phone`` and an ``Alt Phone`` of its own would silently dial ``Alt Phone`` instead."""
    (tmp_path / "leads.csv").write_text(
        "Name,Phone,Alt Phone\nAarav,9876543210,9845012345\nPriya,9900123456,9820011223\n", encoding="utf-8"
    )
    (tmp_path / "dnc.csv").write_text("Phone,Alt Phone\n9876543210,9811122233\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLKARO_")}
    env["CALLKARO_API_KEY"] = "sandbox-key"
    with running_sandbox() as sandbox:
        argv = [CLI, "run", "leads.csv", "--agent-id", "demo-agent", "--default-region", "IN"]
        argv += ["--base-url", sandbox.url, "--no-progress", "--suppress", "dnc.csv"]
        hinted = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert hinted.returncode == 2 and '--map "Alt Phone=to_number"' in hinted.stderr
        followed = subprocess.run(
            [*argv, "--map", "Alt Phone=to_number"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        calls = httpx.get(f"{sandbox.url}/_sandbox/calls", timeout=10).json()
    assert [c["body"]["to_number"] for c in calls] == []
    assert (followed.returncode, followed.stdout) == (2, ""), followed.stderr
    assert followed.stderr.startswith(
        'callkaro-loader: error: leads.csv: --map "Alt Phone=to_number" names a column of this sheet '
        "and of a do-not-call list: here it would call 'Alt Phone' instead of 'Phone'\n"
    ), followed.stderr
    assert not (tmp_path / "leads.results.csv").exists()
