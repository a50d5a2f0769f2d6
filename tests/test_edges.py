"""The loader's edges: hostile options, keys, inputs and outputs get one line and the documented
exit code, never a traceback, a hang or an unbounded read."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

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
