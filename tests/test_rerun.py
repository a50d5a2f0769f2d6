"""Fix the sheet, run again: nobody is called twice (issue 13, problem 1).

Each test runs the installed command against the sandbox served as its own process on a
loopback port, and counts what really arrived there (``GET /_sandbox/calls``) per number.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sandbox_process import CLI, running_sandbox

from loader.state import TEST_NOW_VAR

COMMON = ["--agent-id", "demo-agent", "--default-region", "IN", "--timezone", "Asia/Kolkata", "--no-progress"]


@dataclass
class Api:
    url: str

    def calls(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/_sandbox/calls", timeout=10).json())

    def per_number(self) -> Counter[str]:
        return Counter(call["body"]["to_number"] for call in self.calls())

    def campaigns(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/_sandbox/campaigns", timeout=10).json())


@pytest.fixture
def api() -> Iterator[Api]:
    with running_sandbox() as server:
        yield Api(server.url)


@dataclass
class Run:
    code: int
    out: str
    err: str
    results: list[dict[str, str]]
    sent: Counter[str]

    def by_name(self) -> dict[str, dict[str, str]]:
        return {r["name"]: r for r in self.results}

    def status(self) -> dict[str, str]:
        return {r["name"]: r["callkaro_status"] for r in self.results}


def write_sheet(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "phone", "city"])
        writer.writerows(rows)
    return path


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def run(
    folder: Path, api: Api, sheet: str, *options: str, output: str | None = None, now: str | None = None
) -> Run:
    """The command in ``folder``, by the real clock, or from ``now`` (an ISO instant) when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLKARO_")}
    env["CALLKARO_API_KEY"] = "sandbox-key"
    if now is not None:
        env[TEST_NOW_VAR] = now
    argv = [CLI, "run", sheet, *COMMON, "--base-url", api.url, *options]
    if output is not None:
        argv += ["--output", output]
    before = api.per_number()
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    results_path = folder / (output or f"{Path(sheet).stem}.results.csv")
    results = read_results(results_path) if results_path.exists() else []
    return Run(done.returncode, done.stdout, done.stderr, results, api.per_number() - before)


A, B, C, D, E, F, G, H = (f"+9198000000{n:02d}" for n in range(1, 9))


def local(number: str) -> str:
    """As a rep types it: ``98000 00001``."""
    return f"{number[3:8]} {number[8:]}"


def test_fix_the_sheet_then_run_again_then_a_new_output_into_the_campaign_calls_everyone_once(
    tmp_path: Path, api: Api
) -> None:
    ledger = ["--history", "calls.sqlite"]
    write_sheet(
        tmp_path / "leads.csv",
        [
            ["Asha", local(A), "Pune"],
            ["Bala", "12345", "Delhi"],  # invalid: fixed below
            ["Chitra", local(C), "Goa"],
            ["Dev", local(D), "Agra"],  # deleted below
            ["Esha", "98000 0000", "Kochi"],  # invalid (too short): fixed below
            ["Farid", local(F), "Surat"],
        ],
    )
    first = run(tmp_path, api, "leads.csv", *ledger)
    assert first.code == 1, first.err
    assert first.status() == {
        "Asha": "scheduled",
        "Bala": "invalid",
        "Chitra": "scheduled",
        "Dev": "scheduled",
        "Esha": "invalid",
        "Farid": "scheduled",
    }
    assert first.sent == {A: 1, C: 1, D: 1, F: 1}
    earlier_ids = {
        name: row["callkaro_call_id"] for name, row in first.by_name().items() if row["callkaro_call_id"]
    }

    # The rep fixes two cells, moves Farid to the top, deletes Dev, adds Gita, edits Chitra's city.
    write_sheet(
        tmp_path / "leads.csv",
        [
            ["Farid", local(F), "Surat"],
            ["Asha", local(A), "Pune"],
            ["Bala", local(B), "Delhi"],
            ["Gita", local(G), "Mysuru"],
            ["Chitra", local(C), "Panaji"],
            ["Esha", local(E), "Kochi"],
        ],
    )
    second = run(tmp_path, api, "leads.csv", *ledger)
    assert (second.code, second.err) == (0, ""), second.err
    assert second.sent == {B: 1, G: 1, E: 1}
    rows = second.by_name()
    assert set(second.status().values()) == {"scheduled"}
    for name in ("Farid", "Asha", "Chitra"):
        assert rows[name]["callkaro_call_id"] == earlier_ids[name]
        assert rows[name]["callkaro_message"].startswith("scheduled by an earlier run on "), rows[name]
        assert rows[name]["callkaro_message"].endswith("; not sent again")
    for name in ("Bala", "Gita", "Esha"):
        assert rows[name]["callkaro_message"] == ""
    assert "scheduled by this run 3, by earlier runs 3" in second.out.splitlines()
    campaign = {c["batch_id"] for c in api.campaigns()}
    assert len(campaign) == 1
    (batch_id,) = campaign

    # Another file, a new --output, the same campaign: only Hari is new.
    write_sheet(
        tmp_path / "leads-v3.csv",
        [
            *([name, local(number), "x"] for name, number in [("Asha", A), ("Bala", B), ("Dev", D)]),
            ["Hari", local(H), "x"],
        ],
    )
    third = run(tmp_path, api, "leads-v3.csv", *ledger, "--batch-id", batch_id, output="other.results.csv")
    assert (third.code, third.err) == (0, ""), third.err
    assert third.sent == {H: 1}
    assert {r["name"]: r["callkaro_call_id"] for r in third.results if r["name"] != "Hari"} == {
        "Asha": earlier_ids["Asha"],
        "Bala": second.by_name()["Bala"]["callkaro_call_id"],
        "Dev": earlier_ids["Dev"],
    }

    # The first output pointed at that other file: Hari was called into this campaign already.
    fourth = run(tmp_path, api, "leads-v3.csv", *ledger, output="leads.results.csv")
    assert (fourth.code, fourth.err) == (0, ""), fourth.err
    assert fourth.sent == {}
    assert fourth.by_name()["Hari"]["callkaro_call_id"] == third.by_name()["Hari"]["callkaro_call_id"]

    assert api.per_number() == dict.fromkeys([A, B, C, D, E, F, G, H], 1)
    assert {c["batch_id"] for c in api.calls()} == {batch_id}
    # The ledger holds each call once, with its campaign, however many outputs reported it.
    with contextlib.closing(sqlite3.connect(tmp_path / "calls.sqlite")) as db:
        entries = db.execute("SELECT number, status, batch_id, call_id FROM calls").fetchall()
    assert sorted(entries) == sorted(
        (c["body"]["to_number"], "scheduled", batch_id, c["call_id"]) for c in api.calls()
    )


def test_summary_json_counts_calls_by_this_run_and_by_earlier_runs(tmp_path: Path, api: Api) -> None:
    write_sheet(tmp_path / "leads.csv", [["Asha", local(A), "Pune"], ["Bala", "12345", "Delhi"]])
    assert run(tmp_path, api, "leads.csv").code == 1
    write_sheet(tmp_path / "leads.csv", [["Bala", local(B), "Delhi"], ["Asha", local(A), "Pune"]])
    again = run(tmp_path, api, "leads.csv", "--summary-json", "s.json")
    assert again.code == 0 and again.sent == {B: 1}
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["calls"] == {"this_run": 1, "earlier_runs": 1}


def test_with_allow_duplicates_a_number_is_called_once_per_row_holding_it_never_more(
    tmp_path: Path, api: Api
) -> None:
    dup = ["--allow-duplicates"]
    write_sheet(tmp_path / "leads.csv", [["Asha", local(A), "Pune"], ["Asha's office", local(A), "Pune"]])
    first = run(tmp_path, api, "leads.csv", *dup)
    assert first.code == 0 and first.sent == {A: 2}
    ids = {r["name"]: r["callkaro_call_id"] for r in first.results}

    # Moved, one of them edited, and a row with another number in between: nobody new holds A.
    write_sheet(
        tmp_path / "leads.csv",
        [["Asha's office", local(A), "Pune"], ["Bala", local(B), "Delhi"], ["Asha", local(A), "Mumbai"]],
    )
    second = run(tmp_path, api, "leads.csv", *dup)
    assert second.code == 0 and second.sent == {B: 1}
    assert second.by_name()["Asha's office"]["callkaro_call_id"] == ids["Asha's office"]
    assert second.by_name()["Asha"]["callkaro_call_id"] == ids["Asha"]

    # A third row holding A: one more call, and only one, however often it is run.
    write_sheet(
        tmp_path / "leads.csv",
        [["Asha's office", local(A), "Pune"], ["Bala", local(B), "Delhi"], ["Asha", local(A), "Mumbai"],
         ["Asha again", local(A), "Pune"]],
    )  # fmt: skip
    assert run(tmp_path, api, "leads.csv", *dup).sent == {A: 1}
    assert run(tmp_path, api, "leads.csv", *dup).sent == {}
    assert api.per_number() == {A: 3, B: 1}


def test_uncertain_numbers_stay_uncertain_after_an_edit_unless_retry_uncertain(
    tmp_path: Path, api: Api
) -> None:
    write_sheet(tmp_path / "leads.csv", [["Asha", local(A), "Pune"], ["Bala", local(B), "Delhi"]])
    assert run(tmp_path, api, "leads.csv").code == 0
    # As if Asha's request had gone out and its answer been lost.
    with sqlite3.connect(tmp_path / "leads.results.csv.state") as db:
        db.execute("UPDATE rows SET status = 'sending' WHERE number = ?", (A,))
    write_sheet(tmp_path / "leads.csv", [["Chitra", local(C), "Goa"], ["Asha", local(A), "Pune"]])
    again = run(tmp_path, api, "leads.csv")
    assert again.code == 1 and again.sent == {C: 1}
    assert again.status() == {"Chitra": "scheduled", "Asha": "uncertain"}
    retried = run(tmp_path, api, "leads.csv", "--retry-uncertain")
    assert retried.sent == {A: 1} and retried.status() == {"Chitra": "scheduled", "Asha": "scheduled"}


def test_fresh_says_how_many_people_it_will_call_again(tmp_path: Path, api: Api) -> None:
    write_sheet(tmp_path / "leads.csv", [["Asha", local(A), "Pune"], ["Bala", local(B), "Delhi"]])
    assert run(tmp_path, api, "leads.csv").code == 0
    write_sheet(
        tmp_path / "leads.csv",
        [["Asha", local(A), "Pune"], ["Bala", local(B), "Delhi"], ["Chitra", local(C), "Goa"]],
    )
    # The ledger (on by default) still knows today's calls: starting over calls nobody again.
    fresh = run(tmp_path, api, "leads.csv", "--fresh")
    assert fresh.code == 0 and fresh.sent == {C: 1}
    assert fresh.status() == {"Asha": "suppressed", "Bala": "suppressed", "Chitra": "scheduled"}
    assert fresh.err == (
        "callkaro-loader: --fresh: starting leads.results.csv over in a new campaign; "
        "0 people it already called will be called again\n"
    )
    # With the ledger's window off, all three are called again, and the count says so: Asha and
    # Bala were called by the campaign the first --fresh forgot, which only the ledger remembers.
    again = run(tmp_path, api, "leads.csv", "--fresh", "--skip-recent", "0")
    assert again.code == 0 and again.sent == {A: 1, B: 1, C: 1}
    assert again.err == (
        "callkaro-loader: --fresh: starting leads.results.csv over in a new campaign; "
        "3 people it already called will be called again\n"
    )


def test_a_renamed_sheet_run_again_after_the_window_still_calls_nobody_it_skipped(
    tmp_path: Path, api: Api
) -> None:
    write_sheet(tmp_path / "leads.csv", [["Asha", local(A), "Pune"], ["Bala", local(B), "Delhi"]])
    assert run(tmp_path, api, "leads.csv").sent == {A: 1, B: 1}
    # Saved under a new name and run the same day: the ledger skips both ...
    write_sheet(tmp_path / "leads-v2.csv", [["Asha", local(A), "Pune"], ["Bala", local(B), "Delhi"]])
    renamed = run(tmp_path, api, "leads-v2.csv")
    assert renamed.sent == {} and set(renamed.status().values()) == {"suppressed"}
    # ... and the rep, two days later, adds a lead and runs exactly the same command again.
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    write_sheet(
        tmp_path / "leads-v2.csv",
        [["Asha", local(A), "Pune"], ["Bala", local(B), "Delhi"], ["Chitra", local(C), "Goa"]],
    )
    again = run(tmp_path, api, "leads-v2.csv", now=later)
    assert (again.code, again.sent) == (0, {C: 1}), again.err
    assert again.status() == {"Asha": "suppressed", "Bala": "suppressed", "Chitra": "scheduled"}
    assert again.by_name()["Asha"]["callkaro_message"] == renamed.by_name()["Asha"]["callkaro_message"]
    # What the message offers still works: --skip-recent 0 calls them.
    assert run(tmp_path, api, "leads-v2.csv", "--skip-recent", "0", now=later).sent == {A: 1, B: 1}


def test_a_state_written_before_campaigns_kept_numbers_is_brought_up_to_date_or_refused(
    tmp_path: Path, api: Api
) -> None:
    sheet = write_sheet(tmp_path / "leads.csv", [["Asha", local(A), "Pune"], ["Bala", local(B), "Delhi"]])
    assert run(tmp_path, api, "leads.csv").code == 0
    state = tmp_path / "leads.results.csv.state"
    _make_old_schema(state, sheet)

    # The input it was written for: read with that input's numbers, nobody called again.
    same = run(tmp_path, api, "leads.csv")
    assert (same.code, same.sent) == (0, {})
    assert same.status() == {"Asha": "scheduled", "Bala": "scheduled"}

    _make_old_schema(state, sheet)
    write_sheet(tmp_path / "leads.csv", [["Bala", local(B), "Delhi"], ["Asha", local(A), "Pune"]])
    edited = run(tmp_path, api, "leads.csv")
    assert (edited.code, edited.sent) == (2, {})
    lines = edited.err.splitlines()
    assert lines[0] == (
        "callkaro-loader: error: leads.results.csv.state was written by an older callkaro-loader, which "
        "kept rows by their position in the sheet, and leads.csv is not the sheet its 2 calls were made from"
    )
    assert lines[1:] == [
        "hint: Run the same command once with that sheet as it was (leads.csv; leads.results.csv lists its "
        "rows) to bring the state up to date, then run this one; a new --output or --fresh would call those "
        "2 people again."
    ]


def _make_old_schema(state: Path, sheet: Path) -> None:
    """Turn ``state`` into what callkaro-loader wrote before this change (schema 1, rows by position)."""
    import hashlib

    with contextlib.closing(sqlite3.connect(state, isolation_level=None)) as db:
        db.execute(
            "CREATE TABLE old_rows (source_row INTEGER PRIMARY KEY, status TEXT NOT NULL,"
            " attempts INTEGER NOT NULL DEFAULT 0, call_id TEXT, message TEXT, updated_at TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO old_rows SELECT source_row, status, attempts, call_id, message, updated_at FROM rows"
            " WHERE source_row IS NOT NULL"
        )
        db.execute("DROP TABLE rows")
        db.execute("ALTER TABLE old_rows RENAME TO rows")
        db.execute("UPDATE run SET value = '1' WHERE key = 'schema_version'")
        digest = hashlib.sha256(sheet.read_bytes()).hexdigest()
        db.execute("INSERT OR REPLACE INTO run VALUES ('fingerprint', ?)", (digest,))
