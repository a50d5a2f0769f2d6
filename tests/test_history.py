"""The shared history (``--history``): claims, what counts as recent, and runs racing for one number."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import random
import sqlite3
import stat
import subprocess
import tempfile
import threading
import zoneinfo
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sandbox_process import CLI

import loader
from loader.errors import StateError, UsageError
from loader.history import Claims, History
from loader.state import RowState

KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")
NOW = dt.datetime(2026, 11, 21, 20, 0, tzinfo=dt.UTC)  # 01:30 on 22 November in Kolkata
NUMBERS = [f"+9198{i:08d}" for i in range(400)]


def ledger(path: Path, moment: dt.datetime = NOW) -> History:
    return History(path, clock=lambda: moment)


def run_claims(history: History, numbers: dict[int, str], *, days: int | None) -> Claims:
    """Run ``a``'s claims on ``x.csv`` (row -> number), in Kolkata, at ``NOW``."""
    return Claims(
        history, run="a", input_name="x.csv", numbers=numbers, days=days, timezone=KOLKATA, clock=lambda: NOW
    )


def test_a_claimed_number_is_refused_to_another_run_but_not_to_its_own(tmp_path: Path) -> None:
    with ledger(tmp_path / "h.sqlite") as history:
        first = history.claim([(2, NUMBERS[0])], run="a", batch_id="b1", input_name="x.csv", days=7)
        again = history.claim([(2, NUMBERS[0])], run="a", batch_id="b1", input_name="x.csv", days=7)
        other = history.claim([(5, NUMBERS[0])], run="b", batch_id="b2", input_name="y.csv", days=7)
    assert (first, again) == ({}, {})
    assert list(other) == [5]
    assert (
        other[5].reason(KOLKATA)
        == "claimed on 2026-11-22 in campaign b1 by another run, which may have called it"
    )


def test_scheduled_entries_say_when_and_in_which_campaign_in_the_runs_time_zone(tmp_path: Path) -> None:
    with ledger(tmp_path / "h.sqlite") as history:
        history.claim([(2, NUMBERS[0])], run="a", batch_id="b1", input_name="x.csv", days=7)
        history.settle("a", scheduled=[(2, "call1", NOW)])
        found = history.recent([NUMBERS[0], NUMBERS[1]], days=7)
    assert list(found) == [NUMBERS[0]]
    again = " (to call it again, run with --skip-recent 0)"
    assert found[NUMBERS[0]].reason(KOLKATA) == "called on 2026-11-22 in campaign b1" + again
    assert found[NUMBERS[0]].reason(dt.UTC) == "called on 2026-11-21 in campaign b1" + again


def test_entries_older_than_the_window_do_not_count(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with ledger(path, NOW - dt.timedelta(days=8)) as history:
        history.claim([(2, NUMBERS[0])], run="a", batch_id="b1", input_name="x.csv", days=7)
    with ledger(path, NOW - dt.timedelta(days=6)) as history:
        history.claim([(2, NUMBERS[1])], run="a2", batch_id="b1", input_name="x.csv", days=7)
    with ledger(path) as history:
        assert set(history.recent(NUMBERS[:2], days=7)) == {NUMBERS[1]}
        assert set(history.recent(NUMBERS[:2], days=9)) == set(NUMBERS[:2])


def test_released_claims_free_the_number_and_uncertain_ones_keep_it(tmp_path: Path) -> None:
    with ledger(tmp_path / "h.sqlite") as history:
        claims = run_claims(history, dict(zip(range(2, 6), NUMBERS, strict=False)), days=7)
        claims.batch_id = "b1"
        assert claims.admit([2, 3, 4, 5]) == {}
        claims.outcome(2, "scheduled", call_id="c2", message=None, attempts=1)
        claims.outcome(3, "failed", call_id=None, message="400", attempts=1)
        claims.outcome(4, "uncertain", call_id=None, message="no answer", attempts=1)
        # Row 5 was claimed, then the run stopped before sending it: the state still says pending.
        claims.finish(
            {
                2: RowState(2, "scheduled", 1, "c2", None, NOW.isoformat()),
                3: RowState(3, "failed", 1, None, "400", NOW.isoformat()),
                4: RowState(4, "uncertain", 1, None, "no answer", NOW.isoformat()),
                5: RowState(5, "pending", 0, None, None, NOW.isoformat()),
            }
        )
        entries = {(e["source_row"], e["number"], e["status"], e["call_id"]) for e in history.entries()}
    assert entries == {(2, NUMBERS[0], "scheduled", "c2"), (4, NUMBERS[2], "claimed", None)}


def test_outcomes_are_written_with_the_next_claims_in_one_transaction(tmp_path: Path) -> None:
    with ledger(tmp_path / "h.sqlite") as history:
        claims = run_claims(history, dict(enumerate(NUMBERS[:4])), days=None)
        claims.admit([0, 1])
        claims.outcome(0, "scheduled", call_id="c0", message=None, attempts=1)
        claims.outcome(1, "pending", call_id=None, message="stopped", attempts=1)
        assert {e["status"] for e in history.entries()} == {"claimed"}
        claims.admit([2])
        assert sorted((e["source_row"], e["status"]) for e in history.entries()) == [
            (0, "scheduled"),
            (2, "claimed"),
        ]


def test_runs_racing_from_threads_with_their_own_connections_never_both_get_a_number(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    with ledger(path):  # create the file once, as the first night's run would
        pass
    granted: dict[str, set[str]] = {}
    start = threading.Barrier(3)

    def race(run: str, seed: int) -> None:
        order = NUMBERS[:]
        random.Random(seed).shuffle(order)
        mine: set[str] = set()
        with History(path) as history:
            start.wait()
            for i in range(0, len(order), 16):
                chunk = list(enumerate(order[i : i + 16], start=i))
                refused = history.claim(chunk, run=run, batch_id=run, input_name=f"{run}.csv", days=7)
                mine.update(number for row, number in chunk if row not in refused)
        granted[run] = mine

    threads = [threading.Thread(target=race, args=(f"run{i}", i)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    a, b, c = granted.values()
    assert not (a & b) and not (a & c) and not (b & c)
    assert a | b | c == set(NUMBERS)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*), count(DISTINCT number) FROM calls").fetchone() == (400, 400)


def test_a_dry_run_reads_a_missing_history_as_empty_and_does_not_create_it(tmp_path: Path) -> None:
    with History(tmp_path / "nope.sqlite", readonly=True) as history:
        assert history.recent(NUMBERS[:3], days=7) == {}
    assert list(tmp_path.iterdir()) == []


def test_a_history_in_a_folder_that_does_not_exist_is_refused_rather_than_started_empty(
    tmp_path: Path,
) -> None:
    with pytest.raises(UsageError, match=r"folder .*typo does not exist"):
        History(tmp_path / "typo" / "h.sqlite").open()
    assert list(tmp_path.iterdir()) == []


# --- through load_campaign ------------------------------------------------------------------------

SHEET = "Name,Phone\n" + "".join(f"Lead {i},+91 98{100 + i:03d} 4{i:04d}\n" for i in range(40))
OPTIONS = {"agent_id": "demo-agent", "sandbox": True, "no_progress": True, "timezone": "Asia/Kolkata"}


@pytest.fixture
def sheet(tmp_path: Path) -> Path:
    path = tmp_path / "leads.csv"
    path.write_text(SHEET, encoding="utf-8")
    return path


def test_a_dry_run_shows_what_the_history_would_skip_without_writing_to_it(
    sheet: Path, tmp_path: Path
) -> None:
    ledger_path = tmp_path / "h.sqlite"
    first = loader.load_campaign(sheet, history=ledger_path, output=tmp_path / "a.csv", **OPTIONS)
    assert first.counts == {"scheduled": 40}
    before = ledger_path.read_bytes()
    dry = loader.load_campaign(
        sheet, history=ledger_path, skip_recent=7, dry_run=True, output=tmp_path / "b.csv", **OPTIONS
    )
    assert dry.counts == {"suppressed": 40}
    assert set(dry.outcomes["callkaro_message"]) == {
        f"called on {first.started_at.astimezone(KOLKATA):%Y-%m-%d} in campaign {first.batch_id}"
        " (to call it again, run with --skip-recent 0)"
    }
    assert ledger_path.read_bytes() == before

    missing = tmp_path / "never.sqlite"
    dry = loader.load_campaign(
        sheet, history=missing, skip_recent=7, dry_run=True, output=tmp_path / "c.csv", **OPTIONS
    )
    assert dry.counts == {"valid": 40} and not missing.exists()


def lock_history_at_second_chunk(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the history fail (locked) when the second chunk of rows asks to be sent; the real admit."""
    real_admit = Claims.admit
    admitted = 0

    def failing_admit(self: Claims, rows: list[int]) -> dict[int, str]:
        nonlocal admitted
        admitted += 1
        if admitted == 2:
            raise StateError("h.sqlite cannot be written (database is locked)")
        return real_admit(self, rows)

    monkeypatch.setattr(Claims, "admit", failing_admit)
    return real_admit


def test_a_history_failing_mid_run_stops_sending_and_still_writes_the_results(
    sheet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_admit = lock_history_at_second_chunk(monkeypatch)
    with pytest.raises(StateError, match="database is locked"):
        loader.load_campaign(
            sheet,
            history=tmp_path / "h.sqlite",
            skip_recent=7,
            concurrency=1,
            output=tmp_path / "out.csv",
            **OPTIONS,
        )
    with (tmp_path / "out.csv").open(encoding="utf-8-sig") as handle:
        statuses = Counter(row["callkaro_status"] for row in csv.DictReader(handle))
    assert statuses == {"scheduled": 16, "pending": 24}  # the first chunk went out; the rest waits

    monkeypatch.setattr(Claims, "admit", real_admit)
    resumed = loader.load_campaign(
        sheet,
        history=tmp_path / "h.sqlite",
        skip_recent=7,
        concurrency=1,
        output=tmp_path / "out.csv",
        **OPTIONS,
    )
    assert resumed.counts == {"scheduled": 40}
    with History(tmp_path / "h.sqlite") as history:
        assert Counter(e["status"] for e in history.entries()) == {"scheduled": 40}


def test_a_history_failing_after_calls_were_sent_exits_1_and_its_summary_counts_the_rows(
    sheet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock_history_at_second_chunk(monkeypatch)
    with pytest.raises(StateError) as raised:
        loader.load_campaign(
            sheet,
            history=tmp_path / "h.sqlite",
            concurrency=1,
            output=tmp_path / "out.csv",
            summary_json=tmp_path / "summary.json",
            **OPTIONS,
        )
    # 16 calls were made: exit 2 would tell a cron job "nothing was sent".
    assert raised.value.exit_code == 1
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert (summary["exit_code"], summary["counts"]) == (1, {"scheduled": 16, "pending": 24})


def test_a_resumed_run_does_not_mistake_its_own_claims_for_another_runs(sheet: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    loader.load_campaign(sheet, history=tmp_path / "h.sqlite", skip_recent=7, output=out, **OPTIONS)
    # As if two answers had been lost: the rows are uncertain, and their claims stay in the history.
    with sqlite3.connect(out.with_name("out.csv.state")) as db:
        db.execute("UPDATE rows SET status = 'uncertain', call_id = NULL WHERE source_row IN (2, 3)")
    with sqlite3.connect(tmp_path / "h.sqlite") as db:
        db.execute("UPDATE calls SET status = 'claimed', call_id = NULL WHERE source_row IN (2, 3)")

    other = loader.load_campaign(
        sheet, history=tmp_path / "h.sqlite", skip_recent=7, output=tmp_path / "o.csv", **OPTIONS
    )
    assert other.counts == {"suppressed": 40}  # another run keeps off them, claims included
    assert other.outcomes.loc[2, "callkaro_message"].startswith("claimed on ")

    resumed = loader.load_campaign(
        sheet, history=tmp_path / "h.sqlite", skip_recent=7, retry_uncertain=True, output=out, **OPTIONS
    )
    assert resumed.counts == {"scheduled": 40}  # its own two claims did not stop it resending them


# --- what the ledger counts: instants, one API, and files that are not ledgers ----------------------


def test_a_time_written_in_sqlites_own_datetime_style_counts_on_the_boundary_day(tmp_path: Path) -> None:
    """A script importing last month's calls writes ``datetime()``'s ``2026-11-25 06:30:00`` (UTC):
    compared as text with ``2026-11-25T06:00:00+00:00`` it would look older than the window."""
    path = tmp_path / "h.sqlite"
    with ledger(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO calls (number, status, at, batch_id, run, source_row)"
            " VALUES (?, 'scheduled', '2026-11-25 06:30:00', 'imported', 'import', 1)",
            (NUMBERS[0],),
        )
    a_day_later = dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.UTC)
    with ledger(path, a_day_later) as history:
        found = history.recent([NUMBERS[0]], days=1)
        assert found[NUMBERS[0]].at == dt.datetime(2026, 11, 25, 6, 30, tzinfo=dt.UTC)
        assert found[NUMBERS[0]].reason(KOLKATA).startswith("called on 2026-11-25 in campaign imported")
    with ledger(path, a_day_later + dt.timedelta(hours=1)) as history:
        assert history.recent([NUMBERS[0]], days=1) == {}  # and out of it an hour later


def test_calls_to_one_api_never_block_calls_to_another(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with History(path, clock=lambda: NOW, api="http://127.0.0.1:8787") as test_server:
        test_server.claim([(2, NUMBERS[0])], run="a", batch_id="b1", input_name="x.csv", days=7)
    with History(path, clock=lambda: NOW, api="https://api.callkaro.ai/") as real:
        assert real.recent([NUMBERS[0]], days=7) == {}
        assert real.claim([(2, NUMBERS[0])], run="b", batch_id="b2", input_name="x.csv", days=7) == {}
    with History(path, clock=lambda: NOW, api="HTTPS://api.callkaro.ai") as real_again:
        assert list(real_again.recent([NUMBERS[0]], days=7)) == [NUMBERS[0]]


def test_skip_recent_all_counts_every_call_ever_and_a_window_past_year_one_means_the_same(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.sqlite"
    with ledger(path, NOW - dt.timedelta(days=3000)) as history:
        history.claim([(2, NUMBERS[0])], run="a", batch_id="b1", input_name="x.csv", days=None)
    with ledger(path) as history:
        assert history.recent([NUMBERS[0]], days=7) == {}
        assert list(history.recent([NUMBERS[0]], days="all")) == [NUMBERS[0]]
        assert list(history.recent([NUMBERS[0]], days=100_000_000)) == [NUMBERS[0]]  # OverflowError before
        assert list(history.recent([NUMBERS[0]], days=10**30)) == [NUMBERS[0]]


V1_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "INSERT INTO meta VALUES ('schema_version', '1');"
    "CREATE TABLE calls (number TEXT NOT NULL,"
    " status TEXT NOT NULL CHECK (status IN ('claimed', 'scheduled')), at TEXT NOT NULL, batch_id TEXT,"
    " call_id TEXT, input TEXT, run TEXT NOT NULL, source_row INTEGER NOT NULL,"
    " PRIMARY KEY (run, source_row));"
    "CREATE INDEX calls_by_number ON calls (number, at);"
)


def test_a_ledger_of_the_previous_schema_is_kept_and_its_calls_count_for_every_api(tmp_path: Path) -> None:
    """Its rows do not say which API they went to: they might be real calls, so they count for all."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
        db.execute(
            "INSERT INTO calls VALUES (?, 'scheduled', ?, 'b0', 'c0', 'x.csv', 'old', 2)",
            (NUMBERS[0], NOW.isoformat()),
        )
    with History(path, clock=lambda: NOW, readonly=True, api="https://api.callkaro.ai") as dry:
        assert list(dry.recent([NUMBERS[0]], days=7)) == [NUMBERS[0]]
    with History(path, clock=lambda: NOW, api="http://127.0.0.1:9") as history:
        assert list(history.recent([NUMBERS[0]], days=7)) == [NUMBERS[0]]
        history.claim([(3, NUMBERS[1])], run="new", batch_id="b1", input_name="x.csv", days=7)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT number, base_url FROM calls ORDER BY number").fetchall()
    assert rows == [(NUMBERS[0], None), (NUMBERS[1], "http://127.0.0.1:9")]


def test_the_loaders_ledger_says_what_it_is(tmp_path: Path) -> None:
    with ledger(tmp_path / "h.sqlite"):
        pass
    with sqlite3.connect(tmp_path / "h.sqlite") as db:
        (application_id,) = db.execute("PRAGMA application_id").fetchone()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    assert application_id != 0
    assert meta["application"] == "callkaro-loader call ledger"


def foreign_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
        db.execute("INSERT INTO contacts VALUES ('Asha', '+919810012345')")
    db.close()


NOT_LEDGERS = {
    "empty": (lambda path: path.write_bytes(b""), r"is an empty file, not a call ledger"),
    "text": (lambda path: path.write_text("shopping list\n"), r"is not a call ledger \(not a SQLite"),
    "damaged": (
        lambda path: path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20),
        r"is a damaged SQLite file",
    ),
    "foreign": (foreign_database, r"is another application's SQLite database, not a call ledger"),
}


@pytest.mark.parametrize("kind", NOT_LEDGERS)
@pytest.mark.parametrize("readonly", [False, True], ids=["run", "dry run"])
def test_a_file_that_is_not_a_ledger_is_refused_and_left_untouched(
    tmp_path: Path, kind: str, readonly: bool
) -> None:
    path = tmp_path / "not-a-ledger.sqlite"
    make, message = NOT_LEDGERS[kind]
    make(path)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with pytest.raises(StateError, match=message) as refused:
        History(path, readonly=readonly).open()
    assert refused.value.exit_code == 2
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no -wal, -shm or -journal either


def test_tests_never_touch_the_real_per_user_ledger() -> None:
    """conftest gives every test its own home: the ledger the loader would use is in a temporary folder."""
    from conftest import default_ledger as this_tests_ledger

    from loader.history import default_ledger

    assert default_ledger() == this_tests_ledger()
    assert default_ledger().is_relative_to(tempfile.gettempdir())


def test_an_entry_written_in_sqlites_own_time_style_counts_on_the_windows_first_day(tmp_path: Path) -> None:
    # A script importing last month's calls writes SQLite's datetime() style ("YYYY-MM-DD HH:MM:SS",
    # UTC): 21:00 on the window's first day is inside a 7-day window that opened at 20:00.
    path = tmp_path / "h.sqlite"
    with ledger(path) as history:
        history.claim([(2, NUMBERS[0])], run="a", batch_id="b1", input_name="x.csv", days=7)
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO calls (number, status, at, batch_id, call_id, input, run, source_row)"
            " VALUES (?, 'scheduled', ?, 'old', ?, 'import.csv', 'import', ?)",
            (NUMBERS[1], "2026-11-14 21:00:00", "c9", 1),
        )
        db.execute(
            "INSERT INTO calls (number, status, at, batch_id, call_id, input, run, source_row)"
            " VALUES (?, 'scheduled', ?, 'old', ?, 'import.csv', 'import', ?)",
            (NUMBERS[2], "2026-11-14 19:00:00", "c8", 2),
        )
    db.close()
    with ledger(path) as history:
        found = history.recent(NUMBERS[1:3], days=7)
        refused = history.claim([(3, NUMBERS[1])], run="b", batch_id="b2", input_name="y.csv", days=7)
    assert list(found) == [NUMBERS[1]]
    assert found[NUMBERS[1]].reason(KOLKATA).startswith("called on 2026-11-15 in campaign old")
    assert list(refused) == [3]


@pytest.mark.parametrize("days", [100_000_000, 10**20])
def test_a_window_longer_than_the_calendar_counts_every_entry(tmp_path: Path, days: int) -> None:
    path = tmp_path / "h.sqlite"
    with ledger(path, dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) as history:
        history.claim([(2, NUMBERS[0])], run="a", batch_id="b1", input_name="x.csv", days=7)
    with ledger(path) as history:
        assert list(history.recent(NUMBERS[:2], days=days)) == [NUMBERS[0]]
        assert list(
            history.claim([(2, NUMBERS[0])], run="b", batch_id="b2", input_name="y.csv", days=days)
        ) == [2]


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_history_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path, dry_run: bool) -> None:
    # SQLite opened the FIFO and waited for a writer forever (a dry run reads the ledger).
    (tmp_path / "x.csv").write_text("phone\n+91 98765 43210\n", encoding="utf-8")
    os.mkfifo(tmp_path / "h.sqlite")
    argv = [
        CLI,
        "run",
        "x.csv",
        "--agent-id",
        "a",
        "--sandbox",
        "--history",
        "h.sqlite",
        "--skip-recent",
        "3",
    ]
    run = subprocess.run(
        [*argv, *(["--dry-run"] if dry_run else [])], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2, run.stderr
    assert "--history h.sqlite is a named pipe (FIFO), not a file" in run.stderr
    assert (tmp_path / "h.sqlite").is_fifo()


def test_a_history_that_is_a_device_is_never_written_to(tmp_path: Path) -> None:
    # As root, SQLite would write its header and a journal onto whatever device --history names
    # (a disk, as /dev/sda). A device of this test's own (/dev/null's numbers) shows it does not.
    if os.geteuid() != 0:
        pytest.skip("only root can make a device node")
    device = tmp_path / "h.sqlite"
    os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    with pytest.raises(UsageError, match=r"--history .*h\.sqlite is a device, not a file"), History(device):
        pass
    assert device.is_char_device()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.sqlite"]  # no journal beside it
