"""Stage 6: what this output's campaign has done, kept in SQLite beside the results file.

``<output>.state`` records the campaign's ``batch_id`` and every number
(E.164) the campaign was asked to call, with its status, call id and time:
one line (a *slot*) per call. A slot is marked ``sending`` and committed
*before* its request goes out, and its outcome is committed as soon as the
answer arrives; so after a crash (even ``kill -9``) a call is either known
to be scheduled, known not to be, or marked ``sending`` and therefore
treated as ``uncertain``, never silently sent twice.

Slots belong to numbers, not to positions in the sheet: each run binds the
rows of the input it reads (edited, reordered, or another file) to the slots
of their numbers (``RunState.bind``), so a number the campaign already
called is reported with that call instead of being sent again; with
``--allow-duplicates``, at most once per row holding it, rows matched by
their content first.

A second process on the same output is kept out by an advisory lock on
``<output>.lock`` that the operating system releases when the holder dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from loader.errors import StateError, UsageError, cannot_write

SCHEMA_VERSION = "2"
#: Slot statuses that mean the API may have the call: never sent again without being asked.
CALLED = ("scheduled", "uncertain", "sending")
#: Statuses the state keeps; validation outcomes are recomputed from the input each run.
#: ``suppressed`` here is a row refused right before sending (the call ledger: another run claimed it);
#: ``invalid``, a row whose ``schedule_at`` passed before its request could leave.
SEND_STATUSES = ("pending", "sending", "scheduled", "failed", "uncertain", "suppressed", "invalid")

#: What a row left ``sending`` (its request cut off in flight) is reported with, as ``uncertain``.
IN_FLIGHT_MESSAGE = (
    "the run stopped while this request was in flight; it may or may not have been "
    "scheduled (check the campaign: --retry-uncertain resends it, calling the person twice if it was)"
)

#: Where every module of the loader gets "now" from; tests pass their own.
Clock = Callable[[], dt.datetime]


#: For the test suite only, never for users: an ISO 8601 instant the clock starts from (it then
#: moves on as real time does), so that tests judging sample dates do not depend on the day they
#: run. The CLI started by a test inherits it.
TEST_NOW_VAR = "CALLKARO_TEST_NOW"


def utc_now() -> dt.datetime:
    real = dt.datetime.now(dt.UTC)
    start = os.environ.get(TEST_NOW_VAR)
    if not start:
        return real
    # How far the test clock is from the real one: fixed when it is first asked for.
    if start not in _TEST_OFFSETS:
        try:
            _TEST_OFFSETS[start] = dt.datetime.fromisoformat(start).astimezone(dt.UTC) - real
        except ValueError:
            raise UsageError(
                f"{TEST_NOW_VAR} is set to {start!r}, which is not an ISO 8601 date and time",
                hint=f"It is the test suite's clock, never a user's: unset {TEST_NOW_VAR}.",
            ) from None
    return real + _TEST_OFFSETS[start]


_TEST_OFFSETS: dict[str, dt.timedelta] = {}


def iso_utc(moment: dt.datetime) -> str:
    """``moment`` as the state and the call ledger write times: UTC, ISO 8601, to the second."""
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def write_transaction(
    db: sqlite3.Connection, *, busy: Callable[[sqlite3.OperationalError], Exception] | None = None
) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock is taken before anything is read,
    and anything raised inside rolls back. Shared by the state and the history; ``busy``
    turns a lock that could not be had into the caller's own error."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if busy is None:
            raise
        raise busy(exc) from None
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    else:
        db.execute("COMMIT")


def connect(path: str | Path, *, readonly: bool = False, wait: float = 5.0) -> sqlite3.Connection:
    """A connection for ``write_transaction``'s explicit transactions, shared by the state and the history.

    It waits up to ``wait`` seconds for a lock another connection holds.
    ``readonly`` opens an existing file without writing to it; otherwise the
    file is created if missing and put in WAL mode with ``synchronous=NORMAL``,
    which survives a killed process (only a power cut can lose the last commit).
    """
    if readonly:
        target, uri = readonly_uri(Path(path)), True
    else:
        target, uri = str(path), False
    db = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False, timeout=wait)
    if not readonly:
        try:
            _set_wal(db, wait)
            db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
    return db


def readonly_uri(path: Path) -> str:
    """The URI that opens ``path`` read-only and leaves no file beside it.

    A read-only connection to a WAL database otherwise creates its ``-shm`` and ``-wal`` files
    (and cannot remove them): a preview would leave files beside a ledger or state it promised
    not to touch. Without a ``-wal`` file no writer has pages outside the database, so it is read
    as it is (``immutable``); with one (a run going on, or killed), SQLite must read that file too.
    """
    uri = f"{path.resolve().as_uri()}?mode=ro"
    return uri if Path(f"{path}-wal").exists() else f"{uri}&immutable=1"


def _set_wal(db: sqlite3.Connection, wait: float) -> None:
    """Put the file in WAL mode, waiting for a lock as every other statement does.

    SQLite answers "database is locked" at once, without its busy handler,
    when another connection is creating the same file or switching it to WAL:
    two nightly runs that start together on a new --history hit exactly that.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def state_path(output: Path) -> Path:
    return output.with_name(output.name + ".state")


def lock_path(output: Path) -> Path:
    return output.with_name(output.name + ".lock")


def fingerprint(path: Path) -> str:
    """A digest of the input file's bytes: an old state's rows by position hold only for the same bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class RowWrite:
    """One change to a row: ``sending`` (an attempt starts) or an outcome."""

    source_row: int
    status: str
    call_id: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class RowState:
    source_row: int
    status: str
    attempts: int
    call_id: str | None
    message: str | None
    updated_at: str
    #: The slot's own id, stable across edits of the input (the call ledger keeps entries by it).
    slot: int | None = None
    number: str | None = None


class Planned(NamedTuple):
    """A row of this run's input that holds a number: what ``RunState.bind`` matches to slots."""

    source_row: int
    number: str
    #: A digest of the row's cells (``--allow-duplicates`` only: which of a number's rows it is).
    content: str | None
    #: ``valid``: it may be sent. Other rows (invalid, suppressed) only show a call already made.
    sendable: bool


_CREATE_ROWS = (
    "CREATE TABLE rows ("
    " slot INTEGER PRIMARY KEY,"
    " source_row INTEGER UNIQUE,"  # the row of this run's input holding it; NULL: none does
    " number TEXT,"
    " content TEXT,"
    " batch_id TEXT,"
    " status TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " call_id TEXT,"
    " message TEXT,"
    " updated_at TEXT NOT NULL,"
    " imported INTEGER NOT NULL DEFAULT 0)"  # 1: a call another output made, read from the ledger
)

#: The columns of a slot, as ``RowState`` takes them.
_ROW_COLUMNS = "source_row, status, attempts, call_id, message, updated_at, slot, number"


class RunState:
    """The state of one output's run; use as a context manager to hold the lock."""

    def __init__(self, output: Path, *, clock: Clock = utc_now, preview: bool = False) -> None:
        self.output = output
        self.path = state_path(output)
        self._clock = clock
        #: A copy in memory of the state as it is (empty when there is none): ``validate`` and
        #: ``--dry-run`` plan on it exactly as a run would, and nothing reaches the file or its folder.
        self.preview = preview
        self._lock_handle: Any = None
        self._db: sqlite3.Connection | None = None
        #: Written by a loader that kept rows by position (schema 1): see ``upgrade``.
        self.legacy = False

    # --- opening and locking ---------------------------------------------------

    def __enter__(self) -> RunState:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self.preview:
            self._open_copy()
            return
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            handle = lock_path(self.output).open("a+")
        except OSError as exc:
            raise cannot_write(f"--output {self.output}", exc) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StateError(
                f"another callkaro-loader run is writing {self.output} right now",
                hint="Wait for it to finish, then run the same command again (a different --output would "
                "start a new campaign, calling again anyone this one has called).",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle
        try:
            self._db = connect(self.path)
            self._create()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StateError(
                f"{self.path} is not a state file the loader can read ({exc})",
                hint="It is the record of which numbers were already called: restore it from a backup if "
                "you can; otherwise move it away and load, with a new --output, only the rows its results "
                "file shows as neither scheduled nor uncertain (any other row would be called again).",
            ) from None

    def _open_copy(self) -> None:
        """The preview's state: the file copied into memory, read without taking its lock."""
        self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        try:
            if self.path.exists():
                source = connect(self.path, readonly=True)
                try:
                    source.backup(self._db)
                finally:
                    source.close()
            self._create()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StateError(
                f"{self.path} is not a state file the loader can read ({exc})",
                hint="It is the record of which numbers were already called: restore it from a backup if "
                "you can before running.",
            ) from None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("RunState used before open()")
        return self._db

    def _create(self) -> None:
        with self._transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'rows'").fetchone() is None:
                db.execute(_CREATE_ROWS)
                db.execute("INSERT OR REPLACE INTO run VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            db.execute(
                "INSERT OR IGNORE INTO run (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
            )
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(rows)")}
        self.legacy = "slot" not in columns

    def upgrade(self, numbers: Mapping[int, str]) -> None:
        """Bring a schema-1 state (rows by position) to slots, ``numbers`` giving each row's number.

        Only right when ``numbers`` come from the very input those rows were
        sent from (same fingerprint), or when none of them was called.
        """
        with self._transaction() as db:
            db.execute("ALTER TABLE rows RENAME TO rows_v1")
            db.execute(_CREATE_ROWS)
            db.execute(
                "INSERT INTO rows (slot, source_row, status, attempts, call_id, message, updated_at)"
                " SELECT source_row, source_row, status, attempts, call_id, message, updated_at FROM rows_v1"
            )
            db.executemany(
                "UPDATE rows SET number = ? WHERE slot = ?", [(n, int(r)) for r, n in numbers.items()]
            )
            db.execute("UPDATE rows SET batch_id = (SELECT value FROM run WHERE key = 'batch_id')")
            db.execute("DROP TABLE rows_v1")
            db.execute("INSERT OR REPLACE INTO run VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        self.legacy = False

    def legacy_calls(self) -> int:
        """How many rows of a schema-1 state the API may have a call for."""
        marks = ",".join("?" * len(CALLED))
        (count,) = self.db.execute(f"SELECT count(*) FROM rows WHERE status IN ({marks})", CALLED).fetchone()
        return int(count)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with write_transaction(self.db) as db:
            yield db

    def timestamp(self) -> str:
        """Now, as the state writes times (see ``iso_utc``)."""
        return iso_utc(self._clock())

    # --- the run as a whole ------------------------------------------------------

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM run WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, **values: str | None) -> None:
        with self._transaction() as db:
            for key, value in values.items():
                if value is None:
                    db.execute("DELETE FROM run WHERE key = ?", (key,))
                else:
                    db.execute("INSERT OR REPLACE INTO run (key, value) VALUES (?, ?)", (key, value))
            db.execute(
                "INSERT OR REPLACE INTO run (key, value) VALUES ('updated_at', ?)", (self.timestamp(),)
            )

    def is_new(self) -> bool:
        """Nothing recorded yet (or since ``reset``)."""
        recorded = self.db.execute("SELECT 1 FROM run WHERE key != 'schema_version' LIMIT 1").fetchone()
        return recorded is None and self.db.execute("SELECT 1 FROM rows LIMIT 1").fetchone() is None

    def reset(self) -> None:
        """Forget everything an earlier run recorded (``--fresh``)."""
        with self._transaction() as db:
            db.execute("DELETE FROM rows")
            db.execute("DELETE FROM run WHERE key != 'schema_version'")

    # --- rows ----------------------------------------------------------------------

    def rows(self) -> dict[int, RowState]:
        """The slots bound to rows of this run's input, by ``source_row``."""
        if self.legacy:
            cursor = self.db.execute(
                "SELECT source_row, status, attempts, call_id, message, updated_at FROM rows"
            )
        else:
            cursor = self.db.execute(f"SELECT {_ROW_COLUMNS} FROM rows WHERE source_row IS NOT NULL")
        return {r[0]: RowState(*r) for r in cursor}

    def slots(self) -> dict[int, RowState]:
        """Every slot, bound to a row or not, by slot id."""
        return {r[6]: RowState(*r) for r in self.db.execute(f"SELECT {_ROW_COLUMNS} FROM rows")}

    def imported(self) -> frozenset[int]:
        """The slots of calls another output made (``import_calls``): the ledger has them already."""
        return frozenset(slot for (slot,) in self.db.execute("SELECT slot FROM rows WHERE imported = 1"))

    def called_numbers(self) -> frozenset[str]:
        """Every number the API may have a call for from this campaign (``--fresh`` counts them)."""
        marks = ",".join("?" * len(CALLED))
        cursor = self.db.execute(
            f"SELECT DISTINCT number FROM rows WHERE number IS NOT NULL AND status IN ({marks})", CALLED
        )
        return frozenset(str(n) for (n,) in cursor)

    def add_pending(self, source_rows: Iterable[int]) -> None:
        """Slots for ``source_rows`` (each its own, numbered as the row) unless they have one."""
        now = self.timestamp()
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO rows (slot, source_row, status, updated_at)"
                " VALUES (?, ?, 'pending', ?)",
                ((int(r), int(r), now) for r in source_rows),
            )

    def bind(self, plan: Sequence[Planned], *, one_per_number: bool) -> None:
        """Bind this run's rows to the slots of their numbers; a sendable row without one gets a new slot.

        A number's rows take its slots content first (the same row, moved or
        not), then in order, calls made before anything else: so a row is
        never given a new call while its number has a call no row holds.
        ``one_per_number`` (the default, no ``--allow-duplicates``): a number
        that has any slot gets no new one.
        """
        now = self.timestamp()
        with self._transaction() as db:
            (top,) = db.execute("SELECT max(slot) FROM rows").fetchone()
            known: dict[str, list[tuple[int, str | None, str]]] = {}
            held: dict[int, int] = {}  # slot -> the row holding it now
            cursor = db.execute("SELECT slot, number, content, status, source_row FROM rows")
            for slot, number, content, status, source_row in cursor:
                if number is not None:
                    known.setdefault(number, []).append((slot, content, status))
                if source_row is not None:
                    held[slot] = source_row
            bound, new = _pair(plan, known, one_per_number=one_per_number)
            # Only what changed is written: running an unedited sheet again rewrites nothing.
            wanted = {slot: row for row, slot in bound}
            db.executemany(
                "UPDATE rows SET source_row = NULL WHERE slot = ?",
                [(slot,) for slot, row in held.items() if wanted.get(slot) != row],
            )
            db.executemany(
                "UPDATE rows SET source_row = ? WHERE slot = ?",
                [(row, slot) for slot, row in wanted.items() if held.get(slot) != row],
            )
            db.executemany(
                "INSERT INTO rows (slot, source_row, number, content, status, updated_at)"
                " VALUES (?, ?, ?, ?, 'pending', ?)",
                [
                    (slot, row.source_row, row.number, row.content, now)
                    for slot, row in _new_slots(db, new, top)
                ],
            )

    def import_calls(self, calls: Iterable[tuple[str, str | None, str, str, str]]) -> int:
        """Record calls another output made into this campaign (number, call id, when, status, message).

        Read from the call ledger; they become slots no row holds yet, so
        ``bind`` gives them to the rows holding their numbers instead of new
        calls. A call id already recorded is skipped. Returns how many were added.
        """
        with self._transaction() as db:
            # Another run's claims (no call id yet, never sent from here) are read afresh each time:
            # by now it may have scheduled them (then they come back with their call id) or not.
            db.execute("DELETE FROM rows WHERE imported = 1 AND call_id IS NULL AND attempts = 0")
            have = {c for (c,) in db.execute("SELECT call_id FROM rows WHERE call_id IS NOT NULL")}
            (top,) = db.execute("SELECT max(slot) FROM rows").fetchone()
            slot = int(top or 0)
            values = []
            for number, call_id, at, status, message in calls:
                if call_id is not None and call_id in have:
                    continue
                slot += 1
                values.append((slot, number, status, call_id, message, at))
            db.executemany(
                "INSERT INTO rows (slot, number, status, call_id, message, updated_at, imported, batch_id)"
                " VALUES (?, ?, ?, ?, ?, ?, 1, (SELECT value FROM run WHERE key = 'batch_id'))",
                values,
            )
        return len(values)

    def mark_sending(self, source_row: int) -> None:
        """Committed before the request leaves, so a crash can never hide a sent request."""
        self.apply([RowWrite(source_row, "sending")])

    def mark(
        self, source_row: int, status: str, *, call_id: str | None = None, message: str | None = None
    ) -> None:
        self.apply([RowWrite(source_row, status, call_id, message)])

    def apply(self, writes: Sequence[RowWrite]) -> None:
        """Commit ``writes`` in order, in one transaction (``sending`` also counts an attempt)."""
        for write in writes:
            if write.status not in SEND_STATUSES:
                raise ValueError(f"not a send status: {write.status}")
        now = self.timestamp()
        with self._transaction() as db:
            # The campaign a call goes into is recorded with it.
            batch_id = self.get("batch_id") if any(w.status == "sending" for w in writes) else None
            for write in writes:
                if write.status == "sending":
                    db.execute(
                        "UPDATE rows SET status = 'sending', attempts = attempts + 1, updated_at = ?,"
                        " batch_id = ? WHERE source_row = ?",
                        (now, batch_id, write.source_row),
                    )
                else:
                    db.execute(
                        "UPDATE rows SET status = ?, call_id = ?, message = ?, updated_at = ?"
                        " WHERE source_row = ?",
                        (write.status, write.call_id, write.message, now, write.source_row),
                    )

    def requeue_suppressed(self) -> None:
        """Rows refused at sending time by an earlier attempt are looked at afresh."""
        with self._transaction() as db:
            db.execute(
                "UPDATE rows SET status = 'pending', message = NULL, updated_at = ?"
                " WHERE status = 'suppressed'",
                (self.timestamp(),),
            )

    def run_token(self) -> str:
        """This output's identity in the shared call ledger (new after ``--fresh``)."""
        token = self.get("run_token")
        if token is None:
            token = uuid.uuid4().hex
            self.set(run_token=token)
        return token

    def recover_interrupted(self) -> int:
        """Rows left ``sending`` by a run that died: their requests may have arrived."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE rows SET status = 'uncertain', message = ?, updated_at = ? WHERE status = 'sending'",
                (IN_FLIGHT_MESSAGE, self.timestamp()),
            )
            return cursor.rowcount


def _pair(
    plan: Sequence[Planned], known: Mapping[str, list[tuple[int, str | None, str]]], *, one_per_number: bool
) -> tuple[list[tuple[int, int]], list[Planned]]:
    """(source_row, slot) pairs for ``plan``'s rows, and the sendable rows that need a new slot."""
    bound: list[tuple[int, int]] = []
    new: list[Planned] = []
    if one_per_number:
        # Validation leaves one row per number: a number's rows need no grouping.
        for row in plan:
            slots = known.get(row.number)
            if slots is None:
                if row.sendable:
                    new.append(row)
            elif len(slots) == 1:
                if row.sendable or slots[0][2] in CALLED:
                    bound.append((row.source_row, slots[0][0]))
            else:
                bound.extend(_match([row], slots)[0])
        return bound, new
    groups: dict[str, list[Planned]] = {}
    for row in plan:
        groups.setdefault(row.number, []).append(row)
    for number, rows in groups.items():
        pairs, unmatched = _match(rows, known.get(number, []))
        bound.extend(pairs)
        new.extend(row for row in unmatched if row.sendable)
    return bound, new


def _new_slots(db: sqlite3.Connection, new: list[Planned], top: int | None) -> Iterator[tuple[int, Planned]]:
    """Ids for ``new`` slots: each row's own number when that is free (so an unedited sheet's ledger
    entries name their rows), otherwise after every slot and row number there is."""
    if top is None:  # a new state: every id is free
        yield from ((row.source_row, row) for row in new)
        return
    existing = {slot for (slot,) in db.execute("SELECT slot FROM rows")}
    after = max([top, *(row.source_row for row in new)]) + 1
    for row in new:
        if row.source_row in existing:
            slot, after = after, after + 1
        else:
            slot = row.source_row
        existing.add(slot)
        yield slot, row


def _match(
    rows: Sequence[Planned], slots: Sequence[tuple[int, str | None, str]]
) -> tuple[list[tuple[int, int]], list[Planned]]:
    """Pair one number's rows with its slots (slot, content, status): (source_row, slot) pairs, and
    the rows left over. A row that may not be sent only takes a slot whose call may exist."""
    rank = {"scheduled": 0, "sending": 1, "uncertain": 1}
    free = sorted(slots, key=lambda s: (rank.get(s[2], 2), s[0]))
    pairs: list[tuple[int, int]] = []
    left: list[Planned] = []

    def take(row: Planned, same_content: bool) -> bool:
        for i, (slot, content, status) in enumerate(free):
            if same_content and (content is None or content != row.content):
                continue
            if row.sendable or status in CALLED:
                pairs.append((row.source_row, slot))
                del free[i]
                return True
        return False

    for row in rows:
        if row.content is None or not take(row, same_content=True):
            left.append(row)
    # Rows that may be sent first: a call already made counts for them before a new one is made.
    ordered = sorted(left, key=lambda r: not r.sendable)
    return pairs, [row for row in ordered if not take(row, same_content=False)]


# --- reading another run's state (``callkaro-loader status``) -----------------------------


@dataclass(frozen=True)
class RunStatus:
    """Where the run for one output stands, read from its state without taking its lock."""

    state_file: Path
    input: str | None
    batch_id: str | None
    campaign_name: str | None
    counts: dict[str, int]
    #: The last run finished and wrote its results; otherwise it is running, or was stopped or killed.
    finished: bool
    started_at: str | None
    finished_at: str | None
    last_activity: str | None
    results_path: str | None
    #: The last run ended early: Ctrl-C or SIGTERM (``stopped``), or the API's refusal of it (``refused``).
    stopped: bool = False
    refused: str | None = None
    #: The last run found the API unavailable (exit 4): why; its rows not sent are ``pending``.
    unavailable: str | None = None
    #: The call ledger the last run used (``None``: none, e.g. ``--no-history`` or ``--sandbox``).
    ledger: str | None = None


def read_status(output: str | Path) -> RunStatus:
    """Read ``<output>.state`` read-only (``output`` may also name the ``.state`` file itself).

    Counts are those of the last finished run (exactly its results file's),
    or, while a run is going or after one died, the rows it has recorded so
    far (``sending``: in flight, or cut off). A missing state file is a
    ``StateError``; nothing is ever created.
    """
    output = Path(output)
    give = "Give the results file of a run (its --output); its state sits beside it as <output>.state."
    if output.is_dir():
        raise StateError(f"{output} is a folder, not the results file of a run", hint=give)
    path = output if output.suffix == ".state" and output.is_file() else state_path(output)
    if not path.is_file():
        guess = output.with_name(f"{output.stem}.results.csv")
        hint = (
            f"Did you mean {guess}? Give the results file (the run's --output), not the input."
            if state_path(guess).is_file()
            else give
        )
        raise StateError(f"no run state for {output}: {path} does not exist", hint=hint)
    try:
        db = connect(path, readonly=True)
    except sqlite3.Error as exc:
        raise StateError(f"{path} cannot be opened ({exc})") from None
    try:
        run = dict(db.execute("SELECT key, value FROM run").fetchall())
        live = dict(
            db.execute(
                "SELECT status, count(*) FROM rows WHERE source_row IS NOT NULL GROUP BY status"
            ).fetchall()
        )
        (last_row,) = db.execute("SELECT max(updated_at) FROM rows").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path} is not a state file the loader can read ({exc})") from None
    finally:
        db.close()
    last_activity = max(filter(None, [run.get("updated_at"), last_row]), default=None)
    summary = json.loads(run["summary"]) if run.get("summary") else None
    finished = summary is not None and (last_row is None or last_row <= summary["finished_at"])
    if summary is not None and finished:
        counts = {str(k): int(v) for k, v in summary["counts"].items()}
    else:
        counts = {str(k): int(v) for k, v in json.loads(run.get("unsent_counts") or "{}").items()}
        for status, count in live.items():
            counts[status] = counts.get(status, 0) + int(count)
    return RunStatus(
        state_file=path,
        input=run.get("input"),
        batch_id=run.get("batch_id"),
        campaign_name=run.get("campaign_name"),
        counts={k: v for k, v in counts.items() if v},
        finished=finished,
        started_at=run.get("started_at"),
        finished_at=summary["finished_at"] if summary else None,
        last_activity=last_activity,
        results_path=summary.get("results_path") if summary else None,
        stopped=bool(summary.get("stopped")) if summary and finished else False,
        refused=summary.get("refused") if summary and finished else None,
        unavailable=summary.get("unavailable") if summary and finished else None,
        ledger=run.get("ledger"),
    )


class GroupCommit:
    """Row writes from many concurrent requests, committed together, in the order they were made.

    ``await writer.write(...)`` returns once the write is committed, so the
    promise of ``RunState`` holds unchanged: a row is ``sending`` on disk before
    its request leaves, and its outcome is on disk before its worker moves on.
    What changes is the cost: every write queued during one turn of the event
    loop (the answers that arrived together, the requests about to leave
    together) shares one transaction, flushed at the end of that turn, so no
    write ever waits for a timer and bookkeeping never limits throughput.
    """

    def __init__(self, state: RunState) -> None:
        self._state = state
        self._queue: list[RowWrite] = []
        self._committed: asyncio.Future[None] | None = None
        self.transactions = 0
        self.writes = 0

    async def write(self, change: RowWrite) -> None:
        if change.status not in SEND_STATUSES:
            raise ValueError(f"not a send status: {change.status}")
        self._queue.append(change)
        committed = self._committed
        if committed is None:
            loop = asyncio.get_running_loop()
            committed = self._committed = loop.create_future()
            # Nobody may be left to read a failure (every waiter cancelled); read it here too.
            committed.add_done_callback(lambda f: f.cancelled() or f.exception())
            loop.call_soon(self._flush)
        # Shielded: one cancelled worker must not cancel the commit the others wait for.
        await asyncio.shield(committed)

    def _flush(self) -> None:
        writes, self._queue = self._queue, []
        committed, self._committed = self._committed, None
        assert committed is not None
        try:
            self._state.apply(writes)
        except Exception as exc:
            committed.set_exception(exc)
        else:
            self.transactions += 1
            self.writes += len(writes)
            committed.set_result(None)
