"""Stage 7: every input row with its outcome, written where people will open it.

The results file holds every input row in input order, its cells exactly
as read, then ``source_row``, ``callkaro_status``, ``callkaro_call_id`` and
``callkaro_message``. It is derived from the validation and the state
each time, never edited in place, and replaced atomically.

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

import pandas as pd

from loader.cells import cell_text
from loader.columns import RESULT_COLUMNS
from loader.read import Sheet
from loader.state import RowState

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
    statuses = status.astype(object).tolist()
    messages = message.astype(object).tolist()
    call_ids = [""] * len(statuses)
    # Positions, not per-row .loc: a million sent rows must cost a million cheap steps, not minutes.
    position = {row: i for i, row in enumerate(status.index.tolist())}
    for row, record in sent.items():
        i = position.get(row)
        if i is None:
            continue
        row_status = "uncertain" if record.status == "sending" else record.status
        text = record.message or ""
        if row_status == "pending" and not text:
            text = _PENDING_MESSAGE
        elif row_status == "pending":
            text = f"not sent: {text}"
        statuses[i] = row_status
        call_ids[i] = record.call_id or ""
        messages[i] = text
    return pd.DataFrame(
        {"callkaro_status": statuses, "callkaro_call_id": call_ids, "callkaro_message": messages},
        index=status.index,
        dtype=object,
    )


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
    """
    skip = set(ignored)
    keep = [i for i in range(len(sheet.headers)) if i not in skip]
    headers = [sheet.headers[i] for i in keep] + list(RESULT_COLUMNS)
    cells = sheet.cells[keep].copy()
    cells.columns = pd.RangeIndex(len(keep))
    base = len(keep)
    cells[base] = list(sheet.cells.index)
    for offset, name in enumerate(OUTCOME_COLUMNS, start=1):
        cells[base + offset] = outcome.loc[sheet.cells.index, name].tolist()
    return headers, cells


def write_results(path: Path, headers: list[str], cells: pd.DataFrame) -> None:
    """Write the results (CSV with BOM, or XLSX by suffix), replacing ``path`` atomically."""
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        _atomic_write(path, lambda handle: _write_xlsx(handle, headers, cells), binary=True)
    else:
        _atomic_write(path, lambda handle: _write_csv(handle, headers, cells), binary=False)


#: Rows turned into text at a time when writing CSV: fast column-wise work, bounded extra memory.
_CSV_CHUNK = 50_000


def _csv_texts(values: list[Any]) -> list[str]:
    """``inert(cell_text(v))`` of each value, column-wise: text cells only test their first character."""
    if all(type(v) is str for v in values):
        return [inert(v) if v.startswith(_FORMULA_START) else v for v in values]
    return [inert(cell_text(v)) for v in values]


def _write_csv(handle: IO[Any], headers: list[str], cells: pd.DataFrame) -> None:
    writer = csv.writer(handle, lineterminator="\r\n")
    writer.writerow([inert(h) for h in headers])
    for start in range(0, len(cells), _CSV_CHUNK):
        part = cells.iloc[start : start + _CSV_CHUNK]
        columns = [_csv_texts(part[column].tolist()) for column in part.columns]
        writer.writerows(zip(*columns, strict=True))


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
            out = WriteOnlyCell(sheet, value=value)
            out.data_type = "s"
            return out
        if isinstance(value, float) and value != value:
            return None
        return value

    sheet.append([cell(h) for h in headers])
    for row in cells.itertuples(index=False, name=None):
        sheet.append([cell(v) for v in row])
    workbook.save(handle)


def _atomic_write(path: Path, write: Callable[[IO[Any]], None], *, binary: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if binary:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as handle:
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
