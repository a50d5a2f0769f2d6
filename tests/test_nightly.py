"""Nightly imports end to end: the installed command, a sandbox on a real port, one shared history.

Each night's run is a separate process, as cron starts it, and the sandbox is
one process for the whole scenario, so what "yesterday" scheduled is really
known to "today" only through ``--history``.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import phonenumbers
import pytest
from pinned_clock import clean_env, run_date
from test_e2e import CLI, COMMON, KOLKATA, Run, Sandbox, read_results, run_loader, sandbox_process

HEADER = "Name,Mobile,City,Lead Status\n"


def lead_numbers(start: int, count: int) -> list[str]:
    """``count`` distinct valid Indian mobile numbers, written as a CRM export writes them."""
    numbers = [f"+91 98{100 + start + i:03d} {10000 + 7 * (start + i):05d}" for i in range(count)]
    assert all(phonenumbers.is_valid_number(phonenumbers.parse(n)) for n in numbers)
    return numbers


def e164(number: str) -> str:
    return phonenumbers.format_number(phonenumbers.parse(number), phonenumbers.PhoneNumberFormat.E164)


def write_export(path: Path, numbers: list[str]) -> None:
    lines = [f"Lead {i},{n},Pune,New\n" for i, n in enumerate(numbers)]
    path.write_text(HEADER + "".join(lines), encoding="utf-8")


def summary(path: Path) -> dict[str, object]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with sandbox_process() as running:
        yield running


def test_day_two_dials_only_the_new_leads_not_on_the_do_not_call_list(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    old, new = lead_numbers(0, 100), lead_numbers(100, 20)
    nightly = ["--history", "ledger.sqlite", "--skip-recent", "7", "--suppress", "dnc.txt"]

    # Day 1: the export holds 100 leads and the do-not-call list is still empty.
    write_export(tmp_path / "export.csv", old)
    (tmp_path / "dnc.txt").write_text("# numbers that must never be called\n", encoding="utf-8")
    day1 = run_loader(
        tmp_path, "export.csv", *nightly, "--summary-json", "day1.json", sandbox=sandbox, output="day1.csv"
    )
    assert (day1.code, day1.err) == (0, "")
    assert day1.counts() == {"scheduled": 100}
    assert sorted(c["body"]["to_number"] for c in day1.new_calls) == sorted(map(e164, old))

    # Day 2: the same export file now holds those 100 plus 20 new leads, and 5 numbers were added to
    # the list: 3 already called yesterday, 2 of today's new leads.
    listed = [old[10], old[50], old[99], new[3], new[17]]
    write_export(tmp_path / "export.csv", old + new)
    with (tmp_path / "dnc.txt").open("a", encoding="utf-8") as handle:
        handle.write("".join(f"{n.replace('+91 ', '0')}\n" for n in listed))  # national form: 098...
    day2 = run_loader(
        tmp_path, "export.csv", *nightly, "--summary-json", "day2.json", sandbox=sandbox, output="day2.csv"
    )

    assert (day2.code, day2.err) == (0, "")
    expected = sorted(e164(n) for n in new if n not in listed)
    assert sorted(c["body"]["to_number"] for c in day2.new_calls) == expected
    assert len(expected) == 18
    assert day2.counts() == {"scheduled": 18, "suppressed": 102}
    assert [c["name"] for c in day2.new_campaigns] == [f"export {run_date(KOLKATA)}"]

    day1_campaign = day1.batch_id
    by_number = {r["Mobile"]: r for r in day2.results}
    for number in old + new:
        row = by_number[number]
        if number in listed:
            assert (row["callkaro_status"], row["callkaro_message"]) == (
                "suppressed",
                "on the do-not-call list dnc.txt",
            )
        elif number in old:
            assert row["callkaro_status"] == "suppressed"
            assert row["callkaro_message"].startswith("called on ")
            assert row["callkaro_message"].endswith(f" in campaign {day1_campaign}")
        else:
            assert (row["callkaro_status"], row["callkaro_message"]) == ("scheduled", "")
            assert row["callkaro_call_id"]

    report = summary(tmp_path / "day2.json")
    assert report["counts"] == day2.counts()
    assert report["campaign_id"] == day2.batch_id
    assert report["exit_code"] == 0

    # The ledger knows every number scheduled on either night, once, with its campaign and input.
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        entries = db.execute("SELECT number, status, batch_id, input FROM calls").fetchall()
    assert Counter(e[0] for e in entries) == Counter(map(e164, old + [n for n in new if n not in listed]))
    assert {e[1] for e in entries} == {"scheduled"}
    assert {e[2] for e in entries} == {day1.batch_id, day2.batch_id}
    assert {e[3] for e in entries} == {"export.csv"}

    # Running day 2 again (cron retried it) resumes: nothing new is dialled.
    again = run_loader(tmp_path, "export.csv", *nightly, sandbox=sandbox, output="day2.csv")
    assert (again.code, again.new_calls, again.counts()) == (0, [], day2.counts())


def test_without_skip_recent_the_history_records_but_skips_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    numbers = lead_numbers(300, 5)
    write_export(tmp_path / "export.csv", numbers)
    first = run_loader(tmp_path, "export.csv", "--history", "h.sqlite", sandbox=sandbox, output="a.csv")
    second = run_loader(tmp_path, "export.csv", "--history", "h.sqlite", sandbox=sandbox, output="b.csv")
    assert first.counts() == second.counts() == {"scheduled": 5}
    with sqlite3.connect(tmp_path / "h.sqlite") as db:
        (count,) = db.execute("SELECT count(*) FROM calls WHERE status = 'scheduled'").fetchone()
    assert count == 10


def test_two_runs_sharing_a_history_at_the_same_time_dial_each_number_once(tmp_path: Path) -> None:
    numbers = lead_numbers(400, 90)
    # Two exports that share 50 numbers, loaded at once into a slow API so that they really overlap.
    write_export(tmp_path / "north.csv", numbers[:70])
    write_export(tmp_path / "south.csv", list(reversed(numbers[20:])))
    env = clean_env()
    env["CALLKARO_API_KEY"] = "sandbox-key"
    with sandbox_process("--latency-ms", "15") as slow:
        argv = [*COMMON, "--history", "shared.sqlite", "--skip-recent", "7", "--base-url", slow.url]
        runs = [
            subprocess.Popen(
                [CLI, "run", f"{name}.csv", *argv, "--concurrency", "4"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in ("north", "south")
        ]
        for process in runs:
            out, err = process.communicate(timeout=120)
            assert (process.returncode, err) == (0, ""), out
        dialled = Counter(call["body"]["to_number"] for call in slow.calls())

    assert dialled == Counter(map(e164, numbers))  # every number once, none twice
    for name in ("north", "south"):
        for row in read_results(tmp_path / f"{name}.results.csv"):
            assert row["callkaro_status"] in ("scheduled", "suppressed")
            if row["callkaro_status"] == "suppressed":
                assert row["callkaro_message"].startswith(("called on ", "claimed on ")), row
    with sqlite3.connect(tmp_path / "shared.sqlite") as db:
        entries = db.execute("SELECT number, status FROM calls").fetchall()
    assert sorted(entries) == sorted((e164(n), "scheduled") for n in numbers)


def test_skip_recent_without_history_is_a_usage_error(tmp_path: Path) -> None:
    write_export(tmp_path / "export.csv", lead_numbers(500, 2))
    done: Run = run_loader(tmp_path, "export.csv", "--skip-recent", "7", "--sandbox")
    assert done.code == 2
    assert done.err.splitlines()[0] == (
        "callkaro-loader: error: --skip-recent needs --history: the ledger that says when each number "
        "was last called"
    )
    assert not (tmp_path / "export.results.csv").exists()
