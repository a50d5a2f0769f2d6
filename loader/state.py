"""Stage 6: what this run has done, kept in SQLite beside the results file.

``<output>.state`` records the input's fingerprint, the campaign's
``batch_id`` and every sent row's status. A row is marked ``sending`` and
committed *before* its request goes out, and its outcome is committed as
soon as the answer arrives; so after a crash (even ``kill -9``) a row is
either known to be scheduled, known not to be, or marked ``sending`` and
therefore treated as ``uncertain``, never silently sent twice.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loader.errors import StateError, cannot_write

SCHEMA_VERSION = "1"
#: Statuses the state keeps; validation outcomes are recomputed from the input each run.
#: ``suppressed`` here is a row refused right before sending (``--history``: another run claimed it).
SEND_STATUSES = ("pending", "sending", "scheduled", "failed", "uncertain", "suppressed")

#: What a row left ``sending`` (its request cut off in flight) is reported with, as ``uncertain``.
IN_FLIGHT_MESSAGE = (
    "the run stopped while this request was in flight; it may or may not have been "
    "scheduled (resend with --retry-uncertain)"
)

#: Where every module of the loader gets "now" from; tests pass their own.
Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
        target, uri = f"{Path(path).resolve().as_uri()}?mode=ro", True
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


def fingerprint(path: Path) -> str:
    """A digest of the input file's bytes: a changed sheet is a different input."""
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


class RunState:
    """The state of one output's run; use as a context manager to hold the lock."""

    def __init__(self, output: Path, *, clock: Clock = utc_now) -> None:
        self.output = output
        self.path = state_path(output)
        self._clock = clock
        self._lock_handle: Any = None
        self._db: sqlite3.Connection | None = None

    # --- opening and locking ---------------------------------------------------

    def __enter__(self) -> RunState:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        lock_path = self.output.with_name(self.output.name + ".lock")
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            handle = lock_path.open("a+")
        except OSError as exc:
            raise cannot_write(f"--output {self.output}", exc) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StateError(
                f"another callkaro-loader run is writing {self.output} right now",
                hint="Wait for it to finish, or give this run a different --output.",
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
                hint="It is the record of which rows were already called: restore it from a backup if you "
                "can; otherwise move it away and load only the rows its results file does not show as "
                "scheduled, with a new --output.",
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
            db.execute(
                "CREATE TABLE IF NOT EXISTS rows ("
                " source_row INTEGER PRIMARY KEY,"
                " status TEXT NOT NULL,"
                " attempts INTEGER NOT NULL DEFAULT 0,"
                " call_id TEXT,"
                " message TEXT,"
                " updated_at TEXT NOT NULL)"
            )
            db.execute(
                "INSERT OR IGNORE INTO run (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with write_transaction(self.db) as db:
            yield db

    def timestamp(self) -> str:
        """Now, as the state writes times (UTC, ISO 8601, to the second)."""
        return self._clock().astimezone(dt.UTC).isoformat(timespec="seconds")

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
        return self.get("fingerprint") is None

    def reset(self) -> None:
        """Forget everything an earlier run recorded (``--fresh``)."""
        with self._transaction() as db:
            db.execute("DELETE FROM rows")
            db.execute("DELETE FROM run WHERE key != 'schema_version'")

    # --- rows ----------------------------------------------------------------------

    def rows(self) -> dict[int, RowState]:
        cursor = self.db.execute(
            "SELECT source_row, status, attempts, call_id, message, updated_at FROM rows"
        )
        return {r[0]: RowState(*r) for r in cursor}

    def add_pending(self, source_rows: Iterable[int]) -> None:
        now = self.timestamp()
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO rows (source_row, status, updated_at) VALUES (?, 'pending', ?)",
                ((int(r), now) for r in source_rows),
            )

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
            for write in writes:
                if write.status == "sending":
                    db.execute(
                        "UPDATE rows SET status = 'sending', attempts = attempts + 1, updated_at = ?"
                        " WHERE source_row = ?",
                        (now, write.source_row),
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
        """This output's identity in a shared ``--history`` (new after ``--fresh``)."""
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
        live = dict(db.execute("SELECT status, count(*) FROM rows GROUP BY status").fetchall())
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
