"""The run's state beside the results file: durable, locked to one process, and honest after a crash."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from loader.errors import StateError
from loader.state import Planned, RunState, connect, fingerprint, state_path, write_transaction

ROOT = Path(__file__).resolve().parent.parent
NOON = dt.datetime(2030, 5, 28, 12, 0, tzinfo=dt.UTC)
INTERRUPTED = (
    "the run stopped while this request was in flight; it may or may not have been "
    "scheduled (check the campaign: --retry-uncertain resends it, calling the person twice if it was)"
)


@pytest.fixture
def output(tmp_path: Path) -> Path:
    return tmp_path / "leads.results.csv"


@pytest.fixture
def state(output: Path) -> Iterator[RunState]:
    with RunState(output, clock=lambda: NOON) as run_state:
        yield run_state


def test_state_lives_beside_the_results_file(output: Path) -> None:
    assert state_path(output) == output.with_name("leads.results.csv.state")
    with RunState(output):
        pass
    assert state_path(output).is_file()


def test_state_uses_wal_so_each_commit_survives_a_killed_process(state: RunState) -> None:
    assert state.db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_fingerprint_is_the_sha256_of_the_bytes_and_changes_with_one_byte(tmp_path: Path) -> None:
    sheet = tmp_path / "leads.csv"
    sheet.write_bytes(b"Phone\n+919876543210\n")
    first = fingerprint(sheet)
    assert first == hashlib.sha256(b"Phone\n+919876543210\n").hexdigest()
    copy = tmp_path / "copy of leads.csv"
    copy.write_bytes(sheet.read_bytes())
    assert fingerprint(copy) == first
    sheet.write_bytes(b"Phone\n+919876543211\n")
    assert fingerprint(sheet) != first


def test_run_values_persist_and_none_removes_one(output: Path) -> None:
    with RunState(output, clock=lambda: NOON) as state:
        assert state.is_new()
        state.set(fingerprint="abc", batch_id="b1", campaign_name="Leads")
        state.set(campaign_name=None)
    with RunState(output) as state:
        assert not state.is_new()
        assert (state.get("fingerprint"), state.get("batch_id"), state.get("campaign_name")) == (
            "abc",
            "b1",
            None,
        )
        assert state.get("updated_at") == "2030-05-28T12:00:00+00:00"


# --- rows -----------------------------------------------------------------------------------------


def test_row_outcomes_are_committed_and_read_back_by_a_new_process(output: Path) -> None:
    with RunState(output, clock=lambda: NOON) as state:
        state.add_pending([2, 3, 4])
        state.mark_sending(2)
        state.mark(2, "scheduled", call_id="a1b2c3d4e5")
        state.mark_sending(3)
        state.mark(3, "pending", message="retrying after: HTTP 500: Server error")
        state.mark_sending(3)
        state.mark(3, "failed", message="HTTP 400: Missing agent_id")
    with sqlite3.connect(state_path(output)) as other:
        rows = other.execute("SELECT source_row, status, attempts, call_id, message FROM rows").fetchall()
    assert sorted(rows) == [
        (2, "scheduled", 1, "a1b2c3d4e5", None),
        (3, "failed", 2, None, "HTTP 400: Missing agent_id"),
        (4, "pending", 0, None, None),
    ]


def test_adding_pending_rows_again_keeps_what_they_already_did(state: RunState) -> None:
    state.add_pending([2, 3])
    state.mark(2, "scheduled", call_id="c2")
    state.add_pending([2, 3, 4])
    assert {row: r.status for row, r in state.rows().items()} == {2: "scheduled", 3: "pending", 4: "pending"}


def test_status_the_state_does_not_keep_is_refused(state: RunState) -> None:
    state.add_pending([2])
    with pytest.raises(ValueError, match="^not a send status: duplicate$"):
        state.mark(2, "duplicate")


def test_interrupted_request_is_recovered_as_uncertain_and_nothing_else_changes(state: RunState) -> None:
    state.add_pending([2, 3, 4, 5])
    state.mark_sending(2)
    state.mark_sending(3)
    state.mark(3, "scheduled", call_id="c3")
    state.mark_sending(4)
    assert state.recover_interrupted() == 2
    rows = state.rows()
    assert (rows[2].status, rows[2].message) == ("uncertain", INTERRUPTED)
    assert (rows[4].status, rows[4].message) == ("uncertain", INTERRUPTED)
    assert (rows[3].status, rows[3].call_id) == ("scheduled", "c3")
    assert rows[5].status == "pending"
    assert state.recover_interrupted() == 0


def test_fresh_start_forgets_the_earlier_run_but_stays_a_state_file(state: RunState) -> None:
    state.set(fingerprint="abc", batch_id="b1")
    state.add_pending([2, 3])
    state.mark(2, "scheduled", call_id="c2")
    state.reset()
    assert state.is_new()
    assert state.rows() == {}
    assert state.get("batch_id") is None
    assert state.get("schema_version") == "2"


# --- one process at a time ------------------------------------------------------------------------


def test_second_run_on_the_same_output_is_refused_while_the_first_holds_it(output: Path) -> None:
    with RunState(output):
        with pytest.raises(StateError) as caught:
            RunState(output).open()
        assert str(caught.value) == f"another callkaro-loader run is writing {output} right now"
        assert caught.value.hint == (
            "Wait for it to finish, then run the same command again (a different --output would start a "
            "new campaign, calling again anyone this one has called)."
        )
        assert caught.value.exit_code == 2
    # Once the first is done, the output is free again.
    with RunState(output) as again:
        assert again.is_new()


def test_runs_on_different_outputs_in_one_folder_do_not_block_each_other(tmp_path: Path) -> None:
    with RunState(tmp_path / "a.results.csv"), RunState(tmp_path / "b.results.csv"):
        pass


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from loader.state import RunState

    state = RunState(Path(sys.argv[1]))
    state.open()
    state.add_pending([2, 3, 4])
    state.mark_sending(2)
    state.mark(2, "scheduled", call_id="acknowledged")
    state.mark_sending(3)
    print("holding", flush=True)
    time.sleep(60)
    """
)


def test_run_killed_with_sigkill_frees_the_output_and_loses_nothing_acknowledged(output: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(output)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "holding\n"
            with pytest.raises(StateError, match="right now"):
                RunState(output).open()
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
    assert holder.returncode == -signal.SIGKILL

    with RunState(output) as state:
        assert state.recover_interrupted() == 1
        rows = state.rows()
    assert (rows[2].status, rows[2].call_id) == ("scheduled", "acknowledged")
    assert (rows[3].status, rows[3].attempts) == ("uncertain", 1)
    assert rows[4].status == "pending"


def test_file_that_is_not_a_state_is_refused_with_a_way_out_and_the_lock_is_released(output: Path) -> None:
    state_path(output).write_bytes(b"this is not SQLite, just a file someone left here" * 100)
    with pytest.raises(StateError) as caught:
        RunState(output).open()
    assert str(caught.value).startswith(f"{state_path(output)} is not a state file the loader can read (")
    assert caught.value.hint == (
        "It is the record of which numbers were already called: restore it from a backup if you can; "
        "otherwise move it away and load, with a new --output, only the rows its results file shows as "
        "neither scheduled nor uncertain (any other row would be called again)."
    )
    state_path(output).unlink()
    with RunState(output) as state:
        assert state.is_new()


def test_state_used_before_it_is_opened_says_so(output: Path) -> None:
    with pytest.raises(RuntimeError, match="^RunState used before open\\(\\)$"):
        RunState(output).rows()


# --- group commit: many requests, few transactions, the same promises ------------------------------


def _on_disk(output: Path) -> dict[int, tuple[str, int, str | None]]:
    """What another process reading the state file sees right now."""
    with sqlite3.connect(state_path(output)) as db:
        return {
            r[0]: (r[1], r[2], r[3])
            for r in db.execute("SELECT source_row, status, attempts, call_id FROM rows")
        }


def test_writes_made_in_one_turn_of_the_event_loop_share_one_transaction(
    state: RunState, output: Path
) -> None:
    import asyncio

    from loader.state import GroupCommit, RowWrite

    state.add_pending(range(2, 12))
    writer = GroupCommit(state)
    seen: list[dict[int, tuple[str, int, str | None]]] = []

    async def one(row: int) -> None:
        await writer.write(RowWrite(row, "sending"))
        seen.append(_on_disk(output))  # committed before the "request" leaves
        await writer.write(RowWrite(row, "scheduled", call_id=f"c{row}"))

    async def main() -> None:
        await asyncio.gather(*(one(row) for row in range(2, 12)))

    asyncio.run(main())
    assert all(view[row][0] == "sending" for view, row in zip(seen, range(2, 12), strict=True))
    assert _on_disk(output) == {row: ("scheduled", 1, f"c{row}") for row in range(2, 12)}
    assert (writer.transactions, writer.writes) == (2, 20)


def test_a_row_written_twice_in_one_transaction_ends_with_the_later_write(state: RunState) -> None:
    from loader.state import RowWrite

    state.add_pending([2])
    state.apply([RowWrite(2, "sending"), RowWrite(2, "pending", message="retrying"), RowWrite(2, "sending")])
    row = state.rows()[2]
    assert (row.status, row.attempts) == ("sending", 2)
    with pytest.raises(ValueError, match="not a send status: valid"):
        state.apply([RowWrite(2, "valid")])


def test_a_cancelled_request_does_not_cancel_the_commit_the_others_wait_for(
    state: RunState, output: Path
) -> None:
    import asyncio

    from loader.state import GroupCommit, RowWrite

    state.add_pending([2, 3])
    writer = GroupCommit(state)

    async def main() -> None:
        first = asyncio.create_task(writer.write(RowWrite(2, "scheduled", call_id="c2")))
        second = asyncio.create_task(writer.write(RowWrite(3, "scheduled", call_id="c3")))
        await asyncio.sleep(0)  # both queued
        first.cancel()
        await second
        await asyncio.gather(first, return_exceptions=True)

    asyncio.run(main())
    # Even the cancelled worker's outcome was committed: an acknowledged call is never lost.
    assert _on_disk(output) == {2: ("scheduled", 0, "c2"), 3: ("scheduled", 0, "c3")}


def test_runs_opening_a_new_file_at_the_same_instant_all_get_it(tmp_path: Path) -> None:
    # Two nightly runs starting together on a new --history both switch it to WAL; SQLite
    # answers the loser "database is locked" at once, without waiting. Without the wait in
    # connect(), about one round in ten failed here.
    failures: list[str] = []
    for round_ in range(100):
        path = tmp_path / f"shared-{round_}.sqlite"
        start = threading.Barrier(4)

        def open_and_write(path: Path = path, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                db = connect(path, wait=5)
                try:
                    with write_transaction(db):
                        db.execute("CREATE TABLE IF NOT EXISTS t (x)")
                finally:
                    db.close()
            except Exception as exc:  # any failure is the finding
                failures.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=open_and_write) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


# --- slots: a campaign's calls belong to numbers, not to positions in the sheet ---------------------


def _bound(state: RunState) -> dict[int, tuple[str | None, str, str | None]]:
    return {row: (r.number, r.status, r.call_id) for row, r in state.rows().items()}


def test_rows_moved_inserted_and_deleted_keep_the_calls_of_their_numbers(state: RunState) -> None:
    state.set(batch_id="b1")
    state.bind(
        [Planned(2, "+911", None, True), Planned(3, "+912", None, True), Planned(4, "+913", None, True)],
        one_per_number=True,
    )
    assert {r.slot for r in state.rows().values()} == {2, 3, 4}  # an unedited sheet: slot = row
    for row in (2, 3):
        state.mark_sending(row)
    state.mark(2, "scheduled", call_id="c1")
    state.mark(3, "failed", message="HTTP 400")

    # +913 deleted, +912 moved to the top, a new number inserted where +911 was.
    state.bind(
        [Planned(2, "+912", None, True), Planned(3, "+914", None, True), Planned(5, "+911", None, True)],
        one_per_number=True,
    )
    assert _bound(state) == {
        2: ("+912", "failed", None),
        3: ("+914", "pending", None),
        5: ("+911", "scheduled", "c1"),
    }
    slots = state.slots()
    assert len(slots) == 4 and slots[4].source_row is None and slots[4].number == "+913"
    assert state.rows()[3].slot not in (2, 3, 4)  # a new slot never takes another's id
    assert slots[2].number == "+911"  # its slot, with the campaign the call went into
    batch = state.db.execute("SELECT batch_id FROM rows WHERE slot = 2").fetchone()
    assert batch == ("b1",)


def test_a_number_with_a_call_gets_no_second_slot_without_allow_duplicates(state: RunState) -> None:
    state.bind([Planned(2, "+911", None, True)], one_per_number=True)
    state.mark(2, "scheduled", call_id="c1")
    state.bind([Planned(7, "+911", None, True)], one_per_number=True)
    assert _bound(state) == {7: ("+911", "scheduled", "c1")}
    assert len(state.slots()) == 1


def test_a_row_that_may_not_be_sent_only_shows_a_call_already_made(state: RunState) -> None:
    state.bind([Planned(2, "+911", None, True), Planned(3, "+912", None, True)], one_per_number=True)
    state.mark(2, "scheduled", call_id="c1")
    # Both rows now invalid (say, a time that has passed): +911's call still shows, +912 has none.
    state.bind([Planned(2, "+911", None, False), Planned(3, "+912", None, False)], one_per_number=True)
    assert _bound(state) == {2: ("+911", "scheduled", "c1")}


def test_with_allow_duplicates_rows_take_calls_by_content_then_in_order_and_never_more_than_rows(
    state: RunState,
) -> None:
    state.bind([Planned(2, "+911", "home", True), Planned(3, "+911", "office", True)], one_per_number=False)
    state.mark(2, "scheduled", call_id="c-home")
    state.mark(3, "scheduled", call_id="c-office")
    # Swapped: each keeps its own call.
    state.bind([Planned(2, "+911", "office", True), Planned(3, "+911", "home", True)], one_per_number=False)
    assert _bound(state) == {2: ("+911", "scheduled", "c-office"), 3: ("+911", "scheduled", "c-home")}
    # One edited, one added: the edited row keeps the call left over; only the third row is new.
    state.bind(
        [
            Planned(2, "+911", "office", True),
            Planned(3, "+911", "home, edited", True),
            Planned(4, "+911", "shop", True),
        ],
        one_per_number=False,
    )
    assert _bound(state) == {
        2: ("+911", "scheduled", "c-office"),
        3: ("+911", "scheduled", "c-home"),
        4: ("+911", "pending", None),
    }
    # Fewer rows than calls: nothing new.
    state.bind([Planned(9, "+911", "new text", True)], one_per_number=False)
    assert _bound(state)[9][1] == "scheduled" and len(state.slots()) == 3


def test_calls_from_the_ledger_are_given_to_the_rows_holding_their_numbers(state: RunState) -> None:
    state.bind([Planned(2, "+911", None, True)], one_per_number=True)
    state.mark(2, "scheduled", call_id="c1")
    added = state.import_calls(
        [
            ("+911", "c1", "2030-05-28T10:00:00+00:00", "scheduled", "from a.csv"),  # already known
            ("+912", "c2", "2030-05-28T10:00:00+00:00", "scheduled", "from a.csv"),
            ("+913", None, "2030-05-28T10:00:00+00:00", "uncertain", "claimed by another run"),
        ]
    )
    assert added == 2
    state.bind(
        [Planned(2, "+912", None, True), Planned(3, "+913", None, True), Planned(4, "+911", None, True)],
        one_per_number=True,
    )
    assert _bound(state) == {
        2: ("+912", "scheduled", "c2"),
        3: ("+913", "uncertain", None),
        4: ("+911", "scheduled", "c1"),
    }
    assert state.rows()[2].updated_at == "2030-05-28T10:00:00+00:00"
    assert state.called_numbers() == {"+911", "+912", "+913"}
    # Read again: another run's claim is replaced by what the ledger says now, nothing is doubled.
    assert state.import_calls([("+913", None, "2030-05-28T10:00:00+00:00", "uncertain", "claimed")]) == 1
    assert len(state.slots()) == 3
    # Its claim gone from the ledger (that run found it was not scheduled): so is it here.
    assert state.import_calls([("+912", "c2", "2030-05-28T10:00:00+00:00", "scheduled", "from a.csv")]) == 0
    assert sorted(r.number or "" for r in state.slots().values()) == ["+911", "+912"]


def test_status_counts_only_the_rows_of_the_input_read_last(state: RunState, output: Path) -> None:
    from loader.state import read_status

    state.bind([Planned(2, "+911", None, True), Planned(3, "+912", None, True)], one_per_number=True)
    state.mark(2, "scheduled", call_id="c1")
    state.bind([Planned(2, "+912", None, True)], one_per_number=True)
    assert read_status(output).counts == {"pending": 1}


def test_a_state_of_schema_1_is_read_by_position_until_upgraded_with_its_inputs_numbers(output: Path) -> None:
    with contextlib.closing(sqlite3.connect(state_path(output), isolation_level=None)) as db:
        db.execute("CREATE TABLE run (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO run VALUES ('schema_version', '1'), ('batch_id', 'b1')")
        db.execute(
            "CREATE TABLE rows (source_row INTEGER PRIMARY KEY, status TEXT NOT NULL, attempts INTEGER NOT "
            "NULL DEFAULT 0, call_id TEXT, message TEXT, updated_at TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO rows VALUES (2, 'scheduled', 1, 'c1', NULL, 'x'), (3, 'sending', 1, NULL, NULL, 'x')"
        )
    with RunState(output) as state:
        assert state.legacy and state.legacy_calls() == 2
        state.upgrade({2: "+911", 3: "+912"})
        assert not state.legacy and state.get("schema_version") == "2"
        assert _bound(state) == {2: ("+911", "scheduled", "c1"), 3: ("+912", "sending", None)}
        assert state.db.execute("SELECT DISTINCT batch_id FROM rows").fetchall() == [("b1",)]
        state.bind([Planned(5, "+912", None, True), Planned(6, "+911", None, True)], one_per_number=True)
        assert _bound(state) == {5: ("+912", "sending", None), 6: ("+911", "scheduled", "c1")}
