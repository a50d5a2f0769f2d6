"""A workbook parsed while the loader starts: used only when it is the same file and sheet, never
parsed before the safety checks, and never in place of the reader's own messages."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from loader import calamine_reader, early_read, workbooks
from loader.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
FLAGS = ["--default-region", "IN", "--timezone", "Asia/Kolkata"]


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread each workbook parse ran in."""
    seen: list[str] = []
    real = calamine_reader.open_sheet

    def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(early_read, "open_sheet", counted)
    monkeypatch.setattr(workbooks, "open_sheet", counted)
    return seen


def copy(tmp_path: Path, name: str = "contacts.xlsx") -> Path:
    return Path(shutil.copy(FIXTURES / name, tmp_path / name))


def write_config(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "loader.toml"
    config.write_text(text, encoding="utf-8")
    return config


def test_the_command_parses_a_workbook_once_early_and_says_the_same(
    tmp_path: Path, parses: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = copy(tmp_path)
    assert main(["validate", str(path), *FLAGS]) == 1  # two invalid rows on purpose
    early = capsys.readouterr()
    assert parses == ["callkaro-early-read"]
    assert early_read._pending is None  # taken, nothing left holding the sheet

    monkeypatch.setattr(early_read, "MAX_BYTES", 0)  # the same run, read the usual way
    assert main(["validate", str(path), *FLAGS]) == 1
    assert parses[1:] == ["MainThread"]
    assert capsys.readouterr() == early


def test_a_workbook_that_fails_the_safety_checks_is_never_parsed_early(
    tmp_path: Path, parses: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "leads.xlsx"
    with zipfile.ZipFile(FIXTURES / "contacts.xlsx") as old, zipfile.ZipFile(path, "w") as new:
        for info in old.infolist():
            data = old.read(info.filename)
            if info.filename == "[Content_Types].xml":
                data = b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "a">]>\n' + data.split(b"?>", 1)[1]
            new.writestr(info, data)
    early_read.start(path, None)
    assert early_read._pending is not None
    early_read._pending.thread.join()
    early_read.discard()
    assert parses == []
    assert main(["validate", str(path), *FLAGS]) == 2
    assert "declares an XML document type" in capsys.readouterr().err
    assert parses == []


def test_a_file_changed_after_the_early_parse_is_read_again(tmp_path: Path, parses: list[str]) -> None:
    path = copy(tmp_path)
    early_read.start(path, None)
    assert early_read._pending is not None
    early_read._pending.thread.join()
    shutil.copy(FIXTURES / "template_filled.xlsx", path)
    os.utime(path, ns=(1, 1))  # a different time, whatever the clock's resolution
    assert early_read.take(path, None, by_content=False) is None
    early_read.discard()
    assert parses == ["callkaro-early-read"]


def test_another_sheet_or_another_file_is_read_by_the_reader(tmp_path: Path, parses: list[str]) -> None:
    path = copy(tmp_path)
    other = copy(tmp_path, "template_filled.xlsx")
    for asked, sheet in ((path, "Leads"), (other, None)):
        early_read.start(path, None)
        assert early_read.take(asked, sheet, by_content=False) is None
        # Let go at once: the reader parses for itself, and the unused parse must not stay in memory.
        assert early_read._pending is None
        early_read.wait()  # its thread still ends by itself
    early_read.start(path, None)
    opened = early_read.take(path, None, by_content=False)
    assert opened is not None and opened["name"] == "Leads"
    assert early_read.take(path, None, by_content=False) is None  # taken once


def test_a_sheet_chosen_in_the_config_file_is_the_one_parsed_early(
    tmp_path: Path, parses: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, config = copy(tmp_path), write_config(tmp_path, "sheet = 0\n")
    assert main(["validate", str(path), "--config", str(config), *FLAGS]) == 1
    assert "valid" in capsys.readouterr().out
    assert parses == ["callkaro-early-read"]  # not parsed again for the config's sheet


def test_options_that_cannot_work_are_refused_before_any_parse(
    tmp_path: Path, parses: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, config = copy(tmp_path), write_config(tmp_path, "shet = 0\n")  # a typo: an unknown key
    assert main(["run", str(path), "--sandbox", *FLAGS]) == 2  # no --agent-id
    assert main(["validate", str(path), "--config", str(config), *FLAGS]) == 2
    assert capsys.readouterr().err.count("error:") == 2
    early_read.wait()
    assert parses == []


def test_a_file_rewritten_in_place_with_its_old_time_is_read_again(tmp_path: Path, parses: list[str]) -> None:
    # cp -p, touch -r, rsync --inplace -t: same inode, same size, the old modification time.
    path = tmp_path / "leads.xlsx"
    with zipfile.ZipFile(FIXTURES / "contacts.xlsx") as old:
        parts = {info.filename: old.read(info.filename) for info in old.infolist()}

    def write(city: bytes) -> bytes:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as new:
            for name, data in parts.items():
                strings = name == "xl/sharedStrings.xml"
                new.writestr(name, data.replace(b">Chennai<", city) if strings else data)
        return path.read_bytes()

    changed = write(b">Madras!<")
    write(b">Chennai<")
    before = path.stat()
    early_read.start(path, None)
    assert early_read._pending is not None
    early_read._pending.done.wait()
    time.sleep(0.05)  # past the granularity of the file system's timestamps
    with path.open("r+b") as handle:
        handle.write(changed)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    assert early_read.take(path, None, by_content=False) is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_named_like_a_workbook_is_left_to_the_reader(tmp_path: Path, parses: list[str]) -> None:
    # A pipe can be read once: an early reader would take what the reader then waits for forever.
    path = tmp_path / "leads.xlsx"
    os.mkfifo(path)
    early_read.start(path, None)
    started = early_read._pending
    try:
        assert started is None
    finally:
        if started is not None:  # free an early reader stuck opening the pipe, or the test run never ends
            with path.open("wb"):
                pass
            early_read.discard()
            early_read.wait()


def test_no_thread_to_be_had_leaves_the_parse_to_the_reader(
    tmp_path: Path, parses: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    assert main(["validate", str(copy(tmp_path)), *FLAGS]) == 1
    assert "valid" in capsys.readouterr().out
    assert parses == ["MainThread"]


def test_text_files_and_large_workbooks_are_left_to_the_reader(
    tmp_path: Path, parses: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    early_read.start(copy(tmp_path, "contacts.csv"), None)
    assert early_read._pending is None
    monkeypatch.setattr(early_read, "MAX_BYTES", 1000)
    early_read.start(copy(tmp_path), None)
    assert early_read._pending is None
    assert parses == []


def test_a_csv_named_xlsx_is_not_parsed_early_but_still_read(
    tmp_path: Path, parses: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(shutil.copy(FIXTURES / "contacts.csv", tmp_path / "contacts.xlsx"))
    assert main(["validate", str(path), *FLAGS]) == 1
    assert "valid" in capsys.readouterr().out
    assert parses == []


def _slow_parse_script(before: str, argv: list[str]) -> str:
    """A ``callkaro-loader`` process whose early parse runs ``before`` and then takes 60 s; it
    prints ``waiting for the parse`` when the command starts waiting for it."""
    return (
        "import os, sys, time\n"
        "from loader import calamine_reader, early_read\n"
        "real = calamine_reader.open_sheet\n"
        "def slow(path, *args, **kwargs):\n"
        f"    {before}\n"
        "    time.sleep(60)\n"
        "    return real(path, *args, **kwargs)\n"
        "early_read.open_sheet = slow\n"
        # Says when the command starts waiting for the parse: the moment the tests stop it at.
        "def saying(wait):\n"
        "    def waiting(*args, **kwargs):\n"
        "        print('waiting for the parse', flush=True)\n"
        "        return wait(*args, **kwargs)\n"
        "    return waiting\n"
        "early_read.take, early_read.wait = saying(early_read.take), saying(early_read.wait)\n"
        "from loader.cli import entry\n"
        f"sys.argv = ['callkaro-loader', *{argv!r}]\n"
        "print('started', flush=True)\n"
        "sys.exit(entry())\n"
    )


def _start(script: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert child.stdout is not None and child.stdout.readline() == "started\n"
    return child


def _wait_for_line(child: subprocess.Popen[str], line: str) -> list[str]:
    """The lines ``child`` printed before ``line``, once it has printed it."""
    assert child.stdout is not None
    before = []
    while (got := child.stdout.readline()) != line:
        assert got, f"the command ended without printing {line!r}: {before}"
        before.append(got)
    return before


def test_a_run_stopped_before_reading_ends_without_waiting_for_the_parse(tmp_path: Path) -> None:
    # The parse takes 60 s; the process must end long before it, with the usual line and code.
    path = copy(tmp_path)
    output = tmp_path / "r.txt"
    bad_output = ["run", str(path), "--agent-id", "a", "--sandbox", "--output", str(output), *FLAGS]
    child = _start(_slow_parse_script("pass", bad_output))
    try:
        out, err = child.communicate(timeout=20)
    finally:
        child.kill()
    assert child.returncode == 2
    assert err.startswith(f"callkaro-loader: error: --output {output} must end in .csv or .xlsx")

    child = _start(_slow_parse_script("pass", ["validate", str(path), *FLAGS]))
    try:
        _wait_for_line(child, "waiting for the parse\n")  # reading: waiting for the parse
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=20)
    finally:
        child.kill()
    assert child.returncode == 1
    assert err.splitlines() == [
        "callkaro-loader: stopped at once; what was recorded is kept; run the same command again to resume"
    ]


def test_ctrl_c_ends_the_wait_for_a_parse_the_reader_passed_over(tmp_path: Path) -> None:
    # The file changes once the early parse has begun, so the reader parses it again itself and
    # the run finishes; the early parse, still going, is waited for until Ctrl-C.
    path = copy(tmp_path)
    child = _start(_slow_parse_script("os.utime(path, ns=(1, 1))", ["validate", str(path), *FLAGS]))
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "waiting for the parse\n"  # the reader's, passed over
        # The run read the sheet and finished; then the command waits for the early parse.
        assert _wait_for_line(child, "waiting for the parse\n")[0].startswith("valid ")
        assert child.poll() is None
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=20)
    finally:
        child.kill()
    assert child.returncode == 1  # validate's own code: two invalid rows
    assert err == ""
