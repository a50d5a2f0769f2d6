"""Stage 7: every input row with its outcome, written where people will open it.

The results file holds every input row in input order, its cells exactly
as read, then ``source_row``, ``callkaro_status``, ``callkaro_call_id`` and
``callkaro_message``. It is derived from the validation and the state
each time, never edited in place, and replaced atomically. It is written
as a stream, a slice of rows at a time, straight from the sheet's own
columns: a million-row results file never exists in memory as a whole.

Cells that a spreadsheet would run as a formula are written inert (see
``inert``): the results of a web-form sheet are opened in Excel by people
who trust them.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from loader.cells import cell_text, column_matches
from loader.columns import RESULT_COLUMNS
from loader.files import write_target
from loader.read import Sheet
from loader.state import IN_FLIGHT_MESSAGE, RowState

OUTCOME_COLUMNS = ["callkaro_status", "callkaro_call_id", "callkaro_message"]
_PENDING_MESSAGE = "not sent: the run stopped before this row"


def outcomes(
    status: pd.Series,
    message: pd.Series,
    sent: Mapping[int, RowState],
) -> pd.DataFrame:
    """Each row's final status, call id and message, indexed by spreadsheet row.

    ``status``/``message`` come from validation (``valid`` for a row that may
    be sent); ``sent`` is the state's record of rows that entered sending.
    """
    frame = pd.DataFrame(
        {
            "callkaro_status": status.astype(object),
            "callkaro_call_id": "",
            "callkaro_message": message.astype(object),
        },
        index=status.index.rename("source_row"),
    )
    rows: list[int] = []
    found: dict[str, list[str]] = {name: [] for name in OUTCOME_COLUMNS}
    index = status.index  # its hash table, not a set of a million Python ints
    for row, record in sent.items():
        if row not in index:
            continue
        row_status = "uncertain" if record.status == "sending" else record.status
        text = record.message or ""
        if record.status == "sending":
            # Cut off in flight: any message is from an earlier attempt ("retrying after: ...").
            text = IN_FLIGHT_MESSAGE
        elif row_status == "pending" and not text:
            text = _PENDING_MESSAGE
        elif row_status == "pending":
            text = f"not sent: {text}"
        rows.append(row)
        found["callkaro_status"].append(row_status)
        found["callkaro_call_id"].append(record.call_id or "")
        found["callkaro_message"].append(text)
    if rows:
        # One assignment per column: a run of a million rows must not set cells one at a time.
        for name, values in found.items():
            frame.loc[rows, name] = pd.Series(values, index=rows, dtype=object)
    return frame


def count_statuses(frame: pd.DataFrame) -> dict[str, int]:
    counts = frame["callkaro_status"].value_counts(sort=False)
    return {str(k): int(v) for k, v in counts.items()}


# --- formula injection -----------------------------------------------------------------

_PLAIN_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
# "+91 98765 43210", "+1 (555) 123-4567": no letters or operators beyond +/-, so nothing can run.
_PHONE_SHAPED = re.compile(r"^\+\d[\d ().\-]*$")
_FORMULA_START = ("=", "@", "+", "-", "\t", "\r", "\n", "\uff1d", "\uff20", "\uff0b", "\uff0d")


def inert(text: str) -> str:
    """``text``, made safe to open in a spreadsheet (OWASP's CSV-injection advice).

    A cell starting with ``=``, ``@``, ``+``, ``-``, a tab or a carriage return
    would be evaluated by Excel, LibreOffice or Google Sheets; it gets a
    leading ``'`` so it shows as text. Signed plain numbers (``-3``) and
    phone numbers (``+919876543210``, ``+91 98765 43210``) cannot run
    anything and are left as they are.
    """
    if not text or not text.startswith(_FORMULA_START):
        return text
    if _PLAIN_NUMBER.match(text) or _PHONE_SHAPED.match(text):
        return text
    return "'" + text


# --- writing ---------------------------------------------------------------------------


def results_table(
    sheet: Sheet, outcome: pd.DataFrame, ignored: Iterable[int] = ()
) -> tuple[list[str], pd.DataFrame]:
    """Header and cells of the results file: the input's columns, then ours.

    Columns the input carried from an earlier results file (``ignored``) are
    replaced by this run's, so loading a fixed results file again works.

    The table shares the sheet's columns (nothing is copied); it is written
    out a slice of rows at a time by ``write_results``.
    """
    skip = set(ignored)
    keep = [i for i in range(len(sheet.headers)) if i not in skip]
    headers = [sheet.headers[i] for i in keep] + list(RESULT_COLUMNS)
    index = sheet.cells.index
    data: dict[int, Any] = {new: sheet.cells[old] for new, old in enumerate(keep)}
    base = len(keep)
    data[base] = pd.Series(index.to_numpy(), index=index)
    same_rows = outcome.index.equals(index)
    for offset, name in enumerate(OUTCOME_COLUMNS, start=1):
        column = outcome[name] if same_rows else outcome.loc[index, name]
        data[base + offset] = column.astype(object)
    return headers, pd.DataFrame(data, index=index, copy=False)


def write_results(path: Path, headers: list[str], cells: pd.DataFrame) -> None:
    """Write the results (CSV with BOM, or XLSX by suffix), replacing ``path`` atomically."""
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        atomic_write(path, lambda handle: _write_xlsx(handle, headers, cells), binary=True)
    else:
        atomic_write(path, lambda handle: _write_csv(handle, headers, cells), binary=False)


#: Rows written per slice: the text of one slice is all the writer holds at a time.
CHUNK_ROWS = 65_536
#: Where a cell that ``inert`` may change starts, for matching whole text columns at once.
_FORMULA_PATTERN = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in _FORMULA_START) + "]"


def _write_csv(handle: IO[Any], headers: list[str], cells: pd.DataFrame) -> None:
    writer = csv.writer(handle, lineterminator="\r\n")
    writer.writerow([inert(h) for h in headers])
    for start in range(0, len(cells), CHUNK_ROWS):
        part = cells.iloc[start : start + CHUNK_ROWS]
        writer.writerows(zip(*(csv_texts(part[c]) for c in part.columns), strict=True))


def csv_texts(column: pd.Series) -> list[str]:
    """``inert(cell_text(cell))`` of every cell; a text column in one vectorised pass."""
    if isinstance(column.dtype, np.dtype) and column.dtype.kind in "iu":
        return column.astype(str).tolist()  # source_row: whole numbers, nothing to make inert
    risky = column_matches(column, _FORMULA_PATTERN)
    if risky is not None:
        # A missing text cell is blank, as cell_text has it (not "nan").
        texts: list[str] = (column.fillna("") if column.hasnans else column).tolist()
        for position in np.flatnonzero(risky).tolist():
            texts[position] = inert(texts[position])
        return texts
    return [
        inert(text) if text.startswith(_FORMULA_START) else text
        for text in (c if type(c) is str else cell_text(c) for c in column.tolist())
    ]


def _write_xlsx(handle: IO[Any], headers: list[str], cells: pd.DataFrame) -> None:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("results")
    sheet.freeze_panes = "A2"

    def cell(value: Any) -> Any:
        if isinstance(value, str):
            if not value:
                return None
            # A string cell is never evaluated, whatever it starts with.
            out = WriteOnlyCell(sheet, value=xlsx_text(value))
            out.data_type = "s"
            return out
        if isinstance(value, float) and value != value:
            return None
        if shows_in_full(value):
            out = WriteOnlyCell(sheet, value=value)
            out.number_format = "0"
            return out
        return value

    sheet.append([cell(h) for h in headers])
    for row in cells.itertuples(index=False, name=None):
        sheet.append([cell(v) for v in row])
    workbook.save(handle)


#: Whole numbers this large (11 digits: a phone number with its country code) are written with
#: every digit showing.
_ALL_DIGITS_FROM = 10_000_000_000


def shows_in_full(value: Any) -> bool:
    """Whether an xlsx number cell needs the format ``0``: a phone stored as a number, which
    Excel's General format would show as 9.19877E+11 (and a sheet saved again from that view
    would keep only those digits)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) >= _ALL_DIGITS_FROM


#: What Excel would not show as written: ``_xHHHH_`` (which it reads as the character HHHH) and
#: a carriage return (which XML reads as a line feed).
_OOXML_ESCAPED = re.compile(r"_(?=x[0-9A-Fa-f]{4}_)|\r")


def _ooxml_escape(found: re.Match[str]) -> str:
    return "_x005F_" if found.group() == "_" else "_x000D_"


def xlsx_text(text: str) -> str:
    """``text`` as an xlsx cell can hold it: control characters XML cannot carry become U+FFFD; the
    rest reads back exactly as written (OOXML's ``_xHHHH_`` escapes, as Excel itself saves them)."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    text = ILLEGAL_CHARACTERS_RE.sub("\ufffd", text)
    if "_x" in text or "\r" in text:
        text = _OOXML_ESCAPED.sub(_ooxml_escape, text)
    return text


def atomic_write(
    path: Path,
    write: Callable[[IO[Any]], object],
    *,
    binary: bool,
    encoding: str = "utf-8-sig",
    make_folder: bool = True,
) -> None:
    """Write ``path`` through ``write`` into a temporary file beside it, then swap it in: a reader
    sees the old file or the new one, never half of one. Text is ``encoding`` (by default UTF-8
    with the byte-order mark Excel needs) with newlines as written. Every file the loader
    produces is written this way. Through a symlink, the file it points to is replaced and the
    symlink kept (``loader.files.write_target``)."""
    path = write_target(path)
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        opened = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding=encoding, newline="")
        with opened as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private; a results file gets the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
