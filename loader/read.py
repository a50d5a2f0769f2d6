"""Stage 1: read a contacts file into a table of cells, exactly as written.

``read_sheet`` is the entry point. What the file is comes from its content
as well as its name (``loader.formats``); text files are decoded, split
and parsed in ``loader.text_files``, workbooks checked and read in
``loader.workbooks``; the limits on both are in ``loader.limits``.

CSV/TSV/TXT cells stay text (a phone number is never turned into a float,
a blank is ``""``, never NaN). Spreadsheet cells keep the type the
spreadsheet gave them (see ``loader.cells``). Rows are indexed by the row
number a person sees in the spreadsheet, so every later message can point
at it.

The sheet is held once, column by column: a column of text (every column
of a text file, most of a workbook's) as pandas' compact arrow-backed
``str`` column, about the size of the file itself, and only a column with
numbers, dates or booleans in it as Python objects. Later stages work on
whole columns (``loader.cells.blank_mask``, ``column_matches``) rather
than cell by cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loader.cells import Cell, blank_mask, cell_text
from loader.columnar import cell_at
from loader.errors import InputFileError, NoRowsError, UsageError
from loader.files import open_regular
from loader.formats import SPREADSHEET_SUFFIXES, SUFFIX_KINDS, SUPPORTED, TEXT_SUFFIXES, sniff
from loader.limits import MAX_INPUT_BYTES
from loader.text_files import check_encoding_name, read_text_table
from loader.workbook_view import NOTHING, View
from loader.workbooks import read_workbook

__all__ = ["SPREADSHEET_SUFFIXES", "SUPPORTED", "TEXT_SUFFIXES", "Sheet", "read_sheet"]

#: Characters around a header that are not part of it: whitespace, byte-order marks, zero-width marks.
_HEADER_JUNK = " \t\r\n\xa0\ufeff\u200b\u200c\u200d\u200e\u200f\u2060"


@dataclass(frozen=True)
class Sheet:
    """The table read from one file.

    ``cells`` has one column per header position (labelled 0..n-1, since
    headers may repeat or be blank) and is indexed by spreadsheet row
    number; every cell is a ``loader.cells.Cell``. A column holding only
    text has pandas' ``str`` dtype, any other ``object``. ``headers`` are the
    header cells as written (trimmed). ``row_problems`` holds, for rows
    whose cells do not line up with the headers (a text file's ragged
    rows), what is wrong with them; those rows are kept, and reported.
    """

    path: Path
    headers: list[str]
    cells: pd.DataFrame
    sheet_name: str | None = None
    header_row: int = 1
    #: What the content turned out to be: ``text``, ``xlsx``, ``xlsb``, ``xls`` or ``ods``.
    kind: str = "text"
    #: For text files: the encoding and the separator they were read with.
    encoding: str | None = None
    delimiter: str | None = None
    row_problems: Mapping[int, str] = field(default_factory=dict)
    #: The rows above the header (titles), column-aligned with ``cells``, for copies of the sheet.
    above_header: list[list[Cell]] = field(default_factory=list)
    #: Rows of ``cells`` a person cannot see in the workbook (hidden, filtered out, zero height, collapsed).
    hidden_rows: frozenset[int] = frozenset()
    #: (row, column position) -> the number format of a cell whose format shows a ``+`` country code
    #: (data rows and the header row).
    shown_formats: Mapping[tuple[int, int], str] = field(default_factory=dict)
    #: (row, column position) -> the text a number cell shows, where the file writes it (.ods) with a ``+``.
    shown_text: Mapping[tuple[int, int], str] = field(default_factory=dict)

    @property
    def source_rows(self) -> list[int]:
        return [int(i) for i in self.cells.index]


def read_sheet(
    path: str | Path,
    *,
    sheet: str | int | None = None,
    header_row: int = 1,
    encoding: str | None = None,
) -> Sheet:
    """Read ``path`` into a ``Sheet``; raise ``InputFileError`` when it cannot be used."""
    path = Path(path)
    if header_row < 1:
        raise UsageError(f"--header-row must be 1 or more, not {header_row}")
    if encoding:
        check_encoding_name(encoding)
    if not path.exists():
        raise InputFileError(path, "no such file")
    if path.is_dir():
        raise InputFileError(path, "is a folder, not a file")
    # A device, FIFO or socket is refused before a byte is read; a file past the limit too.
    open_regular(path, limit=MAX_INPUT_BYTES).close()
    suffix = path.suffix.lower()
    if suffix not in SUFFIX_KINDS:
        raise InputFileError(
            path, f"cannot read {suffix or 'files without a suffix'}; use one of {SUPPORTED}"
        )
    try:
        kind = sniff(path)
        if kind == "text":
            if sheet is not None:
                what = "is a text file"
                if suffix not in TEXT_SUFFIXES:
                    what += f" despite its {suffix} name"
                raise UsageError(f"--sheet only applies to workbooks, and {path.name} {what}")
            table = read_text_table(path, encoding=encoding, suffix=suffix, header_row=header_row)
            return _to_sheet(
                path,
                table.rows,
                columns=table.columns,
                header_row=header_row,
                kind=kind,
                encoding=table.encoding,
                delimiter=table.delimiter,
                row_problems=table.ragged,
            )
        found, sheet_name, view = read_workbook(path, kind, sheet)
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    return _to_sheet(
        path, None, columns=found.arrays, header_row=header_row, kind=kind, sheet_name=sheet_name, view=view
    )


def _header_text(cell: Cell) -> str:
    return cell_text(cell).strip(_HEADER_JUNK)


def _to_sheet(
    path: Path,
    rows: list[list[str]] | None,
    *,
    header_row: int,
    kind: str,
    columns: list[Any] | None = None,
    sheet_name: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    row_problems: Mapping[int, str] | None = None,
    view: View = NOTHING,
) -> Sheet:
    """The ``Sheet`` of ``rows`` (a text file's, from the csv module) or ``columns`` (of one length:
    pyarrow text columns, or a workbook's columns of Python objects, as ``loader.columnar`` keeps them).

    Cells are held once, column by column: a column of text as pandas'
    compact ``str`` (arrow-backed) column, any other as Python objects.
    """
    where = "the file" if sheet_name is None else f"sheet {sheet_name!r}"
    height = (len(columns[0]) if columns else 0) if columns is not None else len(rows or [])
    if not height:
        raise NoRowsError(path, f"{where} is empty")
    if height < header_row:
        raise InputFileError(
            path,
            f"there is no row {header_row} to read headers from; {where} has {height} rows",
            hint="Give --header-row the row that holds the column headers.",
        )
    if columns is not None:
        width = len(columns)
        top = [[cell_at(column, r) for column in columns] for r in range(header_row)]
        body: list[Any] = [_body(column, header_row) for column in columns]
    else:
        assert rows is not None
        width = max((len(r) for r in rows), default=0)
        if min(map(len, rows)) != width:
            # Text rows may be ragged (reported separately); pad them so every row has every column.
            rows = [r if len(r) == width else [*r, *[""] * (width - len(r))] for r in rows]
        top = rows[:header_row]
        below = rows[header_row:]
        transposed = list(zip(*below, strict=True)) if below else [() for _ in range(width)]
        del below
        body = [_text_column(values) for values in transposed]
        del transposed
    headers = [_header_text(c) for c in top[header_row - 1]]
    headers += [""] * (width - len(headers))
    count = height - header_row
    # Spreadsheets often carry formatting far past the data; such rows and
    # columns hold nothing the user wrote, so they are not part of the table.
    blank = [blank_mask(_series(values)) for values in body]
    blank_rows = np.logical_and.reduce(blank) if blank else np.ones(count, dtype=bool)
    keep = [i for i in range(width) if headers[i] or not blank[i].all()]
    if not keep and header_row == 1:
        raise NoRowsError(path, f"{where} is empty")
    if not any(headers[i] for i in keep):
        raise InputFileError(
            path,
            f"row {header_row} has no column headers",
            hint="Give --header-row the row that holds the column headers.",
        )
    index: pd.Index = pd.RangeIndex(header_row + 1, header_row + 1 + count)
    kept_rows = None
    if blank_rows.any():
        kept_rows = np.flatnonzero(~blank_rows)
        index = index[kept_rows]
    data = {}
    for new, i in enumerate(keep):
        values = body[i]
        body[i] = None  # each column is held once: the filtered copy replaces it
        data[new] = _series(values if kept_rows is None else values.take(kept_rows), index)
    del body
    cells = pd.DataFrame(data, index=index, columns=pd.RangeIndex(len(keep)), copy=False)
    if cells.empty:
        raise NoRowsError(path, f"has a header row but no data rows below row {header_row}")
    above = [[row[i] if i < len(row) else "" for i in keep] for row in top[: header_row - 1]]
    return Sheet(
        path=path,
        headers=[headers[i] for i in keep],
        cells=cells,
        sheet_name=sheet_name,
        header_row=header_row,
        kind=kind,
        encoding=encoding,
        delimiter=delimiter,
        row_problems={row: text for row, text in (row_problems or {}).items() if row in index},
        above_header=above,
        hidden_rows=frozenset(index[index.isin(list(view.hidden_rows))].tolist()),
        shown_formats=_kept(view.formats, keep, index, header_row),
        shown_text=_kept(view.shown, keep, index, header_row),
    )


def _kept(
    cells: Mapping[tuple[int, int], str], keep: list[int], index: pd.Index, header_row: int
) -> dict[tuple[int, int], str]:
    """``cells`` (by row and column) keyed by the positions the kept columns have in the sheet, for its
    data rows and its header row (where a headerless do-not-call list has its first number)."""
    if not cells:
        return {}
    position = {column: new for new, column in enumerate(keep)}
    rows = {*index.tolist(), header_row}
    return {
        (row, position[column]): value
        for (row, column), value in cells.items()
        if column in position and row in rows
    }


def _body(column: Any, header_row: int) -> Any:
    """The cells below the header: a pyarrow text column as pandas' compact ``str`` array, sharing
    its memory; a column of Python objects as it is."""
    if isinstance(column, np.ndarray):
        return column[header_row:]
    # One chunk: taking rows from a column of many chunks (as pyarrow's readers give them)
    # copies the chunks together first, on every take.
    return pd.array(column.slice(header_row).combine_chunks(), dtype="str")


def _text_column(values: tuple[str, ...]) -> Any:
    """One column of a text file's cells as a compact ``str`` array."""
    return pd.array(list(values), dtype="str")


def _series(values: Any, index: pd.Index | None = None) -> pd.Series:
    """A column as a Series without copying it; Python-object columns stay objects, never inferred."""
    return pd.Series(
        values, index=index, dtype=object if isinstance(values, np.ndarray) else None, copy=False
    )
