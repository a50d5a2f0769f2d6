"""Whatever bytes arrive, ``validate`` and ``run --dry-run`` end in 0, 1 or 2, never a traceback.

The inputs are real sheets (CSV text, workbooks) with random content, often damaged, so that most
examples get past reading to the row checks; a test asserts that share.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader.cli import main

SUFFIXES = [".csv", ".tsv", ".txt", ".xlsx", ".xlsm", ".xls", ".ods"]
# FUZZ_EXAMPLES=5000 runs a longer search by hand; the suite keeps it quick.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PHONE_HEADERS = ["phone", "to_number", "Mobile Number", "Phone"]
HEADER_WORDS = [
    "Name",
    "priority",
    "carry_over",
    "min_trigger_time",
    "schedule_at",
    "gap_between_retries",
    "",
    "x",
]


def check(capsys: Any, argv: list[str]) -> int:
    code = main(argv)
    captured = capsys.readouterr()
    assert code in (0, 1, 2), (code, captured)
    assert "Traceback" not in captured.err + captured.out
    if code == 2:
        lines = captured.err.splitlines()
        assert lines and lines[0].startswith("callkaro-loader: error: "), captured.err
        assert len(lines) <= 2, captured.err  # the problem, and perhaps a hint
    return code


def both_commands(capsys: Any, path: Path, written: str) -> int:
    """``validate --report`` and ``run --dry-run``, writing their files as ``written`` (.csv or .xlsx);
    what ``validate`` exited with."""
    report = path.with_name(f"report{written}")
    code = check(
        capsys,
        ["validate", str(path), "--default-region", "IN", "--timezone", "UTC", "--report", str(report)],
    )
    output = path.with_name(f"results{written}")
    check(
        capsys,
        ["run", str(path), "--agent-id", "a", "--dry-run", "--output", str(output), "--timezone", "UTC"],
    )
    return code


cell_text = st.text(
    # Control characters make a file binary (the random-bytes test covers that); here the text
    # should get as far as validation.
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))
    | st.sampled_from(list('",;\t|\r\n +0123456789')),
    max_size=20,
)


@st.composite
def csv_texts(draw: st.DrawFn) -> tuple[str, str]:
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    headers = draw(st.lists(st.sampled_from(HEADER_WORDS) | cell_text, max_size=5))
    headers.insert(draw(st.integers(0, len(headers))), draw(st.sampled_from(PHONE_HEADERS)))
    rows = draw(
        st.lists(
            st.lists(cell_text | st.sampled_from(["+91 98765 43210", "9.19877E+11", "5", "yes"])), max_size=8
        )
    )
    quote = draw(st.booleans())

    def line(cells: list[str]) -> str:
        return delimiter.join(f'"{c.replace(chr(34), chr(34) * 2)}"' if quote else c for c in cells)

    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return newline.join(line(r) for r in [headers, *rows]), draw(
        st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"])
    )


@FUZZ
@given(
    table=csv_texts(),
    suffix=st.sampled_from([".csv", ".txt", ".tsv", ".xls"]),
    written=st.sampled_from([".csv", ".xlsx"]),
)
def test_random_csv_text_never_ends_in_a_traceback(
    capsys: Any, table: tuple[str, str], suffix: str, written: str
) -> None:
    text, encoding = table
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(text.encode(encoding, errors="replace"))
        both_commands(capsys, path, written)


@pytest.mark.parametrize(
    "data",
    [bytes(range(256)) * 8, b"PK\x03\x04" + bytes(range(256)), b"phone\n+91 98765 43210\n\x00\x01"],
    ids=["garbage", "broken-zip", "nul-in-text"],
)
def test_the_installed_command_reports_garbage_in_one_line(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "leads.xlsx"
    path.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-m", "loader", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"callkaro-loader: error: {path}: ")
    assert len(done.stderr.splitlines()) == 1


# --- damaged files: real sheets with bytes broken, so that the search reaches validation -----------


def workbook_bytes(headers: list[str], rows: list[list[Any]]) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in [headers, *rows]:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def damage_inside(archive: bytes, member_index: int, at: int, junk: bytes) -> bytes:
    """``archive`` zipped again with ``junk`` written into one member: the zip stays valid."""
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        members = {name: source.read(name) for name in source.namelist()}
    name = sorted(members)[member_index % len(members)]
    data = members[name]
    spot = at % (len(data) + 1)
    members[name] = data[:spot] + junk + data[spot + len(junk) :]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for member, content in members.items():
            out.writestr(member, content)
    return buffer.getvalue()


cell_value = cell_text | st.integers(-(10**12), 10**12) | st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def sheet_cells(draw: st.DrawFn) -> tuple[list[str], list[list[Any]]]:
    """A header row with a phone column and one to six rows, each starting with a phone-ish value."""
    headers = draw(st.lists(st.sampled_from([h for h in HEADER_WORDS if h]), max_size=4, unique=True))
    phone = st.sampled_from(["+91 98765 43210", "9876543210", "919876543210", "12345"]) | cell_value
    rows = draw(
        st.lists(st.tuples(phone, st.lists(cell_value, max_size=len(headers))), min_size=1, max_size=6)
    )
    return [draw(st.sampled_from(PHONE_HEADERS)), *headers], [[first, *rest] for first, rest in rows]


def csv_bytes(headers: list[str], rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([headers, *rows])
    return buffer.getvalue().encode("utf-8")


@st.composite
def damaged_files(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """(suffix, bytes, how it was made): a CSV or a workbook with a phone header and rows, often
    damaged (bytes overwritten or the file cut short; a workbook inside its XML, so that its zip
    stays valid, or, rarely, in the zip itself); or, now and then, pure noise."""
    kind = draw(st.sampled_from(["csv", "csv", "xlsx", "xlsx", "noise"]))
    if kind == "noise":
        return draw(st.sampled_from(SUFFIXES)), draw(st.binary(max_size=3000)), kind
    headers, rows = draw(sheet_cells())
    data = csv_bytes(headers, rows) if kind == "csv" else workbook_bytes(headers, rows)
    damage = draw(st.sampled_from(["none", "overwritten", "cut", "overwritten in the zip"]))
    junk = draw(st.binary(min_size=1, max_size=8))
    at = draw(st.integers(0, 10**6))
    if kind == "xlsx" and damage == "overwritten":
        data = damage_inside(data, draw(st.integers(0, 20)), at, junk)
    elif damage in ("overwritten", "overwritten in the zip"):
        spot = at % len(data)
        data = data[:spot] + junk + data[spot + len(junk) :]
    elif damage == "cut":
        data = data[: at % len(data)]
    return f".{kind}", data, f"{kind}, {damage}"


def test_damaged_sheets_never_end_in_a_traceback_and_most_reach_validation(capsys: Any) -> None:
    reached: Counter[bool] = Counter()

    # A fixed seed: the share is a property of the strategy, and a random draw of 40 examples
    # scatters it from a third to two thirds (an assertion on it would fail now and then).
    @settings(FUZZ, derandomize=True, max_examples=max(FUZZ.max_examples, 80))
    @given(made=damaged_files(), written=st.sampled_from([".csv", ".xlsx"]))
    def one(made: tuple[str, bytes, str], written: str) -> None:
        suffix, data, _ = made
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"input{suffix}"
            path.write_bytes(data)
            # 0 or 1: the file was read, its columns mapped and its rows checked.
            reached[both_commands(capsys, path, written) in (0, 1)] += 1

    one()
    # Without this, a fuzz test of pure noise ends every example at "not a spreadsheet" and
    # never tests the code that reads rows (as this file's random-bytes test once did).
    share = reached[True] / sum(reached.values())
    print(f"reached validation: {share:.0%} of {sum(reached.values())}")
    assert share >= REACHES_VALIDATION, reached


#: The share of damaged-file examples that must get as far as checking rows.
REACHES_VALIDATION = 0.4
