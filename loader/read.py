"""Stage 1: read a contacts file into a table of cells, exactly as written.

CSV/TSV/TXT cells stay text (a phone number is never turned into a float,
a blank is ``""``, never NaN). Spreadsheet cells keep the type the
spreadsheet gave them (see ``loader.cells``). Rows are indexed by the row
number a person sees in the spreadsheet, so every later message can point
at it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from loader.cells import cell_text, is_blank
from loader.errors import InputFileError, UsageError

TEXT_SUFFIXES = {".csv", ".tsv", ".txt"}
SPREADSHEET_SUFFIXES = {".xlsx", ".xlsm", ".xls", ".ods"}
SUPPORTED = ", ".join(sorted(TEXT_SUFFIXES | SPREADSHEET_SUFFIXES))


@dataclass(frozen=True)
class Sheet:
    """The table read from one file.

    ``cells`` has one column per header position (labelled 0..n-1, since
    headers may repeat or be blank) and is indexed by spreadsheet row
    number; every cell is a ``loader.cells.Cell``. ``headers`` are the
    header cells as written.
    """

    path: Path
    headers: list[str]
    cells: pd.DataFrame
    sheet_name: str | None = None
    header_row: int = 1

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
    if not path.exists():
        raise InputFileError(path, "no such file")
    if path.is_dir():
        raise InputFileError(path, "is a folder, not a file")
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        if sheet is not None:
            raise UsageError(f"--sheet only applies to spreadsheets, and {path.name} is a text file")
        rows = _read_text(path, encoding=encoding, suffix=suffix)
        sheet_name = None
    elif suffix in SPREADSHEET_SUFFIXES:
        rows, sheet_name = _read_spreadsheet(path, sheet)
    else:
        raise InputFileError(
            path, f"cannot read {suffix or 'files without a suffix'}; use one of {SUPPORTED}"
        )
    return _to_sheet(path, rows, header_row=header_row, sheet_name=sheet_name)


def _read_text(path: Path, *, encoding: str | None, suffix: str) -> list[list[Any]]:
    raw = path.read_bytes()
    text = _decode(path, raw, encoding)
    if not text.strip():
        raise InputFileError(path, "the file is empty")
    delimiter = "\t" if suffix == ".tsv" else _sniff_delimiter(text)
    # pandas' C parser reads text much faster than csv.reader, and with
    # dtype=str and na_filter=False it keeps every cell as the exact text.
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=delimiter,
            header=None,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            quotechar='"',
        )
    except pd.errors.ParserError:
        # The C parser refuses rows longer than the first (a title line above
        # the headers, a stray trailing comma); csv.reader takes them as they are.
        return _read_ragged(path, text, delimiter)
    except pd.errors.EmptyDataError:
        raise InputFileError(path, "the file is empty") from None
    return frame.to_numpy(dtype=object).tolist()


def _read_ragged(path: Path, text: str, delimiter: str) -> list[list[Any]]:
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise InputFileError(path, f"not a readable table ({exc})") from None
    width = max((len(r) for r in rows), default=0)
    return [row + [""] * (width - len(row)) for row in rows]


def _decode(path: Path, raw: bytes, encoding: str | None) -> str:
    if encoding:
        try:
            return raw.decode(encoding)
        except LookupError:
            raise UsageError(f"--encoding {encoding!r} is not an encoding Python knows") from None
        except UnicodeDecodeError as exc:
            raise InputFileError(path, f"is not valid {encoding} text (byte {exc.start})") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    if b"\x00" in raw[:4096]:
        raise InputFileError(path, "is binary data, not a text table")
    from charset_normalizer import from_bytes

    best = from_bytes(raw[:1_000_000]).best()
    if best is None:
        raise InputFileError(path, "is not text in any encoding the loader recognises", hint="Use --encoding")
    return raw.decode(best.encoding, errors="replace")


def _sniff_delimiter(text: str) -> str:
    sample = text[:65536]
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        first = sample.splitlines()[0] if sample else ""
        counts = {d: first.count(d) for d in ",;\t|"}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


def _read_spreadsheet(path: Path, sheet: str | int | None) -> tuple[list[list[Any]], str]:
    from python_calamine import CalamineError, CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_path(str(path))
    except (CalamineError, OSError, ValueError) as exc:
        raise InputFileError(path, f"is not a readable {path.suffix} workbook ({exc})") from None
    names = list(workbook.sheet_names)
    if not names:
        raise InputFileError(path, "the workbook has no sheets")
    name = _pick_sheet(path, names, sheet)
    try:
        rows = workbook.get_sheet_by_name(name).to_python(skip_empty_area=False)
    except (CalamineError, ValueError) as exc:
        raise InputFileError(path, f"sheet {name!r} cannot be read ({exc})") from None
    return rows, name


def _pick_sheet(path: Path, names: list[str], sheet: str | int | None) -> str:
    if sheet is None:
        return names[0]
    if isinstance(sheet, str) and sheet in names:
        return sheet
    if isinstance(sheet, int) or (isinstance(sheet, str) and sheet.strip().isdigit()):
        index = int(sheet)
        if 0 <= index < len(names):
            return names[index]
    listed = ", ".join(repr(n) for n in names)
    raise InputFileError(path, f"has no sheet {sheet!r}; its sheets are {listed} (or 0-{len(names) - 1})")


def _to_sheet(path: Path, rows: list[list[Any]], *, header_row: int, sheet_name: str | None) -> Sheet:
    if len(rows) < header_row:
        where = "the file is empty" if not rows else f"there is no row {header_row} to read headers from"
        raise InputFileError(path, where)
    width = max((len(r) for r in rows), default=0)
    headers = [cell_text(c).strip() for c in rows[header_row - 1]]
    headers += [""] * (width - len(headers))
    body = rows[header_row:]
    cells = (
        pd.DataFrame(body, columns=range(width), dtype=object)
        if body
        else pd.DataFrame(columns=range(width), dtype=object)
    )
    cells = cells.fillna("")
    cells.index = pd.RangeIndex(header_row + 1, header_row + 1 + len(body))
    # Spreadsheets often carry formatting far past the data; such rows and
    # columns hold nothing the user wrote, so they are not part of the table.
    blank = cells.map(is_blank) if len(cells) else cells.astype(bool)
    cells = cells[~blank.all(axis=1)]
    keep = [i for i in range(width) if headers[i] or not blank[i].all()]
    if not any(headers[i] for i in keep):
        raise InputFileError(path, f"row {header_row} has no column headers")
    cells = cells[keep]
    cells.columns = pd.RangeIndex(len(keep))
    if cells.empty:
        raise InputFileError(path, f"has a header row but no data rows below row {header_row}")
    return Sheet(
        path=path,
        headers=[headers[i] for i in keep],
        cells=cells,
        sheet_name=sheet_name,
        header_row=header_row,
    )
