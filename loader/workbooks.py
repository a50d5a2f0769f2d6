"""Reading spreadsheets (.xlsx, .xlsm, .xls, .ods) with python-calamine, safely.

A workbook is checked before any parser sees it (``loader.zip_checks``:
no decompression bombs, no XML document types). Then calamine
(``loader.calamine_reader``) reads the cached value of every cell
(formulas are not recalculated) with the type the spreadsheet gave it:
text, number, boolean, date, date-time, time or duration. The command
line may have parsed the sheet already, while it started
(``loader.early_read``). Excel 97-2003 ``.xls`` files are read in a child
process, since a damaged one can crash calamine's binary parser outright.
What the sheet shows beyond its values (hidden rows, number formats showing
a country code) is read in ``loader.workbook_view``: from its XML, or for an
``.xls``, with xlrd in that same child, within its time limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loader import calamine_reader, early_read
from loader.calamine_reader import open_sheet, read_rows, rows_of
from loader.cells import Cell
from loader.columnar import Columns, collect_columns
from loader.errors import InputFileError, NoSuchSheetError
from loader.formats import OLE2, ZIPPED, Kind, by_content
from loader.limits import MAX_COLUMNS
from loader.text_files import read_input
from loader.workbook_view import NOTHING, Ahead, View, XlsUnreadable, view_of
from loader.zip_checks import check_zip


def read_workbook(path: Path, kind: Kind, sheet: str | int | None) -> tuple[Columns, str, View]:
    """The cells of one sheet of ``path`` (row ``r`` is spreadsheet row ``r + 1``), its name, and
    what it shows beyond them (``loader.workbook_view``).

    The cells are gathered a slice of rows at a time so that a million-row
    sheet never exists as a million Python lists; ``.xls`` sheets, read in a
    child process, arrive as rows and are gathered the same way.
    """
    if kind in ZIPPED:
        check_zip(path)
    found, name, view = _read(path, kind, sheet)
    if view is None:
        try:
            view = view_of(path, kind, name, found.height) if kind in (*ZIPPED, "xls") else NOTHING
        except XlsUnreadable as exc:  # .xls read in this process: no child to read it in
            raise InputFileError(path, _damaged(path, str(exc))) from None
    return found, name, view


_PASSWORD = "is password-protected; open it, remove the password (File > Info > Protect Workbook) and save it"
#: How long a child process may take over one .xls file.
XLS_SECONDS = 300


def _read(path: Path, kind: Kind, sheet: str | int | None) -> tuple[Columns, str, View | None]:
    by_bytes = by_content(path, kind)  # the suffix lies: go by the bytes
    view: View | None = None
    if kind == "xls":
        result = _read_in_child(path, sheet, by_content=by_bytes)
        if "view" in result:  # read in the child with the rows: hidden rows and formats, as plain values
            hidden_rows, formats = result["view"]
            view = View(hidden_rows=hidden_rows, formats=formats)
    else:
        opened = early_read.take(path, sheet, by_content=by_bytes)
        if opened is None:
            ahead = Ahead(path, kind, sheet)
            opened = open_sheet(str(path), sheet, by_content=by_bytes, max_columns=MAX_COLUMNS)
            if "problem" not in opened:
                end = opened["sheet"].end
                view = ahead.view(opened["name"], end[0] + 1 if end is not None else 0)
        else:
            view = opened.get("view")  # read early too, beside the early parse
        result = rows_of(opened, collect_columns)
        del opened  # calamine's copy of the sheet: not kept while the columns are checked
    problem = result.get("problem")
    if problem is None:
        found: list[list[Cell]] | Columns = result["rows"]
        if not isinstance(found, Columns):
            found = collect_columns(_padded(found), max(map(len, found), default=0))
        found.check_cell_sizes(path)
        return found, str(result["name"]), view
    if problem == "no sheets":
        raise InputFileError(path, "the workbook has no sheets")
    if problem == "no such sheet":
        names = result["names"]
        listed = ", ".join(repr(n) for n in names)
        if len(names) == 1:
            raise NoSuchSheetError(path, f"has no sheet {sheet!r}; its only sheet is {listed} (or 0)")
        raise NoSuchSheetError(
            path, f"has no sheet {sheet!r}; its sheets are {listed} (or 0-{len(names) - 1})"
        )
    if problem == "too wide":
        raise InputFileError(
            path,
            f"sheet {result['name']!r} has something in {result['width']:,} columns; the loader reads at "
            f"most {MAX_COLUMNS:,}, far more than any contacts sheet has",
        )
    if problem == "password":
        raise InputFileError(path, _PASSWORD)
    raise InputFileError(path, _damaged(path, _shortened(str(result.get("detail", "")))))


def _read_in_child(path: Path, sheet: str | int | None, *, by_content: bool) -> dict[str, Any]:
    """``read_rows`` in a child process, so a crash in the .xls parser cannot take the loader with it;
    the answer holds the sheet's ``view`` (xlrd's reading of it) beside its rows."""
    import json
    import pickle
    import subprocess
    import sys

    if not sys.executable:  # embedded Python with no interpreter to start: read in this process
        return read_rows(str(path), sheet, by_content=by_content, max_columns=MAX_COLUMNS)
    command = [
        sys.executable,
        "-I",
        calamine_reader.__file__,
        str(path),
        json.dumps(sheet),
        "1" if by_content else "0",
        str(MAX_COLUMNS),
        "view",
    ]
    try:
        done = subprocess.run(command, capture_output=True, timeout=XLS_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return {"problem": "damaged", "detail": f"reading it took more than {XLS_SECONDS} seconds"}
    if done.returncode != 0 or not done.stdout:
        return {"problem": "damaged", "detail": "the reader crashed on it"}
    # Our own child wrote this, from values calamine produced: not data from the file itself.
    result: dict[str, Any] = pickle.loads(done.stdout)
    return result


def _damaged(path: Path, detail: str) -> str:
    """What to say about a workbook calamine cannot read, using what the file's bytes show."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if head == OLE2:
        data = read_input(path)
        if "EncryptedPackage".encode("utf-16-le") in data:
            return _PASSWORD
        if "WordDocument".encode("utf-16-le") in data:
            return "is a Word document, not a workbook"
        if "PowerPoint Document".encode("utf-16-le") in data:
            return "is a PowerPoint presentation, not a workbook"
    return f"is a damaged workbook the loader cannot read ({detail})"


def _shortened(text: str) -> str:
    return text if len(text) <= 160 else text[:159] + "…"


def _padded(rows: list[list[Cell]]) -> Iterator[list[Cell]]:
    """``rows``, each as long as the longest."""
    width = max(map(len, rows), default=0)
    for row in rows:
        yield row if len(row) == width else [*row, *[""] * (width - len(row))]
