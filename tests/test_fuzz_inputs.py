"""Whatever bytes arrive, ``validate`` and ``run --dry-run`` end in 0, 1 or 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
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


def both_commands(capsys: Any, path: Path, written: str) -> None:
    """``validate --report`` and ``run --dry-run``, writing their files as ``written`` (.csv or .xlsx)."""
    report = path.with_name(f"report{written}")
    check(
        capsys,
        ["validate", str(path), "--default-region", "IN", "--timezone", "UTC", "--report", str(report)],
    )
    output = path.with_name(f"results{written}")
    check(
        capsys,
        ["run", str(path), "--agent-id", "a", "--dry-run", "--output", str(output), "--timezone", "UTC"],
    )


@FUZZ
@given(
    data=st.binary(max_size=3000),
    suffix=st.sampled_from(SUFFIXES),
    written=st.sampled_from([".csv", ".xlsx"]),
)
def test_random_bytes_never_end_in_a_traceback(capsys: Any, data: bytes, suffix: str, written: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        both_commands(capsys, path, written)


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
