"""``--history``: a SQLite ledger, shared by runs, of every number the loader scheduled.

One line per call the loader asked for, in table ``calls``::

    number      E.164, as sent                  status    'claimed' or 'scheduled'
    at          when (UTC, ISO 8601)            batch_id  the campaign
    call_id     the API's id, once scheduled    input     the input file
    run         the run that wrote it           source_row  its slot in that run's state
                                                            (its row, unless the sheet was edited)

An entry is ``claimed`` from just before its request is sent until the answer
is known; then it becomes ``scheduled``, or is deleted when the row is known
not to be scheduled (``failed``, or never sent). A row whose answer was lost
(``uncertain``) keeps its claim: the call may exist, so it counts as called.

``--skip-recent DAYS`` suppresses rows whose number has an entry from another
run in the last DAYS days: once up front (``History.recent``, one query per
few hundred numbers), and again right before sending (``Claims.admit``). Two
runs sharing a ledger at the same time therefore never both dial a new number:
each claims its next numbers in one ``BEGIN IMMEDIATE`` transaction that
checks for recent entries and inserts its claims, so whichever run comes
second finds the first one's claim.

Per-row work is batched: rows are claimed a chunk at a time, as the sender
needs them, and the outcomes that arrived meanwhile are written in the same
transaction; ``Claims.finish`` settles the rest in one more. ``run`` is a token
kept in the output's state file, so a resumed run never mistakes its own
claims for another run's.

The ledger is an ordinary SQLite file (WAL mode): ``sqlite3 history.db
'SELECT * FROM calls'`` shows it. Keep it on a local disk; SQLite's locking is
not reliable over network file systems.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loader.errors import StateError, UsageError
from loader.files import check_output
from loader.state import Clock, RowState, connect, utc_now, write_transaction

SCHEMA_VERSION = "1"
#: Numbers per query: well under SQLite's limit on bound parameters.
_CHUNK = 500


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def _utc(text: str) -> dt.datetime:
    """SQLite's ``datetime(at)`` (UTC, ``YYYY-MM-DD HH:MM:SS``) as an aware datetime."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Entry:
    """The latest thing the ledger knows about one number."""

    number: str
    status: str
    at: dt.datetime
    batch_id: str | None
    input: str | None

    def reason(self, timezone: dt.tzinfo) -> str:
        """Why a row with this number is skipped: ``called on 2026-11-20 in campaign X``."""
        day = self.at.astimezone(timezone).date().isoformat()
        campaign = f" in campaign {self.batch_id}" if self.batch_id else ""
        if self.status == "scheduled":
            return f"called on {day}{campaign}"
        return f"claimed on {day}{campaign} by another run, which may have called it"


class History:
    """The ledger at ``path``; use as a context manager.

    ``readonly`` opens an existing ledger without writing (a dry run); a
    missing one then simply has no entries.
    """

    def __init__(self, path: str | Path, *, clock: Clock = utc_now, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._clock = clock
        self._db: sqlite3.Connection | None = None

    def __enter__(self) -> History:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self.path.is_dir():
            raise UsageError(f"--history {self.path} is a folder; give the path of a SQLite file")
        # A device or FIFO: SQLite would wait on the FIFO, or write its header onto the device.
        check_output(self.path, "--history")
        if self.readonly and not self.path.exists():
            return
        if not self.readonly and not self.path.parent.exists():
            # Never create folders: a typo must not silently start an empty ledger.
            raise UsageError(
                f"--history {self.path}: folder {self.path.parent} does not exist",
                hint="Create the folder, or fix the path; the file itself is created on first use.",
            )
        try:
            self._db = db = connect(self.path, readonly=self.readonly, wait=30)
            if not self.readonly:
                self._create()
            db.execute("SELECT count(*) FROM calls LIMIT 1").fetchone()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StateError(
                f"{self.path} is not a history file the loader can read ({exc})",
                hint="Check the --history path; a new history starts with a path that does not exist yet.",
            ) from None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _create(self) -> None:
        with self._transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            db.execute(
                "CREATE TABLE IF NOT EXISTS calls ("
                " number TEXT NOT NULL,"
                " status TEXT NOT NULL CHECK (status IN ('claimed', 'scheduled')),"
                " at TEXT NOT NULL,"
                " batch_id TEXT,"
                " call_id TEXT,"
                " input TEXT,"
                " run TEXT NOT NULL,"
                " source_row INTEGER NOT NULL,"
                " PRIMARY KEY (run, source_row))"
            )
            db.execute("CREATE INDEX IF NOT EXISTS calls_by_number ON calls (number, at)")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE``: the write lock is taken before anything is read."""
        if self._db is None:
            raise RuntimeError("History used before open()")

        def busy(exc: sqlite3.OperationalError) -> Exception:
            return StateError(
                f"{self.path} cannot be written ({exc})",
                hint="Another program has held the history locked for 30 seconds; run the same command "
                "again to resume.",
            )

        with write_transaction(self._db, busy=busy) as db:
            yield db

    # --- reading -------------------------------------------------------------------------

    def recent(
        self, numbers: Iterable[str], *, days: int, exclude_run: str | None = None
    ) -> dict[str, Entry]:
        """The latest entry from the last ``days`` days for each of ``numbers`` that has one."""
        if self._db is None:
            return {}
        return self._recent(self._db, list(dict.fromkeys(numbers)), days=days, exclude_run=exclude_run)

    def _recent(
        self, db: sqlite3.Connection, numbers: Sequence[str], *, days: int, exclude_run: str | None
    ) -> dict[str, Entry]:
        try:
            since = _iso(self._clock() - dt.timedelta(days=days))
        except OverflowError:  # a window longer than the calendar: every entry counts
            since = "0001-01-01T00:00:00+00:00"
        found: dict[str, Entry] = {}
        for start in range(0, len(numbers), _CHUNK):
            chunk = numbers[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            # Instants, not texts: a script may write SQLite's own "2026-11-25 06:30:00" (UTC),
            # which sorts before "2026-11-25T..." as text and would fall outside the window.
            cursor = db.execute(
                "SELECT number, status, datetime(at), batch_id, input FROM calls"
                f" WHERE number IN ({marks}) AND julianday(at) >= julianday(?) AND run != ?"
                " ORDER BY julianday(at)",
                (*chunk, since, exclude_run or ""),
            )
            for number, status, at, batch_id, input_name in cursor:
                found[number] = Entry(number, status, _utc(at), batch_id, input_name)
        return found

    def campaign_calls(
        self, batch_id: str, numbers: Iterable[str], *, exclude_run: str | None = None
    ) -> list[tuple[Entry, str | None]]:
        """Every entry (with its call id) of campaign ``batch_id`` for ``numbers``, oldest first,
        except ``exclude_run``'s: the calls other outputs made into that campaign, whenever."""
        if self._db is None:
            return []
        wanted = list(dict.fromkeys(numbers))
        found: list[tuple[Entry, str | None]] = []
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            cursor = self._db.execute(
                "SELECT number, status, datetime(at), batch_id, input, call_id FROM calls"
                f" WHERE batch_id = ? AND run != ? AND number IN ({','.join('?' * len(chunk))})",
                (batch_id, exclude_run or "", *chunk),
            )
            for number, status, at, batch, input_name, call_id in cursor:
                found.append((Entry(number, status, _utc(at), batch, input_name), call_id))
        return sorted(found, key=lambda pair: pair[0].at)

    # --- writing -------------------------------------------------------------------------

    def claim(
        self,
        rows: Sequence[tuple[int, str]],
        *,
        run: str,
        batch_id: str | None,
        input_name: str,
        days: int | None,
        scheduled: Sequence[tuple[int, str | None, dt.datetime]] = (),
        released: Sequence[int] = (),
    ) -> dict[int, Entry]:
        """Claim ``rows`` (row, number) for ``run``; return the rows refused, with the entry refusing each.

        In the same transaction, first record ``scheduled`` (row, call id,
        when) and ``released`` rows from earlier claims. With ``days``, a
        number another run claimed or scheduled in that many days is refused.
        """
        now = _iso(self._clock())
        with self._transaction() as db:
            self._settle(db, run, scheduled, released)
            refused: dict[int, Entry] = {}
            if days is not None:
                recent = self._recent(db, [n for _, n in rows], days=days, exclude_run=run)
                refused = {row: recent[number] for row, number in rows if number in recent}
            db.executemany(
                "INSERT INTO calls (number, status, at, batch_id, input, run, source_row)"
                " VALUES (?, 'claimed', ?, ?, ?, ?, ?)"
                " ON CONFLICT (run, source_row) DO UPDATE SET"
                " number = excluded.number, at = excluded.at, batch_id = excluded.batch_id"
                " WHERE calls.status = 'claimed'",
                [(number, now, batch_id, input_name, run, row) for row, number in rows if row not in refused],
            )
        return refused

    def settle(
        self,
        run: str,
        scheduled: Sequence[tuple[int, str | None, dt.datetime]] = (),
        released: Sequence[int] = (),
        *,
        insert: Mapping[int, tuple[str, str | None, str]] | None = None,
    ) -> None:
        """Record outcomes of ``run``'s claims in one transaction.

        ``insert`` (row -> number, batch id, input) adds an entry for a
        scheduled row that has none (a run resumed with ``--history`` added).
        """
        with self._transaction() as db:
            self._settle(db, run, scheduled, released, insert=insert)

    @staticmethod
    def _settle(
        db: sqlite3.Connection,
        run: str,
        scheduled: Sequence[tuple[int, str | None, dt.datetime]],
        released: Sequence[int],
        *,
        insert: Mapping[int, tuple[str, str | None, str]] | None = None,
    ) -> None:
        if insert:
            db.executemany(
                "INSERT OR IGNORE INTO calls (number, status, at, batch_id, input, run, source_row)"
                " VALUES (?, 'claimed', ?, ?, ?, ?, ?)",
                [
                    (number, _iso(at), batch_id, input_name, run, row)
                    for (row, _, at) in scheduled
                    if row in insert
                    for number, batch_id, input_name in [insert[row]]
                ],
            )
        db.executemany(
            "UPDATE calls SET status = 'scheduled', call_id = ?, at = ?"
            " WHERE run = ? AND source_row = ? AND status = 'claimed'",
            [(call_id, _iso(at), run, row) for row, call_id, at in scheduled],
        )
        db.executemany(
            "DELETE FROM calls WHERE run = ? AND source_row = ? AND status = 'claimed'",
            [(run, row) for row in released],
        )

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, oldest first (for tests and curious people)."""
        if self._db is None:
            return []
        cursor = self._db.execute(
            "SELECT number, status, at, batch_id, call_id, input, run, source_row FROM calls ORDER BY at"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]


class Claims:
    """One run's use of the ledger: admit rows right before they are sent, then record their outcomes.

    ``admit`` is ``loader.send.send_calls``'s ``admit`` hook; ``outcome`` and
    ``retry`` implement its ``Events`` protocol, so outcomes are learnt as
    they arrive and written with the next claims, in the same transaction.
    """

    def __init__(
        self,
        history: History,
        *,
        run: str,
        input_name: str,
        numbers: Mapping[int, str],
        days: int | None,
        timezone: dt.tzinfo,
        clock: Clock = utc_now,
    ) -> None:
        self.history = history
        self.run = run
        self.input_name = input_name
        self.numbers = numbers
        self.days = days
        self.timezone = timezone
        self.batch_id: str | None = None
        self._clock = clock
        self._scheduled: list[tuple[int, str | None, dt.datetime]] = []
        self._released: list[int] = []
        self._claimed: set[int] = set()
        self._reported: set[int] = set()

    def admit(self, rows: list[int]) -> dict[int, str]:
        """Claim ``rows`` before they are sent; the refused ones, each with why."""
        refused = self.history.claim(
            [(row, self.numbers[row]) for row in rows],
            run=self.run,
            batch_id=self.batch_id,
            input_name=self.input_name,
            days=self.days,
            scheduled=self._scheduled,
            released=self._released,
        )
        self._scheduled, self._released = [], []
        self._claimed.update(row for row in rows if row not in refused)
        return {row: entry.reason(self.timezone) for row, entry in refused.items()}

    def outcome(
        self, source_row: int, status: str, *, call_id: str | None, message: str | None, attempts: int
    ) -> None:
        self._reported.add(source_row)
        if status == "scheduled":
            self._scheduled.append((source_row, call_id, self._clock()))
        elif status in ("failed", "pending", "invalid"):  # invalid: expired before it was sent
            self._released.append(source_row)
        # uncertain: the call may exist, so the claim stays.

    def retry(self, source_row: int, *, attempt: int, delay: float, reason: str) -> None:
        pass

    def finish(self, recorded: Mapping[int, RowState], *, resumed: bool = False) -> None:
        """Write the outcomes not written yet, and release rows claimed but never sent, in one transaction.

        ``resumed``: also settle, from the state, every row an earlier
        attempt of this run may have left claimed (it was killed before
        writing its outcomes, or ran without ``--history``).
        """
        if not resumed:
            unsent = [row for row in self._claimed - self._reported if _released(recorded.get(row))]
            self.history.settle(self.run, self._scheduled, [*self._released, *unsent])
            self._scheduled, self._released = [], []
            return
        scheduled: list[tuple[int, str | None, dt.datetime]] = []
        released: list[int] = []
        insert: dict[int, tuple[str, str | None, str]] = {}
        for row, record in recorded.items():
            if record.status == "scheduled":
                at = dt.datetime.fromisoformat(record.updated_at)
                scheduled.append((row, record.call_id, at))
                if row in self.numbers:
                    insert[row] = (self.numbers[row], self.batch_id, self.input_name)
            elif _released(record):
                released.append(row)
        self._scheduled, self._released = [], []
        self.history.settle(self.run, scheduled, released, insert=insert)


def _released(record: RowState | None) -> bool:
    """True when the state says the row's call does not exist, so its claim can go."""
    return record is None or record.status in ("pending", "failed", "suppressed", "invalid")
