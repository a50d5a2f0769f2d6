"""The loader's edges: hostile options, keys, inputs and outputs get one line and the documented
exit code, never a traceback, a hang or an unbounded read."""

from __future__ import annotations

import errno
import io
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from loader.cli import main

BASE = "https://api.callkaro.ai"
KEY = "ck_test_9f8e7d6c5b4a"
SHEET = "Name,Phone,City\nAarav,+91 98765 43210,Bengaluru\nPriya,098450 12345,Kochi\n"
RUN = ["run", "clean.csv", "--agent-id", "a1", "--default-region", "IN", "--timezone", "Asia/Kolkata"]


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding ``clean.csv``, with no key in the environment."""
    (tmp_path / "clean.csv").write_text(SHEET, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALLKARO_API_KEY", raising=False)
    monkeypatch.delenv("CALLKARO_BASE_URL", raising=False)
    return tmp_path


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """A CallKaro that accepts everything; any other request fails the test."""
    with respx.mock(base_url=BASE, assert_all_called=False, using="httpx") as router:
        router.post("/call/campaign").mock(
            return_value=httpx.Response(200, json={"status": "success", "batch_id": "batch-1"})
        )
        router.post("/call/outbound").mock(
            return_value=httpx.Response(200, json={"status": "success", "call_id": "call-1"})
        )
        yield router


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``callkaro-loader *argv`` in this process: the exit code and stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exited:  # argparse's own errors exit from inside parse_args
        code = exited.code if isinstance(exited.code, int) else 1
    return code, capsys.readouterr().err


def one_error(err: str) -> str:
    """The error line of ``err``, checking it is the documented one line (and at most a hint)."""
    lines = err.splitlines()
    assert "Traceback" not in err
    assert 1 <= len(lines) <= 2, err
    assert lines[0].startswith("callkaro-loader: error: "), err
    assert len(lines) == 1 or lines[1].startswith("hint: "), err
    return lines[0]


# --- item 1: options, keys and logs that raised ------------------------------------------------


@pytest.mark.parametrize("codec", ["hex", "base64", "zlib", "rot13", "uu", "bz2", "punycode", "undefined"])
def test_encoding_that_is_not_a_text_encoding_is_a_usage_error(
    here: Path, capsys: pytest.CaptureFixture[str], codec: str
) -> None:
    code, err = cli(capsys, "validate", "clean.csv", "--default-region", "IN", "--encoding", codec)
    assert code == 2
    assert f"--encoding {codec!r} is not a text encoding" in one_error(err)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("CALLKARO_API_KEY=\u201cck_test_9f8e7d6c5b4a\u201d\n".encode(), "curly quote"),
        (b"CALLKARO_API_KEY=ck_test\x009f8e7d6c5b4a\n", "control character"),
        (b'CALLKARO_API_KEY="ck_test_9f8e7d6c5b4a\nX-Evil: 1"\n', "control character"),
        (b"CALLKARO_API_KEY=ck_test_\xff9f8e7d6c5b4a\n", "is not UTF-8 text"),
        ("CALLKARO_API_KEY=ck_test_9f8e7d6c5b4a\n".encode("utf-16"), "is saved as UTF-16"),
        ("CALLKARO_API_KEY=ck_t\u00e9st_9f8e7d6c5b4a\n".encode(), "not printable ASCII"),
        # A quote left open: dotenv drops the line with a warning of its own; "no API key" would
        # send the user looking for a key that is there.
        (b"CALLKARO_API_KEY='ck_test_9f8e7d6c5b4a\n", "line 1: CALLKARO_API_KEY cannot be read"),
        (b'# key\nCALLKARO_API_KEY="ck_test_9f8e7d6c5b4a\n', "line 2: CALLKARO_API_KEY cannot be read"),
    ],
)
def test_dotenv_key_that_cannot_be_sent_is_refused_in_one_line_naming_dotenv(
    here: Path, api: respx.MockRouter, capsys: pytest.CaptureFixture[str], content: bytes, problem: str
) -> None:
    (here / ".env").write_bytes(content)
    code, err = cli(capsys, *RUN)
    assert code == 2
    line = one_error(err)
    assert ".env" in line and problem in line, line
    assert "9f8e7d6c5b4a" not in err  # the key is never printed, not even the part that looks fine
    assert not api.calls  # nothing sent
    assert not (here / "clean.results.csv").exists()


def test_key_in_the_environment_holding_a_line_break_is_refused(
    here: Path, api: respx.MockRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", f"{KEY}\nX-Evil: 1")
    code, err = cli(capsys, *RUN)
    assert code == 2
    assert "CALLKARO_API_KEY" in one_error(err)
    assert KEY not in err
    assert not api.calls


def test_a_virtualenv_folder_named_dotenv_is_not_a_key_file(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / ".env").mkdir()
    code, err = cli(capsys, *RUN)
    assert code == 2
    assert "no API key" in one_error(err)


@pytest.fixture
def dev_full() -> Iterator[Path]:
    """/dev/full, put back as the device it is if a broken loader replaced it with a file (as root)."""
    path = Path("/dev/full")
    if not path.is_char_device():
        pytest.skip("this system has no /dev/full device")
    yield path
    if not path.is_char_device() and os.geteuid() == 0:
        path.unlink()
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        os.chmod(path, 0o666)


def test_log_file_on_a_full_device_is_refused_before_anything_is_sent(
    here: Path,
    api: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dev_full: Path,
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    code, err = cli(capsys, *RUN, "--log-file", str(dev_full))
    assert code == 2
    assert "--log-file /dev/full is a device" in one_error(err)
    assert not api.calls
    assert dev_full.is_char_device()


def _disk_full_on(monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """--log-file's writes fail with ENOSPC from the first line holding ``when`` on."""
    from loader import monitoring

    real = monitoring.JsonLinesLog._emit
    full = False

    def emit(self: monitoring.JsonLinesLog, line: str) -> None:
        nonlocal full
        full = full or when in line
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, line)

    monkeypatch.setattr(monitoring.JsonLinesLog, "_emit", emit)


def test_log_file_that_cannot_be_written_at_the_start_stops_the_run_before_sending(
    here: Path, api: respx.MockRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    _disk_full_on(monkeypatch, "run_started")
    code, err = cli(capsys, *RUN, "--log-file", "run.log")
    assert code == 2
    assert one_error(err) == (
        "callkaro-loader: error: --log-file run.log cannot be written (No space left on device)"
    )
    assert not api.calls


def test_log_file_that_fills_up_while_sending_is_the_exit_1_unrecorded_line(
    here: Path, api: respx.MockRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    _disk_full_on(monkeypatch, '"scheduled"')
    code, err = cli(capsys, *RUN, "--log-file", "run.log")
    assert code == 1
    line = one_error(err)
    assert line.startswith(
        "callkaro-loader: error: --log-file run.log could not be written (No space left on device)"
    ), line
    assert "clean.results.csv" in line
    sent = [json.loads(call.request.content)["to_number"] for call in api.calls if "outbound" in str(call)]
    assert sorted(sent) == ["+919845012345", "+919876543210"]  # each number once, none twice
    assert (here / "clean.results.csv").read_text(encoding="utf-8-sig").count("scheduled") == 2


# --- item 3: outputs are written only over regular files ---------------------------------------


def _not_files(here: Path) -> dict[str, Path]:
    """Paths that are not regular files: a FIFO, a symlink to it, a symlink to nothing."""
    fifo = here / "pipe.csv"
    os.mkfifo(fifo)
    (here / "to-pipe.csv").symlink_to(fifo)
    (here / "nowhere.csv").symlink_to(here / "gone" / "x.csv")
    return {"fifo": fifo, "symlink to a fifo": here / "to-pipe.csv", "dangling": here / "nowhere.csv"}


@pytest.mark.parametrize("option", ["--output", "--summary-json", "--log-file"])
@pytest.mark.parametrize("kind", ["fifo", "symlink to a fifo", "dangling"])
def test_run_output_that_is_not_a_regular_file_is_refused_before_sending(
    here: Path,
    api: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    option: str,
    kind: str,
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    target = _not_files(here)[kind]
    code, err = cli(capsys, *RUN, option, target.name)
    assert code == 2
    line = one_error(err)
    assert f"{option} {target.name} is " in line and "the loader writes only regular files" in line, line
    assert not api.calls
    assert (here / "pipe.csv").is_fifo()  # still the FIFO, not replaced by a file
    assert not (here / "gone").exists()


def test_summary_json_in_a_folder_that_takes_no_new_file_is_refused_before_sending(
    here: Path, api: respx.MockRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # /proc/self is a folder no one (not even root) can create a file in, as a read-only mount is:
    # found only when the summary is written, the calls would already be made.
    if not Path("/proc/self").is_dir():
        pytest.skip("this system has no /proc")
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    code, err = cli(capsys, *RUN, "--summary-json", "/proc/self/summary.json")
    assert code == 2
    assert "--summary-json /proc/self/summary.json cannot be written" in one_error(err)
    assert not api.calls
    assert not (here / "clean.results.csv").exists()


def test_dev_full_as_summary_json_stays_a_device_and_the_run_is_refused(
    here: Path, capsys: pytest.CaptureFixture[str], dev_full: Path
) -> None:
    # As root, the atomic rename that writes the summary would replace the device with a file.
    if os.geteuid() != 0:
        pytest.skip("only root can replace /dev/full, which is what this guards against")
    code, err = cli(capsys, *RUN, "--dry-run", "--summary-json", str(dev_full))
    assert code == 2
    assert "--summary-json /dev/full is a device" in one_error(err)
    assert dev_full.is_char_device()


@pytest.mark.parametrize(
    ("beside", "said"),
    [
        ("clean.results.csv.state", "state"),
        ("clean.results.csv.lock", "clean.results.csv.lock is a named pipe (FIFO)"),
    ],
)
def test_state_or_lock_file_beside_the_results_that_is_a_fifo_is_refused_not_waited_on(
    here: Path,
    api: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    beside: str,
    said: str,
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    os.mkfifo(here / beside)
    code, err = cli(capsys, *RUN)
    assert code == 2
    assert said in one_error(err)
    assert not api.calls


def test_report_and_template_that_are_not_regular_files_are_refused(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _not_files(here)
    for kind in ("fifo", "dangling"):
        code, err = cli(
            capsys, "validate", "clean.csv", "--default-region", "IN", "--report", paths[kind].name
        )
        assert code == 2, kind
        assert "the loader writes only regular files" in one_error(err)
    code, err = cli(capsys, "template", paths["dangling"].name)
    assert code == 2
    assert "the loader writes only regular files" in one_error(err)
    assert not (here / "gone").exists()


def test_output_through_a_symlink_to_a_regular_file_writes_the_file_and_keeps_the_link(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "kept").mkdir()
    (here / "kept" / "summary.json").write_text("{}", encoding="utf-8")
    (here / "summary.json").symlink_to(here / "kept" / "summary.json")
    code, _ = cli(capsys, *RUN, "--dry-run", "--summary-json", "summary.json")
    assert code == 0
    assert (here / "summary.json").is_symlink()
    assert json.loads((here / "kept" / "summary.json").read_text(encoding="utf-8"))["counts"]


# --- item 2: inputs that are not regular files, and reads that never end --------------------------


def _special_inputs(here: Path) -> dict[str, Path]:
    """Inputs that are not regular files, each named as a contacts sheet."""
    os.mkfifo(here / "fifo.csv")
    (here / "zero.csv").symlink_to("/dev/zero")
    (here / "random.xlsx").symlink_to("/dev/urandom")
    (here / "to-fifo.csv").symlink_to(here / "fifo.csv")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(here / "sock.csv"))
    listener.close()
    return {
        "a named pipe (FIFO)": here / "fifo.csv",
        "a device": here / "zero.csv",
        "a device ": here / "random.xlsx",
        "a named pipe (FIFO) ": here / "to-fifo.csv",
        "a socket": here / "sock.csv",
    }


def test_inputs_that_are_not_regular_files_are_refused_before_reading(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for what, path in _special_inputs(here).items():
        code, err = cli(capsys, "validate", path.name, "--default-region", "IN")
        assert code == 2, path.name
        assert one_error(err) == (
            f"callkaro-loader: error: {path.name}: is {what.strip()}, not a file; "
            "the loader reads only regular files"
        )


def test_do_not_call_list_and_config_that_are_not_regular_files_are_refused(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _special_inputs(here)
    for option in ("--suppress", "--config"):
        for name in ("fifo.csv", "zero.csv", "sock.csv"):
            code, err = cli(capsys, "validate", "clean.csv", "--default-region", "IN", option, name)
            assert code == 2, (option, name)
            assert "the loader reads only regular files" in one_error(err), err


class Endless(io.RawIOBase):
    """A file that never ends, as /dev/zero or a file some process keeps appending to."""

    served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        buffer[:] = b"7" * len(buffer)
        self.served += len(buffer)
        return len(buffer)


def test_an_endless_stream_is_read_only_up_to_the_limit() -> None:
    from loader.errors import InputFileError
    from loader.files import read_bounded

    stream = Endless()
    with pytest.raises(InputFileError, match=r"^x.csv: is larger than 1 KiB$"):
        read_bounded(stream, 1024, path=Path("x.csv"), what="1 KiB")  # type: ignore[arg-type]
    assert stream.served == 1025  # one byte past the limit proves there is more, and no more is read
    assert read_bounded(io.BytesIO(b"a" * 1024), 1024, path=Path("x.csv"), what="1 KiB") == b"a" * 1024


def test_the_size_limit_counts_the_bytes_read_from_a_text_sheet(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from loader import limits, text_files

    monkeypatch.setattr(limits, "MAX_INPUT_BYTES", 64)
    monkeypatch.setattr(text_files, "MAX_INPUT_BYTES", 64, raising=False)
    (here / "long.csv").write_text(SHEET * 10, encoding="cp1252")  # past the fast path: the csv module reads
    code, err = cli(capsys, "validate", "long.csv", "--default-region", "IN", "--encoding", "cp1252")
    assert code == 2
    assert "long.csv: is larger than" in one_error(err)


# --- any option value, any .env: a documented exit code, never a traceback ----------------------
#
# Strategy: the options come from the parser itself (so a new option is fuzzed the day it is added).
# Text options get any text (NUL, line breaks, other scripts, a leading dash), numeric ones
# (typed int/float, and --retries, --gap, --priority) any integer or float, NaN and infinities
# included, written as text. Path options get any text too, but kept inside a fresh temporary
# folder (no "/"), since a run writes there. Commands are `validate` and `run --dry-run` only: no
# example can send a call. `main` runs in this process (fast); an exception escaping it is what a
# traceback would be in a real process, and fails the example. Examples are capped so the whole
# section runs in a few seconds.

import argparse  # noqa: E402
import contextlib  # noqa: E402
import tempfile  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from loader.cli import build_parser  # noqa: E402
from loader.history import History  # noqa: E402

NUMERIC = {"retries", "gap", "priority"}
#: Values that reach deeper than random text does, mixed in with it: real and near-miss ones.
VOCABULARY = {
    "encoding": ["utf-8", "cp1252", "utf-16", "hex", "rot13", "undefined", "punycode", "base64"],
    "timezone": ["Asia/Kolkata", "UTC", "Etc/GMT+14", "Nowhere/City", ":/etc/localtime"],
    "default_region": ["IN", "US", "ZZ", "in", "001"],
    "min_trigger_time": ["09:30:59", "23:59:30", "8 PM", "24:00"],
    "max_trigger_time": ["17:00:30", "00:00", "9:30:01 AM"],
    "schedule_at": ["2030-05-28 09:30", "2030-05-28T09:30:00+05:30", "1900-01-01 00:00", "9999-12-31 23:59"],
    "map": ["Phone=to_number", "City=priority", "=", "x=y=z"],
    "sheet": ["0", "1", "Sheet1", "-1"],
    "base_url": ["https://api.callkaro.ai", "http://example.com", "ftp://x", "https://[::1"],
    "gap": ["30,120", "[30, 120]", "0", "-5"],
    # An existing ledger, so that --skip-recent's window is really computed and looked up.
    "history": ["h.sqlite"],
}
#: Left out: they end the process by design (--help) or are not about values.
UNFUZZED = {"help"}


def _options(command: str) -> list[argparse.Action]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in commands.choices[command]._actions if a.option_strings and a.dest not in UNFUZZED]


def _numbers(dest: str) -> st.SearchStrategy[str]:
    if dest == "skip_recent":  # days back past year 1 once ended in an OverflowError traceback
        return st.one_of(st.integers(-10, 10**12), st.just(100_000_000), st.just("all")).map(str)
    return st.one_of(st.integers(-(10**20), 10**20), st.floats(allow_nan=True, allow_infinity=True)).map(str)


def _value(action: argparse.Action) -> st.SearchStrategy[list[str]]:
    flag = action.option_strings[0]
    if action.nargs == 0:
        return st.just([flag])
    if action.type in (int, float) or action.dest in NUMERIC:
        values = st.one_of(_numbers(action.dest), st.text(max_size=8))
    elif action.type is Path:
        # Inside the example's folder: any name, no folders, never an absolute path.
        values = st.text(max_size=12).map(lambda t: "p-" + t.replace("/", "_").replace("\x00", "_"))
    else:
        values = st.text(max_size=16)
    if action.dest in VOCABULARY:
        values = st.one_of(st.sampled_from(VOCABULARY[action.dest]), values)
    return values.map(lambda v: [flag, v])


def _argv(command: str) -> st.SearchStrategy[list[str]]:
    options = _options(command)
    chosen = st.lists(st.sampled_from(options), max_size=4, unique_by=lambda a: a.dest)
    return chosen.flatmap(lambda actions: st.tuples(*(_value(a) for a in actions))).map(
        lambda parts: [item for part in parts for item in part]
    )


def _main_in(folder: Path, argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` run in ``folder``: the exit code and what it wrote to stderr."""
    err = io.StringIO()
    before = Path.cwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exited:  # argparse's errors
                code = exited.code if isinstance(exited.code, int) else 1
    finally:
        os.chdir(before)
    return code, err.getvalue()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(["validate", "run"]), data=st.data())
def test_any_option_values_give_a_documented_exit_code_and_no_traceback(
    command: str, data: st.DataObject
) -> None:
    options = data.draw(_argv(command))
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "clean.csv").write_text(SHEET, encoding="utf-8")
        with History(Path(folder) / "h.sqlite"):
            pass
        argv = [command, "clean.csv", *(["--dry-run"] if command == "run" else []), *options]
        if command == "run":
            argv += ["--agent-id", "a1"] if "--agent-id" not in options else []
        with respx.mock(assert_all_called=False, assert_all_mocked=True) as network:
            code, err = _main_in(Path(folder), argv)
        assert not network.calls  # a dry run or a validation never sends
    assert 0 <= code <= 4, (argv, err)
    assert "Traceback" not in err, (argv, err)


INVALID_ONLY = "Name,Phone\nAarav,12345\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    env=st.one_of(
        st.binary(max_size=60),
        st.text(max_size=40).map(lambda t: f"CALLKARO_API_KEY={t}\n".encode()),
        st.text(max_size=40).map(lambda t: f'CALLKARO_API_KEY="{t}"\n'.encode("utf-16")),
    )
)
def test_any_dotenv_contents_give_a_documented_exit_code_and_no_traceback(env: bytes) -> None:
    # A real run (the key is loaded only for one) whose one row is invalid: nothing to send, so the
    # key is read, checked and given to the HTTP client, and no request is ever made.
    saved = os.environ.pop("CALLKARO_API_KEY", None)
    try:
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "bad.csv").write_text(INVALID_ONLY, encoding="utf-8")
            (Path(folder) / ".env").write_bytes(env)
            argv = ["run", "bad.csv", "--agent-id", "a1", "--default-region", "IN", "--no-progress"]
            with respx.mock(assert_all_called=False, assert_all_mocked=True) as network:
                code, err = _main_in(Path(folder), argv)
            assert not network.calls
    finally:
        if saved is not None:
            os.environ["CALLKARO_API_KEY"] = saved
    assert 0 <= code <= 4, (env, err)
    assert "Traceback" not in err, (env, err)


def test_a_library_caller_passing_a_key_with_a_line_break_gets_the_usage_error() -> None:
    import loader
    from loader.errors import UsageError

    with pytest.raises(UsageError, match=r"^api_key is not a usable API key: character 21 is a control"):
        loader.load_campaign(Path("nowhere.csv"), agent_id="a1", api_key=f"{KEY}\nX-Evil: 1")


def test_a_sheet_larger_than_the_limit_is_refused_before_it_is_parsed(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from loader import read

    monkeypatch.setattr(read, "MAX_INPUT_BYTES", 64)
    (here / "long.csv").write_text(SHEET * 10, encoding="utf-8")
    code, err = cli(capsys, "validate", "long.csv", "--default-region", "IN")
    assert code == 2
    assert (
        one_error(err)
        == "callkaro-loader: error: long.csv: is larger than 64 bytes, the most the loader reads"
    )


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_header_row_beyond_any_file_is_the_no_such_row_error(
    here: Path, api: respx.MockRouter, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    # Larger than the biggest index Python slices with: the text reader raised ValueError.
    argv = [*RUN, "--dry-run"] if command == "run" else ["validate", "clean.csv", "--default-region", "IN"]
    code, err = cli(capsys, *argv, "--header-row", str(10**20))
    assert code == 2
    assert f"there is no row {10**20} to read headers from" in one_error(err)
    assert not api.calls


@pytest.mark.parametrize("rate", ["5e-324", "1e-9"])
def test_a_rate_limit_that_would_wait_past_a_day_between_calls_is_refused_before_sending(
    here: Path,
    api: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    rate: str,
) -> None:
    # 5e-324 made the rate limiter divide by zero after the first call; 1e-9 sent one call, then
    # waited 31 years for the next.
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    code, err = cli(capsys, *RUN, "--rate-limit", rate)
    assert code == 2
    assert "--rate-limit must be" in one_error(err)
    assert not api.calls


@pytest.mark.parametrize("value", ["garbage", "nan", "2030-13-01"])
def test_a_test_clock_left_set_to_nonsense_is_one_line_naming_it(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CALLKARO_TEST_NOW", value)
    code, err = cli(capsys, "validate", "clean.csv", "--default-region", "IN")
    assert code == 2
    assert "CALLKARO_TEST_NOW" in one_error(err)


@pytest.mark.parametrize("option", ["--agent-id", "--batch-id", "--campaign-name"])
def test_the_key_given_as_an_agent_or_campaign_is_refused_before_it_is_sent_or_kept(
    here: Path,
    api: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    option: str,
) -> None:
    # "Agent id" and "API key" are easy to mix up: sent, printed and stored in the state and the
    # summary, the key would be everywhere SECURITY.md promises it never is.
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    argv = [*RUN, option, KEY, "--summary-json", "s.json"]
    if option == "--agent-id":
        argv[argv.index("--agent-id") : argv.index("--agent-id") + 2] = []  # RUN's own agent
    code, err = cli(capsys, *argv)
    assert code == 2
    assert f"{option} holds the API key" in one_error(err)
    assert KEY[:8] not in err
    assert not api.calls
    assert [p.name for p in here.iterdir() if KEY.encode() in p.read_bytes()] == []


def test_the_key_pasted_where_argparse_reads_it_is_not_repeated_in_its_error(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    for argv in ([*RUN, KEY], [*RUN, "--header-row", KEY]):
        code, err = cli(capsys, *argv)
        assert code == 2
        assert KEY[:8] not in err and "********" in err, err


@pytest.mark.parametrize("port", ["65536", "99999", "-1"])
def test_a_sandbox_port_no_socket_can_have_is_one_line(capsys: pytest.CaptureFixture[str], port: str) -> None:
    code, err = cli(capsys, "sandbox", "--port", port)
    assert code == 2
    assert f"--port must be from 0 to 65535 (0 picks a free one), not {port}" in one_error(err)
