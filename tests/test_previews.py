"""``validate`` and ``run --dry-run`` are exact previews of ``run`` (issue 13, problem 4).

For each combination of options below, on one night (one pinned clock), the installed command's
``validate`` and ``run --dry-run`` report the very counts that the real ``run`` which follows them
reports (``valid`` standing for ``scheduled``-by-this-run), against a sandbox on a real loopback
port; and neither preview changes a byte of the call ledger or the output's state, nor creates a
file beside them (the dry run's own ``.preview.csv`` aside).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import openpyxl
import pytest
from pinned_clock import RUNS_START, clean_env
from test_e2e import CLI, Sandbox, read_results, sandbox_process
from test_nightly import e164, lead_numbers, write_export

import loader
from loader.cli import main
from loader.history import History
from loader.options import DEFAULT_BASE_URL
from loader.state import TEST_NOW_VAR

REGION = ["--default-region", "IN", "--timezone", "Asia/Kolkata"]
RUN = ["--agent-id", "demo-agent", *REGION, "--no-progress"]
SUMMARY_LINE = re.compile(r"^([a-z]+) +([0-9]+)$")
LEADS = lead_numbers(300, 8)
#: Earlier nights run at RUNS_START; "tonight" is this much later (the same day unless a case says).
SAME_DAY = dt.timedelta(hours=2)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with sandbox_process() as running:
        yield running


def cli(folder: Path, sandbox: Sandbox, now: dt.datetime, *argv: str) -> subprocess.CompletedProcess[str]:
    """The installed command in ``folder``, its clock starting at ``now``, the API at ``sandbox``
    (``CALLKARO_BASE_URL``, as a cron job sets it: validate must judge the ledger by it too)."""
    env = clean_env()
    env.update(
        {TEST_NOW_VAR: now.isoformat(), "CALLKARO_API_KEY": "sandbox-key", "CALLKARO_BASE_URL": sandbox.url}
    )
    return subprocess.run([CLI, *argv], cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def printed_counts(done: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """The summary lines the command printed (``valid  5``), as counts."""
    found = (SUMMARY_LINE.match(line) for line in done.stdout.splitlines())
    return {m[1]: int(m[2]) for m in found if m}


def as_run_counts(counts: dict[str, int]) -> dict[str, int]:
    """A preview's counts as the run reports them: its ``valid`` rows are the ones the run schedules."""
    merged = Counter({k: v for k, v in counts.items() if k != "valid"})
    merged["scheduled"] += counts.get("valid", 0)
    return {k: v for k, v in merged.items() if v}


def snapshot(*folders: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folders`` (the dry run's own previews aside): its bytes and mtime."""
    files = [p for folder in folders if folder.exists() for p in sorted(folder.rglob("*")) if p.is_file()]
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in files if ".preview." not in p.name}


def first_run(folder: Path, sandbox: Sandbox, *argv: str) -> subprocess.CompletedProcess[str]:
    done = cli(folder, sandbox, RUNS_START, "run", *argv, *RUN)
    assert done.returncode in (0, 1), done.stderr
    return done


# --- the cases: what earlier nights did, then tonight's input and options -------------------------


@dataclass(frozen=True)
class Tonight:
    input: str
    options: tuple[str, ...]
    #: What the real run reports: pins what each case is about.
    expected: dict[str, int]
    later: dt.timedelta = SAME_DAY


Case = Callable[[Path, Sandbox], Tonight]


def default_ledger_case(folder: Path, sandbox: Sandbox) -> Tonight:
    # The sheet run this morning is saved under a new name with two more leads: the per-user ledger.
    write_export(folder / "leads.csv", LEADS[:5])
    first_run(folder, sandbox, "leads.csv")
    write_export(folder / "leads-copy.csv", LEADS[:7])
    return Tonight("leads-copy.csv", (), {"suppressed": 5, "scheduled": 2})


def history_skip_recent_case(folder: Path, sandbox: Sandbox) -> Tonight:
    nightly = ("--history", "ledger.sqlite", "--skip-recent", "7")
    write_export(folder / "export.csv", LEADS[:5])
    first_run(folder, sandbox, "export.csv", *nightly, "--output", "night1.csv")
    write_export(folder / "export.csv", LEADS[:7])
    return Tonight(
        "export.csv",
        (*nightly, "--output", "night2.csv"),
        {"suppressed": 5, "scheduled": 2},
        dt.timedelta(days=3),
    )


def skip_recent_all_case(folder: Path, sandbox: Sandbox) -> Tonight:
    # From a config file, with run-only keys that validate ignores.
    (folder / "nightly.toml").write_text(
        'agent_id = "demo-agent"\nconcurrency = 2\nhistory = "ledger.sqlite"\nskip_recent = "all"\n'
        'default_region = "IN"\n',
        encoding="utf-8",
    )
    write_export(folder / "export.csv", LEADS[:5])
    first_run(folder, sandbox, "export.csv", "--config", "nightly.toml", "--output", "night1.csv")
    write_export(folder / "export.csv", LEADS[:8])
    options = ("--config", "nightly.toml", "--output", "night2.csv")
    return Tonight("export.csv", options, {"suppressed": 5, "scheduled": 3}, dt.timedelta(days=40))


def no_history_case(folder: Path, sandbox: Sandbox) -> Tonight:
    write_export(folder / "leads.csv", LEADS[:4])
    first_run(folder, sandbox, "leads.csv")
    return Tonight("leads.csv", ("--no-history", "--output", "again.csv"), {"scheduled": 4})


def do_not_call_case(folder: Path, sandbox: Sandbox) -> Tonight:
    write_export(folder / "leads.csv", LEADS[:5])
    (folder / "dnc.txt").write_text(f"{LEADS[1]}\n{LEADS[3]}\n", encoding="utf-8")
    return Tonight("leads.csv", ("--suppress", "dnc.txt"), {"scheduled": 3, "suppressed": 2})


def edited_sheet_case(folder: Path, sandbox: Sandbox) -> Tonight:
    header = "Name,Mobile\n"
    (folder / "leads.csv").write_text(
        header + f"a,{LEADS[0]}\nb,{LEADS[1]}\nbad,12345\nc,{LEADS[2]}\nworse,99\n", encoding="utf-8"
    )
    first_run(folder, sandbox, "leads.csv")
    # Rows moved, one fixed, one inserted, one deleted: same command, same output.
    (folder / "leads.csv").write_text(
        header + f"c,{LEADS[2]}\na,{LEADS[0]}\nbad,{LEADS[5]}\nnew,{LEADS[6]}\nb,{LEADS[1]}\n",
        encoding="utf-8",
    )
    return Tonight("leads.csv", (), {"scheduled": 5})


def batch_id_case(folder: Path, sandbox: Sandbox) -> Tonight:
    write_export(folder / "leads.csv", LEADS[:4])
    done = first_run(folder, sandbox, "leads.csv", "--output", "a.csv")
    batch = re.search(r"^campaign: (\S+)$", done.stdout, re.MULTILINE)
    assert batch is not None, done.stdout
    write_export(folder / "more.csv", LEADS[:6])
    return Tonight("more.csv", ("--batch-id", batch[1], "--output", "b.csv"), {"scheduled": 6})


def hidden_rows_case(folder: Path, sandbox: Sandbox) -> Tonight:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Name", "Mobile"])
    for i, number in enumerate(LEADS[:5]):
        sheet.append([f"Lead {i}", number])
    sheet.row_dimensions[3].hidden = True
    book.save(folder / "leads.xlsx")
    return Tonight("leads.xlsx", (), {"scheduled": 4, "suppressed": 1})


def allow_duplicates_case(folder: Path, sandbox: Sandbox) -> Tonight:
    header = "Name,Mobile\n"
    (folder / "leads.csv").write_text(
        header + f"a,{LEADS[0]}\nb,{LEADS[0]}\nc,{LEADS[1]}\n", encoding="utf-8"
    )
    first_run(folder, sandbox, "leads.csv", "--allow-duplicates")
    (folder / "leads.csv").write_text(
        header + f"b,{LEADS[0]}\nnew,{LEADS[0]}\na,{LEADS[0]}\nc,{LEADS[1]}\nd,{LEADS[2]}\n", encoding="utf-8"
    )
    return Tonight("leads.csv", ("--allow-duplicates",), {"scheduled": 5})


def uncertain_case(folder: Path, sandbox: Sandbox) -> Tonight:
    # This morning's run was killed with two requests in flight (as kill -9 leaves its state):
    # the same command tonight reports them uncertain and does not send them again.
    write_export(folder / "leads.csv", LEADS[:2])
    first_run(folder, sandbox, "leads.csv")
    with contextlib.closing(sqlite3.connect(folder / "leads.results.csv.state")) as state, state:
        state.execute("UPDATE rows SET status = 'sending', call_id = NULL")
    write_export(folder / "leads.csv", LEADS[:3])
    return Tonight("leads.csv", (), {"uncertain": 2, "scheduled": 1})


CASES: dict[str, Case] = {
    "default ledger": default_ledger_case,
    "--history and --skip-recent 7": history_skip_recent_case,
    "skip_recent all in a config": skip_recent_all_case,
    "--no-history": no_history_case,
    "a do-not-call list": do_not_call_case,
    "an edited sheet into the same output": edited_sheet_case,
    "--batch-id with a new --output": batch_id_case,
    "hidden rows": hidden_rows_case,
    "--allow-duplicates": allow_duplicates_case,
    "uncertain rows of an earlier run": uncertain_case,
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_validate_and_dry_run_report_what_the_run_that_follows_does(
    case: Case, sandbox: Sandbox, tmp_path: Path
) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    tonight = case(folder, sandbox)
    now = RUNS_START + tonight.later
    watched = (folder, Path(os.environ["XDG_STATE_HOME"]))
    before = snapshot(*watched)

    validated = cli(folder, sandbox, now, "validate", tonight.input, *REGION, *tonight.options)
    dry = cli(folder, sandbox, now, "run", tonight.input, *RUN, *tonight.options, "--dry-run")
    after_previews = snapshot(*watched)
    previewed = (
        read_results(folder / dry.stdout.splitlines()[-1].removeprefix("results: ")) if dry.stdout else []
    )

    calls_before = len(sandbox.calls())
    real = cli(folder, sandbox, now, "run", tonight.input, *RUN, *tonight.options)
    new_calls = sandbox.calls()[calls_before:]

    assert printed_counts(real) == tonight.expected, real.stdout + real.stderr
    assert as_run_counts(printed_counts(validated)) == tonight.expected, validated.stdout + validated.stderr
    assert as_run_counts(printed_counts(dry)) == tonight.expected, dry.stdout + dry.stderr
    # The rows previewed as to be sent are exactly the calls that arrived, each number once.
    to_send = Counter(e164(r["Mobile"]) for r in previewed if r["callkaro_status"] == "valid")
    assert Counter(c["body"]["to_number"] for c in new_calls) == to_send
    # Rows an earlier run scheduled are shown with that call, as the run shows them.
    real_rows = read_results(folder / real.stdout.splitlines()[-1].removeprefix("results: "))
    earlier = {
        r["source_row"]: r["callkaro_call_id"] for r in previewed if r["callkaro_status"] == "scheduled"
    }
    assert earlier == {
        r["source_row"]: r["callkaro_call_id"] for r in real_rows if r["source_row"] in earlier
    }
    assert (validated.returncode, dry.returncode) == (real.returncode, real.returncode)
    assert after_previews == before, "a preview changed the ledger, the state or their folders"


def test_a_preview_reads_what_a_run_still_going_has_written_to_the_ledger(tmp_path: Path) -> None:
    """A ledger with a ``-wal`` file (a run going on, or killed) is read with it: its claims count."""
    write_export(tmp_path / "leads.csv", LEADS[:3])
    ledger = tmp_path / "ledger.sqlite"
    options = {"default_region": "IN", "history": ledger, "output": tmp_path / "out.csv"}
    with History(ledger, api=DEFAULT_BASE_URL) as running:
        running.claim([(2, e164(LEADS[0]))], run="other", batch_id="b1", input_name="x.csv", days=None)
        assert (tmp_path / "ledger.sqlite-wal").stat().st_size > 0
        # The -shm file is SQLite's shared index of the -wal, which every reader of a live ledger
        # marks by design; the ledger and its -wal keep every byte.
        before = {p: v for p, v in snapshot(tmp_path).items() if not p.endswith("-shm")}
        checked = loader.validate_file(tmp_path / "leads.csv", **options)
        assert {p: v for p, v in snapshot(tmp_path).items() if not p.endswith("-shm")} == before
    assert checked.counts == {"valid": 2, "suppressed": 1}


@pytest.mark.parametrize("command", ["validate", "run --dry-run", "run"])
def test_a_ledger_in_a_missing_folder_is_refused_by_the_previews_as_by_the_run(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_export(tmp_path / "leads.csv", LEADS[:2])
    name, *flags = command.split()
    run_only = ["--agent-id", "demo-agent", "--sandbox", *flags] if name == "run" else []
    code = main([name, "leads.csv", *REGION, "--history", "typo/ledger.sqlite", *run_only])
    assert (code, capsys.readouterr().err.splitlines()[0]) == (
        2,
        "callkaro-loader: error: --history typo/ledger.sqlite: folder typo does not exist",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leads.csv"]
