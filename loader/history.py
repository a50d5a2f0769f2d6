"""The call ledger: a SQLite file, shared by runs, of every number the loader scheduled.

It is on by default: ``--history PATH``, else ``$CALLKARO_HISTORY``, else a
per-user file in the platform's user state folder (``default_ledger``);
``--no-history`` turns it off, and the in-process ``--sandbox`` (an API that
forgets its calls) keeps none unless ``--history`` is given.

One line per call the loader asked for, in table ``calls``::

    number      E.164, as sent                  status    'claimed' or 'scheduled'
    at          when (UTC, ISO 8601)            batch_id  the campaign
    call_id     the API's id, once scheduled    input     the input file
    run         the run that wrote it           source_row  its slot in that run's state
                                                            (its row, unless the sheet was edited)
    base_url    the API the call went to (NULL in a ledger from before it was kept: counts for every API)

Only calls to the same API count (a test server's calls never block real
ones). Times are compared as instants (SQLite's ``julianday``), so an entry
written ``2026-11-25 06:30:00`` by another tool counts as that moment (UTC).

The file says what it is (``PRAGMA application_id``, ``user_version`` and
table ``meta``): a path that does not exist yet becomes a new ledger, a ledger
of the previous schema gains the ``base_url`` column, and anything else (an
empty file, a damaged one, another application's database) is refused before
anything is sent, with nothing written into it.

An entry is ``claimed`` from just before its request is sent until the answer
is known; then it becomes ``scheduled``, or is deleted when the row is known
not to be scheduled (``failed``, or never sent). A row whose answer was lost
(``uncertain``) keeps its claim: the call may exist, so it counts as called.

``--skip-recent DAYS`` (default 1; ``all``: ever) suppresses rows whose number
has an entry from another run in the last DAYS days: once up front (``History.recent``, one query per
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
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from loader.errors import InputFileError, StateError, UsageError
from loader.files import check_output, open_regular
from loader.options import Window
from loader.state import Clock, RowState, connect, iso_utc, readonly_uri, utc_now, write_transaction

SCHEMA_VERSION = 2
#: ``PRAGMA application_id`` of a ledger: "CKLG". A file without it is not the loader's.
APPLICATION_ID = 0x434B4C47
APPLICATION = "callkaro-loader call ledger"
#: The environment variable naming the ledger when ``--history`` is not given.
HISTORY_ENV = "CALLKARO_HISTORY"
#: Numbers per query: well under SQLite's limit on bound parameters.
_CHUNK = 500
_SQLITE_HEADER = b"SQLite format 3\x00"
_HINT = (
    "Give --history the loader's own ledger, or a path that does not exist yet for a new one (it "
    "knows none of the calls recorded elsewhere: those numbers may be called again)."
)


#: Where an entry whose time cannot be read sorts: first.
_UNKNOWN_TIME = dt.datetime.min.replace(tzinfo=dt.UTC)


def _instant(text: str) -> dt.datetime | None:
    """An entry's time; one written without an offset (SQLite's ``datetime()``) is UTC."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def api_of(base_url: str) -> str:
    """The API a base URL names, as the ledger keys it: case and a trailing slash do not matter."""
    parts = urlsplit(base_url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def default_ledger() -> Path:
    """The per-user ledger: ``ledger.sqlite`` in the platform's user state folder."""
    return platformdirs.user_state_path("callkaro-loader") / "ledger.sqlite"


def choose_ledger(history: str | Path | None, *, no_history: bool, sandbox: bool) -> tuple[Path | None, bool]:
    """The ledger a run uses, and whether it is the per-user default (whose folder may be created).

    ``--history``, else ``$CALLKARO_HISTORY``, else the default; none with
    ``--no-history``, nor for the in-process sandbox unless ``--history`` names one.
    """
    if no_history:
        return None, False
    if history is not None:
        return Path(history), False
    if sandbox:
        return None, False  # an API that forgets its calls: remembering them would only mislead
    from_env = os.environ.get(HISTORY_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser(), False
    return default_ledger(), True


@dataclass(frozen=True)
class Entry:
    """The latest thing the ledger knows about one number."""

    number: str
    status: str
    at: dt.datetime | None
    batch_id: str | None
    input: str | None

    def reason(self, timezone: dt.tzinfo) -> str:
        """Why a row with this number is skipped: ``called on 2026-11-20 in campaign X (...)``."""
        day = self.at.astimezone(timezone).date().isoformat() if self.at else "an unknown date"
        campaign = f" in campaign {self.batch_id}" if self.batch_id else ""
        if self.status == "scheduled":
            return f"called on {day}{campaign} (to call it again, run with --skip-recent 0)"
        return f"claimed on {day}{campaign} by another run, which may have called it"


class History:
    """The ledger at ``path``; use as a context manager.

    ``readonly`` opens an existing ledger without writing (a dry run); a
    missing one then simply has no entries. ``api`` (a base URL): only calls
    to it count, and new entries record it; ``None`` counts every call.
    ``make_folder``: create a missing folder (the per-user default's).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = utc_now,
        readonly: bool = False,
        api: str | None = None,
        make_folder: bool = False,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.api = api_of(api) if api is not None else None
        self._clock = clock
        self._make_folder = make_folder
        self._db: sqlite3.Connection | None = None
        #: False for a ledger of the previous schema read by a dry run (no ``base_url`` column).
        self._has_api = True

    def __enter__(self) -> History:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self.path.is_dir():
            raise UsageError(f"--history {self.path} is a folder; give the path of a SQLite file")
        # The ledger is an output too: a device, a FIFO (SQLite would write its header or journal
        # there, or wait) or a dangling symlink (SQLite would create its target) is refused as any
        # output is, before ``_inspect`` reads a byte.
        check_output(self.path, "--history")
        # A preview (read-only) of a given path in a missing folder is refused as the run would be.
        if self.readonly and not self.path.exists() and (self._make_folder or self.path.parent.exists()):
            return
        if not self.path.parent.exists():
            if self._make_folder and not self.readonly:
                # Only the per-user default's folder: it holds phone numbers, so it is the user's alone.
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                except OSError as exc:
                    raise UsageError(
                        f"the call ledger's folder {self.path.parent} cannot be made ({exc.strerror or exc})",
                        hint="Give the ledger a path with --history (or CALLKARO_HISTORY) in a folder this "
                        "user can write.",
                    ) from None
            else:
                # Never create folders for a given path: a typo must not silently start an empty ledger.
                raise UsageError(
                    f"--history {self.path}: folder {self.path.parent} does not exist",
                    hint="Create the folder, or fix the path; the file itself is created on first use.",
                )
        # Judged read-only first: a file that is not a ledger is refused with nothing written into it.
        schema = _inspect(self.path)
        try:
            if schema is None and not self.readonly:
                self._make(self.path)
            self._db = db = connect(self.path, readonly=self.readonly, wait=30)
            if not self.readonly:
                with self._transaction() as db:
                    _create(db)
            self._has_api = not self.readonly or schema != 1
            db.execute("SELECT count(*) FROM calls LIMIT 1").fetchone()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StateError(
                f"{self.path} is not a call ledger the loader can read ({exc})", hint=_HINT
            ) from None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @staticmethod
    def _make(path: Path) -> None:
        """A new ledger at ``path``, made beside it and linked into place whole: a run starting at
        the same moment never finds it half made (empty, or without its tables) and refuses it."""
        made = path.with_name(f".{path.name}.{os.getpid()}.new")
        try:
            db = connect(made)
            try:
                with write_transaction(db) as inside:
                    _create(inside)
            finally:
                db.close()
            try:
                os.link(made, path)
            except FileExistsError:
                pass  # another run made it first: use theirs
            except OSError:
                if not path.exists():  # a file system without hard links: nearly as good
                    os.replace(made, path)
        finally:
            made.unlink(missing_ok=True)

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
        self,
        numbers: Iterable[str],
        *,
        days: Window,
        exclude_run: str | None = None,
        before: dt.datetime | None = None,
    ) -> dict[str, Entry]:
        """The latest entry from the last ``days`` days (``"all"``: ever) for each of ``numbers`` that
        has one, among calls to this ledger's API. ``before``: count the days back from then (when
        a campaign began) instead of from now; later entries count too."""
        if self._db is None:
            return {}
        return self._recent(
            self._db, list(dict.fromkeys(numbers)), days=days, exclude_run=exclude_run, before=before
        )

    def _since(self, days: Window, before: dt.datetime | None = None) -> str | None:
        """The window's start; ``None`` for ever, and for a window reaching back before year 1."""
        if days == "all":
            return None
        now = self._clock()
        try:
            return iso_utc(min(now, before or now) - dt.timedelta(days=days))
        except OverflowError:
            return None

    def _recent(
        self,
        db: sqlite3.Connection,
        numbers: Sequence[str],
        *,
        days: Window,
        exclude_run: str | None,
        before: dt.datetime | None = None,
    ) -> dict[str, Entry]:
        since = self._since(days, before)
        where, params = "run != ?", [exclude_run or ""]
        if since is not None:
            # As instants: text would put '2026-11-25 06:30:00' before '2026-11-25T06:00:00+00:00'.
            # A time nobody can read counts as recent: the call may have been made.
            where += " AND (julianday(at) IS NULL OR julianday(at) >= julianday(?))"
            params.append(since)
        if self.api is not None and self._has_api:
            where += " AND (base_url IS NULL OR base_url = ?)"  # NULL: to an unknown API, maybe this one
            params.append(self.api)
        found: dict[str, Entry] = {}
        for start in range(0, len(numbers), _CHUNK):
            chunk = numbers[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            # Instants, not texts: a script may write SQLite's own "2026-11-25 06:30:00" (UTC),
            # which sorts before "2026-11-25T..." as text and would fall outside the window.
            cursor = db.execute(
                "SELECT number, status, at, batch_id, input FROM calls"
                f" WHERE number IN ({marks}) AND {where} ORDER BY julianday(at)",
                (*chunk, *params),
            )
            for number, status, at, batch_id, input_name in cursor:
                found[number] = Entry(number, status, _instant(at), batch_id, input_name)
        return found

    def campaign_calls(
        self, batch_id: str, numbers: Iterable[str], *, exclude_run: str | None = None
    ) -> list[tuple[Entry, str | None]]:
        """Every entry (with its call id) of campaign ``batch_id`` for ``numbers``, oldest first,
        except ``exclude_run``'s: the calls other outputs made into that campaign, whenever."""
        if self._db is None:
            return []
        wanted = list(dict.fromkeys(numbers))
        api, api_params = "", []
        if self.api is not None and self._has_api:
            # A campaign id belongs to one API; NULL (an older ledger) may be this one.
            api, api_params = " AND (base_url IS NULL OR base_url = ?)", [self.api]
        found: list[tuple[Entry, str | None]] = []
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            cursor = self._db.execute(
                "SELECT number, status, at, batch_id, input, call_id FROM calls"
                f" WHERE batch_id = ? AND run != ? AND number IN ({','.join('?' * len(chunk))}){api}",
                (batch_id, exclude_run or "", *chunk, *api_params),
            )
            for number, status, at, batch, input_name, call_id in cursor:
                found.append((Entry(number, status, _instant(at), batch, input_name), call_id))
        return sorted(found, key=lambda pair: pair[0].at or _UNKNOWN_TIME)

    # --- writing -------------------------------------------------------------------------

    def claim(
        self,
        rows: Sequence[tuple[int, str]],
        *,
        run: str,
        batch_id: str | None,
        input_name: str,
        days: Window | None,
        scheduled: Sequence[tuple[int, str | None, dt.datetime]] = (),
        released: Sequence[int] = (),
    ) -> dict[int, Entry]:
        """Claim ``rows`` (row, number) for ``run``; return the rows refused, with the entry refusing each.

        In the same transaction, first record ``scheduled`` (row, call id,
        when) and ``released`` rows from earlier claims. With ``days``, a
        number another run claimed or scheduled in that many days is refused.
        """
        now = iso_utc(self._clock())
        with self._transaction() as db:
            self._settle(db, run, scheduled, released)
            refused: dict[int, Entry] = {}
            if days is not None:
                recent = self._recent(db, [n for _, n in rows], days=days, exclude_run=run)
                refused = {row: recent[number] for row, number in rows if number in recent}
            db.executemany(
                "INSERT INTO calls (number, status, at, batch_id, input, run, source_row, base_url)"
                " VALUES (?, 'claimed', ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run, source_row) DO UPDATE SET"
                " number = excluded.number, at = excluded.at, batch_id = excluded.batch_id"
                " WHERE calls.status = 'claimed'",
                [
                    (number, now, batch_id, input_name, run, row, self.api)
                    for row, number in rows
                    if row not in refused
                ],
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
        scheduled row that has none (a run resumed with the ledger, begun with ``--no-history``).
        """
        with self._transaction() as db:
            self._settle(db, run, scheduled, released, insert=insert)

    def _settle(
        self,
        db: sqlite3.Connection,
        run: str,
        scheduled: Sequence[tuple[int, str | None, dt.datetime]],
        released: Sequence[int],
        *,
        insert: Mapping[int, tuple[str, str | None, str]] | None = None,
    ) -> None:
        if insert:
            db.executemany(
                "INSERT OR IGNORE INTO calls (number, status, at, batch_id, input, run, source_row, base_url)"
                " VALUES (?, 'claimed', ?, ?, ?, ?, ?, ?)",
                [
                    (number, iso_utc(at), batch_id, input_name, run, row, self.api)
                    for (row, _, at) in scheduled
                    if row in insert
                    for number, batch_id, input_name in [insert[row]]
                ],
            )
        db.executemany(
            "UPDATE calls SET status = 'scheduled', call_id = ?, at = ?"
            " WHERE run = ? AND source_row = ? AND status = 'claimed'",
            [(call_id, iso_utc(at), run, row) for row, call_id, at in scheduled],
        )
        db.executemany(
            "DELETE FROM calls WHERE run = ? AND source_row = ? AND status = 'claimed'",
            [(run, row) for row in released],
        )

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, oldest first (for tests and curious people)."""
        if self._db is None:
            return []
        cursor = self._db.execute("SELECT * FROM calls ORDER BY julianday(at)")
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
        days: Window | None,
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
        writing its outcomes, or ran with ``--no-history``).
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


def _inspect(path: Path) -> int | None:
    """The schema of the ledger at ``path`` (``None``: no file yet), read without writing a byte;
    anything that is not a ledger the loader wrote is refused (``StateError``, exit 2)."""
    if not path.exists():
        return None
    try:
        with open_regular(path) as handle:  # a device or FIFO is refused, never read
            header = handle.read(len(_SQLITE_HEADER))
    except InputFileError as exc:
        raise StateError(str(exc), hint=_HINT) from None
    except OSError as exc:
        raise StateError(f"{path} cannot be read ({exc.strerror or exc})", hint=_HINT) from None
    if not header:
        # SQLite would take an empty file as a new database: the ledger someone meant would be lost.
        raise StateError(f"{path} is an empty file, not a call ledger", hint=_HINT)
    if header != _SQLITE_HEADER:
        raise StateError(f"{path} is not a call ledger (not a SQLite database)", hint=_HINT)
    try:
        db = sqlite3.connect(readonly_uri(path), uri=True)
        try:
            (application_id,) = db.execute("PRAGMA application_id").fetchone()
            (version,) = db.execute("PRAGMA user_version").fetchone()
            tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path} is a damaged SQLite file ({exc}), not a call ledger", hint=_HINT) from None
    if application_id == APPLICATION_ID and meta.get("application") == APPLICATION:
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{path} is a call ledger of a newer callkaro-loader (schema {version})",
                hint="Upgrade callkaro-loader; the ledger was left as it is.",
            )
        return int(version)
    if application_id == 0 and tables == {"meta", "calls"} and meta == {"schema_version": "1"}:
        return 1  # the loader's ledger from before it marked its files
    raise StateError(f"{path} is another application's SQLite database, not a call ledger", hint=_HINT)


def _create(db: sqlite3.Connection) -> None:
    """Make a new ledger's tables, or bring one of the previous schema up to date; inside a
    transaction (``PRAGMA application_id`` is then written with the rest, or not at all)."""
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.executemany(
        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
        [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION))],
    )
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
        " base_url TEXT,"
        " PRIMARY KEY (run, source_row))"
    )
    columns = {row[1] for row in db.execute("PRAGMA table_info(calls)")}
    if "base_url" not in columns:
        # A ledger of schema 1: its calls went to an API nobody recorded, so they count for all.
        db.execute("ALTER TABLE calls ADD COLUMN base_url TEXT")
    db.execute("CREATE INDEX IF NOT EXISTS calls_by_number ON calls (number, at)")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
