"""Nightly imports end to end: the installed command, a sandbox on a real port, one shared history.

Each night's run is a separate process, as cron starts it, and the sandbox is
one process for the whole scenario, so what "yesterday" scheduled is really
known to "today" only through ``--history``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import phonenumbers
import pytest
from conftest import default_ledger
from pinned_clock import clean_env, run_date
from test_e2e import CLI, COMMON, KOLKATA, Run, Sandbox, read_results, run_loader, sandbox_process

import loader

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
            assert row["callkaro_message"].endswith(
                f" in campaign {day1_campaign} (to call it again, run with --skip-recent 0)"
            )
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


def test_with_skip_recent_0_the_history_records_but_skips_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    numbers = lead_numbers(300, 5)
    write_export(tmp_path / "export.csv", numbers)
    off = ["--history", "h.sqlite", "--skip-recent", "0"]
    first = run_loader(tmp_path, "export.csv", *off, sandbox=sandbox, output="a.csv")
    second = run_loader(tmp_path, "export.csv", *off, sandbox=sandbox, output="b.csv")
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


def test_skip_recent_with_no_history_is_a_usage_error(tmp_path: Path) -> None:
    write_export(tmp_path / "export.csv", lead_numbers(500, 2))
    done: Run = run_loader(tmp_path, "export.csv", "--skip-recent", "7", "--no-history", "--sandbox")
    assert done.code == 2
    assert done.err.splitlines()[0] == (
        "callkaro-loader: error: --skip-recent needs the call ledger, which --no-history turns off"
    )
    assert not (tmp_path / "export.results.csv").exists()


# --- the ledger on by default -----------------------------------------------------------------------


def test_without_history_runs_record_into_the_per_user_ledger_and_a_renamed_sheet_calls_nobody_twice(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    numbers = lead_numbers(700, 4)
    write_export(tmp_path / "leads.csv", numbers)
    first = run_loader(tmp_path, "leads.csv", "--summary-json", "a.json", sandbox=sandbox, output="a.csv")
    assert (first.code, first.counts(), len(first.new_calls)) == (0, {"scheduled": 4}, 4)
    ledger = default_ledger()
    assert summary(tmp_path / "a.json")["ledger"] == str(ledger) and ledger.is_file()

    # The same leads saved under another name, with a new results file, later the same day.
    shutil.copy(tmp_path / "leads.csv", tmp_path / "leads (2).csv")
    second = run_loader(
        tmp_path, "leads (2).csv", "--summary-json", "b.json", sandbox=sandbox, output="b.csv"
    )
    assert (second.code, second.new_calls, second.counts()) == (0, [], {"suppressed": 4})
    assert {r["callkaro_message"] for r in second.results} == {
        f"called on {run_date(KOLKATA)} in campaign {first.batch_id} "
        "(to call it again, run with --skip-recent 0)"
    }
    assert summary(tmp_path / "b.json")["ledger"] == str(ledger)
    status = subprocess.run(
        [CLI, "status", "b.csv"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert f"ledger: {ledger}" in status.stdout.splitlines()

    # --skip-recent 0, as the message says, calls them again; --no-history leaves the ledger alone.
    again = run_loader(tmp_path, "leads.csv", "--skip-recent", "0", sandbox=sandbox, output="c.csv")
    assert (again.counts(), len(again.new_calls)) == ({"scheduled": 4}, 4)
    before = ledger.read_bytes()
    off = run_loader(
        tmp_path, "leads.csv", "--no-history", "--summary-json", "d.json", sandbox=sandbox, output="d.csv"
    )
    assert (off.counts(), summary(tmp_path / "d.json")["ledger"]) == ({"scheduled": 4}, None)
    assert ledger.read_bytes() == before


def test_calls_to_a_test_server_never_block_calls_to_another_api(sandbox: Sandbox, tmp_path: Path) -> None:
    numbers = lead_numbers(720, 3)
    write_export(tmp_path / "leads.csv", numbers)
    with sandbox_process() as other:
        elsewhere = run_loader(tmp_path, "leads.csv", sandbox=other, output="other.csv")
    assert elsewhere.counts() == {"scheduled": 3}
    here = run_loader(tmp_path, "leads.csv", sandbox=sandbox, output="here.csv")
    assert (here.counts(), len(here.new_calls)) == ({"scheduled": 3}, 3)
    again = run_loader(tmp_path, "leads.csv", sandbox=sandbox, output="again.csv")
    assert (again.counts(), again.new_calls) == ({"suppressed": 3}, [])


def test_a_sandbox_run_keeps_no_ledger_and_gives_the_same_summary_every_time(tmp_path: Path) -> None:
    write_export(tmp_path / "leads.csv", lead_numbers(740, 3))
    runs = [
        run_loader(tmp_path, "leads.csv", "--sandbox", "--summary-json", f"{i}.json", output=f"{i}.csv")
        for i in range(2)
    ]
    assert [(r.code, r.out.splitlines()[0], r.counts()) for r in runs] == [
        (0, "scheduled  3", {"scheduled": 3})
    ] * 2
    assert summary(tmp_path / "0.json")["ledger"] is None
    assert not default_ledger().parent.exists()


NOT_LEDGERS = {
    "empty": lambda path: path.write_bytes(b""),
    "foreign": lambda path: foreign_database(path),
    "damaged": lambda path: path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20),
}


def foreign_database(path: Path) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer TEXT, phone TEXT)")
        db.execute("INSERT INTO invoices VALUES (1, 'Asha', '+919810012345')")
    db.close()


@pytest.mark.parametrize("kind", NOT_LEDGERS)
@pytest.mark.parametrize("how", ["--history", "CALLKARO_HISTORY", "--dry-run"])
def test_a_history_file_that_is_not_a_ledger_is_refused_before_sending_and_left_byte_for_byte(
    sandbox: Sandbox, tmp_path: Path, kind: str, how: str
) -> None:
    write_export(tmp_path / "leads.csv", lead_numbers(760, 3))
    path = tmp_path / "crm.sqlite"
    NOT_LEDGERS[kind](path)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    if how == "CALLKARO_HISTORY":
        done = run_with_history_env(tmp_path, "leads.csv", history="crm.sqlite", sandbox=sandbox)
    else:
        flags = ["--history", "crm.sqlite"] + (["--dry-run"] if how == "--dry-run" else [])
        done = run_loader(tmp_path, "leads.csv", *flags, sandbox=sandbox)
    assert done.code == 2, done.err
    assert len(done.err.splitlines()) == 2 and done.err.startswith("callkaro-loader: error: crm.sqlite ")
    assert done.new_calls == [] and done.new_campaigns == []
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crm.sqlite", "leads.csv"]


def run_with_history_env(folder: Path, sheet: str, *, history: str, sandbox: Sandbox) -> Run:
    """``run_loader`` with ``CALLKARO_HISTORY`` set (it drops every CALLKARO_ variable it inherits)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLKARO_")}
    env |= {"CALLKARO_API_KEY": "sandbox-key", "CALLKARO_HISTORY": history}
    calls, campaigns = len(sandbox.calls()), len(sandbox.campaigns())
    argv = [CLI, "run", sheet, *COMMON, "--base-url", sandbox.url]
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False)
    return Run(
        code=done.returncode,
        out=done.stdout,
        err=done.stderr,
        results=read_results(folder / f"{Path(sheet).stem}.results.csv"),
        new_calls=sandbox.calls()[calls:],
        new_campaigns=sandbox.campaigns()[campaigns:],
    )


def test_skip_recent_all_over_ten_nights_of_a_cumulative_export_calls_each_number_once(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Five new leads a night into an export that keeps every old one; the clock moves a day a night."""
    numbers = lead_numbers(800, 50)
    (tmp_path / "nightly.toml").write_text(
        'agent_id = "demo-agent"\ndefault_region = "IN"\ntimezone = "Asia/Kolkata"\n'
        'history = "calls.sqlite"\nskip_recent = "all"\nno_progress = true\n',
        encoding="utf-8",
    )
    first_night = dt.datetime(2026, 11, 1, 21, 0, tzinfo=dt.UTC)
    calls_before = len(sandbox.calls())
    for night in range(10):
        write_export(tmp_path / "export.csv", numbers[: 5 * (night + 1)])
        moment = first_night + dt.timedelta(days=night)
        result = loader.load_campaign(
            tmp_path / "export.csv",
            config=tmp_path / "nightly.toml",
            output=tmp_path / f"night{night}.results.csv",
            base_url=sandbox.url,
            api_key="sandbox-key",
            clock=lambda moment=moment: moment,
        )
        assert result.counts == {"scheduled": 5, **({"suppressed": 5 * night} if night else {})}, night
    dialled = Counter(call["body"]["to_number"] for call in sandbox.calls()[calls_before:])
    assert dialled == Counter(map(e164, numbers))  # each number once, over ten nights

    # With the default window (a day), an eleventh night would dial the first nine nights' leads again.
    preview = loader.load_campaign(
        tmp_path / "export.csv",
        config=tmp_path / "nightly.toml",
        skip_recent=1,
        dry_run=True,
        output=tmp_path / "preview.csv",
        base_url=sandbox.url,
        clock=lambda: first_night + dt.timedelta(days=10),
    )
    assert preview.counts == {"valid": 45, "suppressed": 5}
