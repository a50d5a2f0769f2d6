"""What cron and the people watching it get: --summary-json, --log-file, the progress bar and ``status``."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

import loader
from loader.cli import main
from loader.progress import make_progress
from loader.sandbox import Faults, Sandbox, SandboxTransport
from loader.send import RetryPolicy

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data"
KEY = "ck_live_5ecret5ecret5ecret"
RUN = [
    "run",
    "contacts.csv",
    "--agent-id",
    "demo-agent",
    "--sandbox",
    "--default-region",
    "IN",
    "--no-progress",
]


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(SAMPLES / "contacts.csv", tmp_path / "contacts.csv")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALLKARO_API_KEY", raising=False)
    monkeypatch.delenv("CALLKARO_BASE_URL", raising=False)
    return tmp_path


def results(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- --summary-json -----------------------------------------------------------------------------


def test_summary_json_is_valid_json_matching_the_results_files_counts(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *RUN, "--summary-json", "summary.json")
    assert (code, err) == (1, "")
    summary = json.loads((here / "summary.json").read_text(encoding="utf-8"))
    assert summary["counts"] == dict(
        Counter(r["callkaro_status"] for r in results(here / "contacts.results.csv"))
    )
    assert summary["counts"] == {"scheduled": 22, "invalid": 2, "duplicate": 1}
    assert summary["total_rows"] == 25
    assert summary["results_path"] == "contacts.results.csv"
    assert summary["input"] == "contacts.csv"
    assert f"campaign: {summary['campaign_id']}" in out.splitlines()
    assert summary["exit_code"] == code
    assert summary["started_at"] <= summary["finished_at"]
    assert set(summary["durations"]) >= {"validate_seconds", "send_seconds", "total_seconds"}
    assert (summary["dry_run"], summary["stopped"], summary["refused"]) == (False, False, None)
    assert [p.name for p in here.iterdir() if p.name.startswith(".summary")] == []  # no temporary left


def test_a_run_refused_for_its_input_still_writes_a_summary_saying_so(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "summary.json").write_text('{"counts": {"scheduled": 5}, "exit_code": 0}', encoding="utf-8")
    code, out, err = run(capsys, *RUN, "--summary-json", "summary.json", "--suppress", "missing.txt")
    assert code == 2
    summary = json.loads((here / "summary.json").read_text(encoding="utf-8"))
    assert summary["exit_code"] == 2 and summary["counts"] == {}
    assert summary["error"] == "missing.txt: no such file (given as a do-not-call list with --suppress)"


@pytest.mark.parametrize(
    ("flags", "config", "error"),
    [
        (["--concurrency", "0"], "", "--concurrency must be 1 or more, not 0"),
        (
            [],
            "no_history = true\nskip_recent = 7\n",
            "--skip-recent needs the call ledger, which --no-history turns off",
        ),
    ],
    ids=["flag", "config-file"],
)
def test_a_run_refused_for_its_options_still_writes_a_summary_saying_so(
    here: Path, capsys: pytest.CaptureFixture[str], flags: list[str], config: str, error: str
) -> None:
    # Last night's success must not stay in the file cron's monitoring reads.
    (here / "summary.json").write_text('{"counts": {"scheduled": 5}, "exit_code": 0}', encoding="utf-8")
    (here / "nightly.toml").write_text('summary_json = "summary.json"\n' + config, encoding="utf-8")
    code, out, err = run(capsys, *RUN, *flags, "--config", "nightly.toml")
    assert code == 2 and err.startswith(f"callkaro-loader: error: {error}\n")
    summary = json.loads((here / "summary.json").read_text(encoding="utf-8"))
    assert (summary["exit_code"], summary["counts"], summary["error"]) == (2, {}, error)
    assert summary["input"] == "contacts.csv"


def test_a_dry_run_summary_counts_valid_rows(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *RUN, "--dry-run", "--summary-json", "s.json")
    summary = json.loads((here / "s.json").read_text(encoding="utf-8"))
    assert summary["counts"] == {"valid": 22, "invalid": 2, "duplicate": 1}
    assert summary["dry_run"] is True and summary["campaign_id"] is None


# --- --log-file ---------------------------------------------------------------------------------


def test_log_file_ends_saying_the_api_refused_the_run_and_the_exit_code(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "contacts.csv", tmp_path / "contacts.csv")
    result = loader.load_campaign(
        tmp_path / "contacts.csv",
        agent_id="demo-agent",
        default_region="IN",
        log_file=tmp_path / "run.jsonl",
        api_key="not-the-key",
        transport=SandboxTransport(Sandbox(api_key=KEY, agents=["demo-agent"])),
        base_url="http://127.0.0.1",
        no_progress=True,
    )
    last = json.loads((tmp_path / "run.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert (last["event"], last["exit_code"], result.exit_code) == ("run_finished", 3, 3)
    assert last["refused"].startswith("the API refused the key") and "not-the-key" not in last["refused"]


@pytest.mark.parametrize("sheet", ["header only", "no such file"])
def test_a_run_that_fails_writes_its_error_as_the_log_files_last_line(tmp_path: Path, sheet: str) -> None:
    log = tmp_path / "run.jsonl"
    log.write_text('{"event": "run_finished", "counts": {"scheduled": 3}}\n', encoding="utf-8")  # last night
    path = tmp_path / "leads.csv"
    if sheet == "header only":
        path.write_text("Name,Phone\n", encoding="utf-8")
    code = main(["run", str(path), "--agent-id", "demo-agent", "--sandbox", "--log-file", str(log)])
    assert code == 2
    last = json.loads(log.read_text(encoding="utf-8").splitlines()[-1])
    assert (last["event"], last["exit_code"], last["input"]) == ("run_failed", 2, str(path))
    assert last["error"].startswith(str(path))


def test_log_file_has_a_json_line_per_row_outcome_and_per_retry_and_never_the_key(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "contacts.csv", tmp_path / "contacts.csv")
    flaky = Sandbox(api_key=KEY, agents=["demo-agent"], faults=Faults(error_rate=0.3, seed=11))
    result = loader.load_campaign(
        tmp_path / "contacts.csv",
        agent_id="demo-agent",
        default_region="IN",
        log_file=tmp_path / "run.jsonl",
        summary_json=tmp_path / "summary.json",
        api_key=KEY,
        transport=SandboxTransport(flaky),
        base_url="http://127.0.0.1",
        retry=RetryPolicy(attempts=8, base_delay=0.001, max_delay=0.002),
        no_progress=True,
    )
    text = (tmp_path / "run.jsonl").read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["event"] == "run_started" and lines[-1]["event"] == "run_finished"
    assert lines[-1]["counts"] == result.counts
    assert (lines[-1]["exit_code"], lines[-1]["stopped"], lines[-1]["refused"]) == (
        result.exit_code,
        False,
        None,
    )
    assert all(set(line) >= {"time", "event"} for line in lines)

    outcomes = [line for line in lines if line["event"] == "outcome"]
    row_fields = {"time", "event", "source_row", "status", "call_id", "attempt", "message"}
    assert all(set(line) == row_fields for line in outcomes)
    rows = {int(r["source_row"]): r for r in results(tmp_path / "contacts.results.csv")}
    assert sorted(line["source_row"] for line in outcomes) == sorted(rows)  # one line per row
    for line in outcomes:
        row = rows[line["source_row"]]
        assert (line["status"], line["call_id"] or "") == (row["callkaro_status"], row["callkaro_call_id"])

    retries = [line for line in lines if line["event"] == "retry"]
    assert retries, "the flaky sandbox should have caused retries"
    assert all(line["message"].startswith("HTTP 500") and line["attempt"] >= 1 for line in retries)
    attempts = {line["source_row"]: line["attempt"] for line in outcomes}
    for line in retries:
        assert (
            attempts[line["source_row"]] > line["attempt"]
            or rows[line["source_row"]]["callkaro_status"] == "failed"
        )

    for written in (tmp_path / "run.jsonl", tmp_path / "summary.json", tmp_path / "contacts.results.csv"):
        assert KEY not in written.read_text(encoding="utf-8")


def test_log_file_says_why_each_row_is_pending_when_the_campaign_could_not_be_created(
    tmp_path: Path,
) -> None:
    shutil.copy(SAMPLES / "contacts.csv", tmp_path / "contacts.csv")
    down = Sandbox(api_key=KEY, agents=["demo-agent"], faults=Faults(error_rate=1.0, seed=1))
    result = loader.load_campaign(
        tmp_path / "contacts.csv",
        agent_id="demo-agent",
        default_region="IN",
        log_file=tmp_path / "run.jsonl",
        api_key=KEY,
        transport=SandboxTransport(down),
        base_url="http://127.0.0.1",
        retry=RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.002),
        no_progress=True,
    )
    assert result.counts["pending"] == 22
    assert result.exit_code == 4
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text(encoding="utf-8").splitlines()]
    outcomes = [line for line in lines if line["event"] == "outcome"]
    rows = results(tmp_path / "contacts.results.csv")
    assert sorted(line["source_row"] for line in outcomes) == sorted(int(r["source_row"]) for r in rows)
    pending = [line for line in outcomes if line["status"] == "pending"]
    assert len(pending) == 22
    assert all(
        line["message"].startswith("the API was unavailable (the campaign could not be created: HTTP 500")
        and line["attempt"] == 0
        for line in pending
    )


def test_a_key_echoed_by_the_server_is_redacted_in_the_log(tmp_path: Path) -> None:
    from loader.monitoring import JsonLinesLog
    from loader.secrets import ApiKey

    log = JsonLinesLog(tmp_path / "log.jsonl", api_key=ApiKey(KEY))
    log.outcome(2, "failed", call_id=None, message=f"HTTP 400: bad key {KEY}", attempts=1)
    log.close()
    assert KEY not in (tmp_path / "log.jsonl").read_text(encoding="utf-8")


# --- the progress bar ---------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_scheduled_and_failed_counts_and_an_eta() -> None:
    screen = Terminal()
    bar = make_progress(4, enabled=True, stream=screen)
    for status in ("scheduled", "failed", "scheduled"):
        bar.advance(status)
    bar._bar.refresh()  # type: ignore[union-attr]
    shown = screen.getvalue().split("\r")
    assert "scheduled=0, failed=0" in shown[1] and "ETA ?" in shown[1]
    assert "3/4" in shown[-1] and "scheduled=2, failed=1" in shown[-1] and "ETA 00:" in shown[-1]
    bar.close()


def test_no_bar_under_cron_or_quiet() -> None:
    assert type(make_progress(4, enabled=True, stream=io.StringIO())).__name__ == "NoProgress"
    assert type(make_progress(4, enabled=False, stream=Terminal())).__name__ == "NoProgress"


# --- status -------------------------------------------------------------------------------------


def test_status_prints_the_campaign_counts_input_and_last_activity_of_a_finished_run(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *RUN)
    batch = next(line.split()[1] for line in out.splitlines() if line.startswith("campaign: "))
    state = here / "contacts.results.csv.state"
    before = state.read_bytes()

    code, out, err = run(capsys, "status", "contacts.results.csv")
    assert (code, err) == (1, "")  # the sample's two invalid rows need a person
    lines = out.splitlines()
    assert lines[0].startswith(f"campaign: {batch} (contacts 20")
    assert lines[1] == "input: contacts.csv"
    assert lines[2].startswith("last activity: 20") and lines[3].startswith("run: finished at 20")
    assert lines[4:-1] == ["scheduled  22", "invalid    2", "duplicate  1", "results: contacts.results.csv"]
    assert lines[-1] == "ledger: none (--no-history, or the built-in --sandbox)"
    assert state.read_bytes() == before


def test_status_of_a_run_that_was_cut_off_counts_what_it_recorded(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, *RUN)
    with sqlite3.connect(here / "contacts.results.csv.state") as db:  # as if killed mid-run
        db.execute("DELETE FROM run WHERE key = 'summary'")
        db.execute("UPDATE rows SET status = 'sending' WHERE source_row = 2")
        db.execute("UPDATE rows SET status = 'pending' WHERE source_row IN (3, 4)")
    code, out, err = run(capsys, "status", "contacts.results.csv")
    assert code == 1
    lines = out.splitlines()
    assert lines[3] == "run: running, or stopped while requests were in flight ('sending' rows)"
    assert lines[4:-2] == ["scheduled  19", "invalid    2", "duplicate  1", "pending    2", "sending    1"]


def test_status_of_a_run_stopped_by_ctrl_c_says_so_not_finished(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = asyncio.Event()
    stop.set()  # Ctrl-C before the first request
    result = loader.load_campaign(
        "contacts.csv", agent_id="demo-agent", sandbox=True, default_region="IN", no_progress=True, stop=stop
    )
    assert result.stopped
    code, out, err = run(capsys, "status", "contacts.results.csv")
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert lines[3].startswith("run: stopped at 20")
    assert lines[3].endswith(" before every row was sent; run the same command again to resume")
    assert lines[4:-1] == ["invalid    2", "duplicate  1", "pending    22", "results: contacts.results.csv"]


def test_status_of_a_run_the_api_refused_says_why(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = loader.load_campaign(
        "contacts.csv",
        agent_id="demo-agent",
        default_region="IN",
        no_progress=True,
        api_key="wrong-key",
        transport=SandboxTransport(Sandbox(api_key=KEY, agents=["demo-agent"])),
    )
    assert result.refused is not None
    code, out, err = run(capsys, "status", "contacts.results.csv")
    assert (code, err) == (1, "")
    line = out.splitlines()[3]
    assert line.startswith("run: refused by the API at 20")
    assert line.endswith(": the API refused the key (HTTP 401: Invalid API key)")
    assert "wrong-key" not in out


def test_status_without_a_state_exits_2_and_creates_nothing(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in here.iterdir())
    code, out, err = run(capsys, "status", "leads.results.csv")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "callkaro-loader: error: no run state for leads.results.csv: leads.results.csv.state does not exist",
        "hint: Give the results file of a run (its --output); its state sits beside it as <output>.state.",
    ]
    assert sorted(p.name for p in here.iterdir()) == before


def test_status_given_the_current_folder_exits_2_naming_what_to_give(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "status", ".")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "callkaro-loader: error: . is a folder, not the results file of a run",
        "hint: Give the results file of a run (its --output); its state sits beside it as <output>.state.",
    ]


def test_status_given_the_input_points_at_its_results_file(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, *RUN)
    code, out, err = run(capsys, "status", "contacts.csv")
    assert code == 2
    assert err.splitlines()[1] == (
        "hint: Did you mean contacts.results.csv? Give the results file (the run's --output), not the input."
    )
