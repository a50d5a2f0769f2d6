"""``loader.load_campaign`` and ``loader.validate_file``: the README example, and parity with the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_e2e import Sandbox, run_loader, sandbox_process

import loader
from loader.sandbox import Faults

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data"


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def python_blocks(section: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def expected_output(code: str) -> list[str]:
    """The ``# ...`` comment lines right after each ``print(...)``: what the README says it prints."""
    lines = code.splitlines()
    expected = []
    for i, line in enumerate(lines):
        if line.startswith("print(") and i + 1 < len(lines) and lines[i + 1].startswith("# "):
            expected.append(lines[i + 1][2:])
    return expected


def test_the_readme_notebook_example_runs_and_prints_what_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(
        SAMPLES, tmp_path / "sample_data", ignore=shutil.ignore_patterns("*.results.*", "nightly-*")
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALLKARO_API_KEY", raising=False)
    blocks = python_blocks(readme_section("Run a one-off campaign from Python"))
    assert len(blocks) == 2 and "sandbox=True" in blocks[0]
    namespace: dict[str, Any] = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    expected = [line for block in blocks for line in expected_output(block)]
    assert len(expected) == 4
    assert printed.getvalue().splitlines() == expected
    result = namespace["result"]
    assert result.campaign_name.startswith("Webinar follow-up 20")
    assert (tmp_path / "webinar.results.csv").exists()


def test_a_run_result_carries_everything_the_summary_needs(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "contacts.csv", tmp_path / "contacts.csv")
    result = loader.load_campaign(
        tmp_path / "contacts.csv", agent_id="demo-agent", sandbox=True, default_region="IN", no_progress=True
    )
    assert result.counts == {"scheduled": 22, "invalid": 2, "duplicate": 1}
    assert list(result.counts) == ["scheduled", "invalid", "duplicate"]
    assert result.results_path == tmp_path / "contacts.results.csv"
    assert result.campaign_id == result.batch_id and re.fullmatch(r"[0-9a-f]{24}", result.batch_id or "")
    assert result.campaign_name is not None and result.campaign_name.startswith("contacts ")
    assert set(result.durations) >= {"validate_seconds", "send_seconds", "total_seconds"}
    assert result.started_at is not None and result.finished_at is not None
    assert result.started_at <= result.finished_at
    assert list(result.outcomes.columns) == ["callkaro_status", "callkaro_call_id", "callkaro_message"]
    assert result.outcomes.index.name == "source_row"  # the row number a person sees in the sheet
    assert result.outcomes.loc[16, "callkaro_status"] == "invalid"
    assert result.exit_code == 1
    summary = result.summary()
    assert summary["counts"] == result.counts and summary["campaign_id"] == result.batch_id


def test_an_unknown_keyword_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(loader.UsageError, match="unknown option 'defualt_region'"):
        loader.load_campaign(tmp_path / "x.csv", agent_id="a", defualt_region="IN")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with sandbox_process() as running:
        yield running


def test_the_same_load_from_python_and_from_the_cli_sends_identical_calls(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    shutil.copy(SAMPLES / "contacts.xlsx", tmp_path / "contacts.xlsx")
    (tmp_path / "dnc.txt").write_text("98201 77889\n", encoding="utf-8")
    flags = [
        "--suppress",
        "dnc.txt",
        "--min-trigger-time",
        "10:00",
        "--max-trigger-time",
        "19:00",
        "--priority",
        "3",
        "--no-history",  # the same people twice on purpose: the ledger would rightly skip them
    ]
    cli = run_loader(tmp_path, "contacts.xlsx", *flags, sandbox=sandbox, output="cli.csv")
    assert cli.code == 1

    calls_before = len(sandbox.calls())
    result = loader.load_campaign(
        tmp_path / "contacts.xlsx",
        agent_id="demo-agent",
        default_region="IN",
        timezone="Asia/Kolkata",
        suppress=[tmp_path / "dnc.txt"],
        min_trigger_time="10:00",
        max_trigger_time="19:00",
        priority=3,
        no_history=True,
        output=tmp_path / "library.csv",
        base_url=sandbox.url,
        api_key="sandbox-key",
        no_progress=True,
    )
    from_python = sandbox.calls()[calls_before:]

    def bodies(calls: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {
            c["body"]["to_number"]: {k: v for k, v in c["body"].items() if k != "batch_id"} for c in calls
        }

    assert len(from_python) == len(cli.new_calls) == 21
    assert bodies(from_python) == bodies(cli.new_calls)
    assert result.counts == cli.counts()
    names = {c["batch_id"]: c["name"] for c in sandbox.campaigns()}
    assert names[result.batch_id] == names[cli.batch_id]


def test_a_library_run_sends_to_the_base_url_in_the_environment_as_the_cli_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(SAMPLES / "contacts.csv", tmp_path / "contacts.csv")
    monkeypatch.setenv("CALLKARO_BASE_URL", "https://staging.callkaro.test")
    hosts = []

    def refuse(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return httpx.Response(401, json={"detail": "wrong key"})

    result = loader.load_campaign(
        tmp_path / "contacts.csv",
        agent_id="a1",
        api_key="staging-key",
        default_region="IN",
        transport=httpx.MockTransport(refuse),
        no_progress=True,
    )
    assert hosts == ["staging.callkaro.test"]
    assert isinstance(result.refused, loader.AuthError)


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"concurrency": "8"}, "option concurrency must be a whole number, not '8'"),
        ({"rate_limit": "5"}, "option rate_limit must be a number, not '5'"),
        (
            {"retry_for": 30},
            'option retry_for must be a duration in quotes, e.g. "30m", "90s" or "2h", not 30',
        ),
        ({"header_row": "2"}, "option header_row must be a whole number, not '2'"),
        ({"default_region": 91}, "option default_region must be text, not 91"),
        ({"fresh": "false"}, "option fresh must be True or False, not 'false'"),
        ({"dry_run": 1}, "option dry_run must be True or False, not 1"),
        ({"options": {"default_region": "IN"}}, "options= must be loader.options.RunOptions, not dict"),
    ],
)
def test_a_keyword_of_the_wrong_type_is_refused_by_name_before_anything_is_read(
    tmp_path: Path, keywords: dict[str, Any], message: str
) -> None:
    with pytest.raises(loader.UsageError) as refused:
        loader.load_campaign(tmp_path / "not-read.csv", agent_id="a", sandbox=True, **keywords)
    assert str(refused.value) == message


class InterruptAfterFirstCall:
    """Events that press Ctrl-C (as a notebook's "interrupt kernel" does) once the first call is made."""

    def outcome(
        self, source_row: int, status: str, *, call_id: str | None, message: str | None, attempts: int
    ) -> None:
        if status == "scheduled" and call_id is not None and not hasattr(self, "pressed"):
            self.pressed = True
            os.kill(os.getpid(), signal.SIGINT)

    def retry(self, source_row: int, *, attempt: int, delay: float, reason: str) -> None:
        pass


def test_interrupting_a_run_inside_a_notebooks_event_loop_stops_the_calls(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "contacts.csv", tmp_path / "contacts.csv")

    async def notebook_cell() -> None:
        loader.load_campaign(
            tmp_path / "contacts.csv",
            agent_id="demo-agent",
            sandbox=True,
            sandbox_faults=Faults(latency_ms=200),
            concurrency=1,
            default_region="IN",
            events=InterruptAfterFirstCall(),
            no_progress=True,
        )

    # A notebook's loop leaves SIGINT to Python's own handler (asyncio.run would take it over).
    loop = asyncio.new_event_loop()
    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(notebook_cell())
    loop.close()
    status = loader.read_status(tmp_path / "contacts.results.csv")
    assert status.counts["pending"] >= 15 and status.counts.get("scheduled", 0) < 5


def test_gap_given_as_a_python_list_is_several_gaps_as_in_a_config_file(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "contacts.csv", tmp_path / "contacts.csv")
    as_list = loader.validate_file(tmp_path / "contacts.csv", default_region="IN", gap=[30, 120])
    as_text = loader.validate_file(tmp_path / "contacts.csv", default_region="IN", gap="30,120")
    assert as_list.counts == as_text.counts == {"valid": 22, "invalid": 2, "duplicate": 1}


@pytest.mark.parametrize("spark_ip", [None, "10.0.0.5"])
def test_checking_a_sheet_leaves_the_callers_environment_as_it_was(
    tmp_path: Path, spark_ip: str | None
) -> None:
    # pandera sets SPARK_LOCAL_IP and PYARROW_IGNORE_TIMEZONE when imported; a notebook's Spark
    # session started afterwards would bind to 127.0.0.1. A fresh interpreter, as a notebook is.
    script = (
        "import json, os, sys\n"
        "before = dict(os.environ)\n"
        "import loader\n"
        "loader.validate_file(sys.argv[1], default_region='IN')\n"
        "print(json.dumps({k: v for k, v in os.environ.items() if before.get(k) != v}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_LOCAL_IP", "PYARROW_IGNORE_TIMEZONE")}
    if spark_ip is not None:
        env["SPARK_LOCAL_IP"] = spark_ip
    done = subprocess.run(
        [sys.executable, "-c", script, str(SAMPLES / "contacts.csv")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "{}"
