"""Stage 3b: do-not-call lists (``--suppress``): rows whose number is on one are ``suppressed``.

A list is a CSV or Excel sheet, or a plain text file with one entry per line
(blank lines and ``#`` comments are skipped). Every column of a sheet that may
hold phone numbers is read: one headed as the input's phone column may be
(``loader.columns.phone_columns``: the same alias table, and ``--map``
entries that map to ``to_number``). A column that is not read but holds
phone numbers (``Work Phone``) refuses the list, naming the ``--map`` that
reads it. Every sheet of a workbook is looked at: numbers on more than one
refuse the list (only one would be read), and a sheet holding nothing but one
headerless number counts.

Each entry is read by ``loader.list_entries`` with the run's
``--default-region``, in every way it may have been meant (a float export,
``0`` and a country code, several numbers in one cell, an extension...), so
``098765 43210`` on the list matches ``+91 98765 43210`` in the sheet. A number
cell whose number format shows a country code (``"+44 "0000000000``) is read
as the workbook shows it, with that code, as a lead sheet's phones are
(``loader.validate.phones_as_shown``); one whose format cannot be shown
exactly refuses the list. An entry
that holds digits but is not read as one or more numbers refuses the run,
naming the list, row and entry: a do-not-call entry is never skipped silently.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from loader.cells import Cell, cell_text, is_blank, shorten
from loader.columnar import cell_at
from loader.columns import phone_columns
from loader.errors import ColumnError, InputFileError, NoRowsError, NoSuchSheetError, UsageError
from loader.formats import SUFFIX_KINDS, sniff
from loader.list_entries import EntryNumbers, read_entries
from loader.normalise import Context
from loader.read import TEXT_SUFFIXES, Sheet, read_sheet
from loader.text_files import read_input
from loader.validate import Validation, phones_as_shown, unreadable_format
from loader.workbook_view import View, as_shown
from loader.workbooks import read_workbook

#: Entries shown when a list has entries that are not numbers.
_SHOWN_PROBLEMS = 3
#: Cells of a column that is not read looked at to tell whether it holds phone numbers, at most.
_SAMPLED_CELLS = 400
_COMMENT = re.compile(r"\s*#.*$")
#: A line of a plain list: digits written as numbers are, with separators and extensions, no words.
_ENTRY_SHAPED = re.compile(
    r"[\d\s()+\-./,;|&#]*\d[\d\s()+\-./,;|&#]*(?:\s*(?:ext(?:ension|n)?|x)\.?\s*\d+)?", re.IGNORECASE
)
#: Letters that do not belong to a number (``e`` of 9.19E+11 and ``x``/``ext`` of an extension aside).
_WORDY = re.compile(r"[^\W\dEeXxTt_]")

#: A cell of a list and where it is (``row 5``, ``line 3``, ``row 5, Alt Phone``).
Entry = tuple[str, "Cell | Unshowable"]


@dataclass(frozen=True)
class SuppressionList:
    """One do-not-call list: its file and the E.164 numbers on it."""

    path: Path
    numbers: frozenset[str]
    #: The list's column headers (none for a plain list): a ``--map`` entry naming one is for the list.
    headers: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return f"on the do-not-call list {self.path.name}"


def read_suppression_list(
    path: str | Path, ctx: Context, *, column_map: Mapping[str, str] | None = None
) -> SuppressionList:
    """Read one list; ``InputFileError`` naming it when it cannot be read or holds an entry it cannot read.

    ``column_map`` is the run's ``--map``: its entries that map a header of
    this list to ``to_number`` add that column to the ones read.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "no such file (given as a do-not-call list with --suppress)")
    if path.is_dir():
        raise InputFileError(path, "is a folder, not a do-not-call list")
    entries = _plain_list(path)
    headers: tuple[str, ...] = ()
    if entries is None:
        entries, headers = _table_entries(path, column_map or {}, ctx.default_region)
    # A cell whose format shows a country code the loader cannot show exactly is read as nothing, and
    # refused, as it is in a lead sheet.
    read = read_entries([_readable(cell) for _, cell in entries], ctx.default_region)
    problems = [
        f"{where}: {shorten(cell_text(_value(cell)))} {_problem(cell) or found.problem}"
        for (where, cell), found in zip(entries, read, strict=True)
        if _problem(cell) or found.problem is not None
    ]
    if problems:
        more = len(problems) - _SHOWN_PROBLEMS
        listed = "; ".join(problems[:_SHOWN_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
        raise InputFileError(
            path,
            f"do-not-call list entries that are not phone numbers: {listed}",
            hint="Fix or remove them (give --default-region for numbers without a country code); "
            "the run is refused so that no listed number is called by mistake.",
        )
    numbers = frozenset(number for found in read for number in found.numbers)
    return SuppressionList(path=path, numbers=numbers, headers=headers)


def _plain_list(path: Path) -> list[Entry] | None:
    """The entries of a text file holding one entry per line; None when it is a table with headers."""
    if path.suffix.lower() not in TEXT_SUFFIXES | {""}:
        return None
    try:
        text = read_input(path).decode("utf-8-sig")
    except UnicodeDecodeError:
        return None  # a table in another encoding: let read_sheet detect it
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    lines = [(f"line {n}", _COMMENT.sub("", line).strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(where, line) for where, line in lines if line]
    if not lines:
        return []
    # A table's first line is its headers; a plain list's first line is already an entry.
    return list(lines) if _ENTRY_SHAPED.fullmatch(lines[0][1]) else None


def _table_entries(
    path: Path, column_map: Mapping[str, str], region: str | None
) -> tuple[list[Entry], tuple[str, ...]]:
    """The entries of every phone column of the one sheet of ``path`` holding numbers, and its headers."""
    try:
        holding = _sheets_holding_numbers(path)
    except InputFileError as exc:
        raise type(exc)(path, f"{exc.problem} (a do-not-call list given with --suppress)") from None
    except UsageError as exc:
        raise InputFileError(path, f"cannot be read as a do-not-call list ({exc})") from None
    if len(holding) > 1:
        listed = ", ".join(repr(name) for name, _ in holding)
        raise InputFileError(
            path,
            f"has rows on more than one sheet ({listed}); a do-not-call list is read from one sheet",
            hint="Put every number on one sheet, or save each sheet as its own file and give each with "
            "--suppress, so that no listed number is called by mistake.",
        )
    found = holding[0][1]
    if not isinstance(found, Sheet):
        return found, ()
    sheet = found
    read = phone_columns(sheet.headers, column_map)
    if not read:
        if len(sheet.headers) == 1 and _is_entry(sheet.headers[0]):
            # A single column of numbers with no header: the first number is in the header row.
            header: Cell = sheet.headers[0]
            if (sheet.header_row, 0) in sheet.shown_formats and header.isdigit():
                header = int(header)  # headers are read as text: the number its number format shows
            first = pd.Series([header], index=[sheet.header_row], dtype=object)
            cells = _as_shown(sheet, 0, pd.concat([first, sheet.cells[0].astype(object)]))
            return [(f"row {r}", c) for r, c in cells if not is_blank(_value(c))], ()
        shown = ", ".join(repr(h) for h in sheet.headers if h)
        raise ColumnError(
            path,
            f"cannot be used as a do-not-call list: no phone number column (headers: {shown})",
            hint='Give it a column headed "phone" (or "mobile", "to_number"...), point at its phone '
            'columns with --map "HEADER=to_number", or use a plain text file with one number per line.',
        )
    _refuse_unread_phone_columns(sheet, read, region)
    entries: list[Entry] = []
    for position in read:
        column = f", {sheet.headers[position]}" if len(read) > 1 else ""
        cells = _as_shown(sheet, position, sheet.cells[position])
        entries += [(f"row {row}{column}", c) for row, c in cells if not is_blank(_value(c))]
    return entries, tuple(sheet.headers)


@dataclass(frozen=True)
class Unshowable:
    """A cell whose number format shows a country code in a way the loader cannot show exactly."""

    value: Cell
    format: str


def _as_shown(sheet: Sheet, position: int, cells: pd.Series) -> list[tuple[int, Cell | Unshowable]]:
    """(row, cell) of column ``position`` as the sheet shows them, read as a lead sheet's phones are
    (``phones_as_shown``): ``7911123456`` formatted ``"+44 "0000000000`` is ``+44 7911123456``, never
    a number of ``--default-region``; a format that cannot be shown exactly makes an ``Unshowable``."""
    if not any(column == position for _, column in (*sheet.shown_formats, *sheet.shown_text)):
        return list(zip(cells.index.tolist(), cells.tolist(), strict=True))  # nearly every list
    shown, unreadable = phones_as_shown(sheet, position, cells)
    return [
        (row, Unshowable(cells.loc[row], unreadable[row]) if row in unreadable else cell)
        for row, cell in zip(shown.index.tolist(), shown.tolist(), strict=True)
    ]


def _shown_cell(cell: Cell, row: int, column: int, view: View) -> Cell | Unshowable:
    """``_as_shown`` for one cell of a workbook, from its ``view``."""
    if (row, column) in view.shown:
        return view.shown[row, column]
    code = view.formats.get((row, column))
    if code is None:
        return cell
    text = as_shown(cell, code)
    return Unshowable(cell, code) if text is None else text


def _readable(cell: Cell | Unshowable) -> Cell:
    return "" if isinstance(cell, Unshowable) else cell


def _value(cell: Cell | Unshowable) -> Cell:
    return cell.value if isinstance(cell, Unshowable) else cell


def _problem(cell: Cell | Unshowable) -> str | None:
    return unreadable_format(cell.format) if isinstance(cell, Unshowable) else None


def _refuse_unread_phone_columns(sheet: Sheet, read: Sequence[int], region: str | None) -> None:
    """Refuse a list with a column that is not read but mostly holds phone numbers (``Work Phone``)."""
    for position, header in enumerate(sheet.headers):
        if position in read:
            continue
        cells = [c for c in sheet.cells[position].tolist() if not is_blank(c)]
        # Cells spread over the whole column tell whether most are numbers, without reading them all.
        cells = cells[:: -(-len(cells) // _SAMPLED_CELLS)] if cells else cells
        numbers = sum(1 for found in read_entries(cells, region) if _names_a_number(found))
        if cells and numbers * 2 > len(cells):
            name = header or f"column {position + 1}"
            raise ColumnError(
                sheet.path,
                f"column {name!r} holds phone numbers ({numbers} of its {len(cells)} entries), but a "
                "do-not-call list is read only from its phone columns",
                hint=f'Read it too with --map "{name}=to_number" (or map in the config file), or remove '
                "the column from the list if it holds no phone numbers.",
            )


def _names_a_number(found: EntryNumbers) -> bool:
    """Whether an entry is a phone number: read as one, or national and not read only for want of
    ``--default-region``."""
    return bool(found.numbers) or (found.problem or "").startswith("has no country code")


def _is_entry(cell: Cell) -> bool:
    """Whether a lone cell is an entry rather than a header or title: a number, or digits without words."""
    if isinstance(cell, bool):
        return False
    if isinstance(cell, int | float):
        return True
    text = cell_text(cell)
    return any(ch.isdigit() for ch in text) and not _WORDY.search(text)


def _sheets_holding_numbers(path: Path) -> list[tuple[str, Sheet | list[Entry]]]:
    """The sheets of ``path`` holding rows, or a lone row of entries, by name (at least one).

    Every sheet of a workbook counts, hidden ones too: a number on a sheet
    that is not read would be called.
    """
    try:
        kind = sniff(path) if path.suffix.lower() in SUFFIX_KINDS else "text"
    except (InputFileError, OSError):
        kind = "text"  # read_sheet says what is wrong with it
    if kind == "text":
        return [("", read_sheet(path))]
    holding: list[tuple[str, Sheet | list[Entry]]] = []
    for index in itertools.count():
        try:
            sheet = read_sheet(path, sheet=index)
            holding.append((str(sheet.sheet_name), sheet))
        except NoSuchSheetError:
            break  # past the last sheet
        except NoRowsError:
            name, lone = _lone_row(path, kind, index)
            if lone:
                holding.append((name, lone))
    if not holding:
        raise NoRowsError(path, "holds no numbers on any of its sheets")
    return holding


def _lone_row(path: Path, kind: str, index: int) -> tuple[str, list[Entry]]:
    """A sheet with no rows below its first: its name and the cells of that row that are entries
    (a headerless number alone on a sheet), not headers or titles."""
    columns, name, view = read_workbook(path, kind, index)  # type: ignore[arg-type]
    if not columns.height:
        return name, []
    cells = [(column, cell_at(array, 0)) for column, array in enumerate(columns.arrays)]
    return name, [
        ("row 1", _shown_cell(c, 1, column, view)) for column, c in cells if not is_blank(c) and _is_entry(c)
    ]


def read_suppression_lists(
    paths: Iterable[str | Path], ctx: Context, *, column_map: Mapping[str, str] | None = None
) -> list[SuppressionList]:
    return [read_suppression_list(p, ctx, column_map=column_map) for p in paths]


def suppress_rows(
    validation: Validation, lists: Sequence[SuppressionList], *, reasons: pd.Series | None = None
) -> Validation:
    """``validation`` with each ``valid`` row whose number is on a list (or in ``reasons``) ``suppressed``.

    ``reasons`` maps E.164 numbers to why they are skipped (``loader.history``'s
    "called on ..."). Rows that are invalid or duplicates keep that status: it
    says more about the row.
    """
    numbers = validation.requests["to_number"]
    status = validation.status.copy()
    message = validation.message.copy()
    # Only rows still valid: the first list a number is on gives the reason.
    for listed in lists:
        hit = (status == "valid") & numbers.isin(listed.numbers)
        status[hit] = "suppressed"
        message[hit] = listed.reason
    if reasons is not None and len(reasons):
        hit = (status == "valid") & numbers.isin(reasons.index)
        status[hit] = "suppressed"
        message[hit] = numbers[hit].map(reasons)
    return dataclasses.replace(validation, status=status, message=message)
