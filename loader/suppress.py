"""Stage 3b: do-not-call lists (``--suppress``): rows whose number is on one are ``suppressed``.

A list is a CSV or Excel sheet with a phone column, found the way the input's
is (``loader.columns``: ``phone``, ``mobile``, ``to_number``...), or a plain
text file with one number per line (blank lines and ``#`` comments are
skipped). Its numbers are normalised exactly as the sheet's are
(``loader.phones``, a whole list at a time, with the run's ``--default-region``), so
``098765 43210`` on the list matches ``+91 98765 43210`` in the sheet.

A list entry that cannot be read as a number at all (no country code and no
``--default-region``, letters, a number Excel turned into ``9.19877E+11``, a
number cell that lost a leading 0 and so could be either of two numbers)
refuses the run: a do-not-call entry must never be skipped silently. An entry
written without a ``+`` that is not a valid number of ``--default-region`` is
also read as an international number with its country code (``12125550100``:
a US number on a list kept in India), since the sheet may write that number
with a ``+``. An entry valid neither way is ignored: no row with that number
could pass validation anyway.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from loader.cells import Cell, cell_text, is_blank, shorten
from loader.columns import map_columns
from loader.errors import ColumnError, InputFileError, NoRowsError, NoSuchSheetError, UsageError
from loader.normalise import Context
from loader.phones import NOT_VALID, parse_phone_column
from loader.read import TEXT_SUFFIXES, read_sheet
from loader.text_files import read_input
from loader.validate import Validation

#: Entries shown when a list has entries that are not numbers.
_SHOWN_PROBLEMS = 3
_COMMENT = re.compile(r"\s*#.*$")
_PHONE_SHAPED = re.compile(r"[\d\s()+\-./]+")
#: Digits that may be a country code and number kept without their + (E.164: at most 15 digits).
_COUNTRY_AND_NUMBER = re.compile(r"[1-9]\d{6,14}")
_SEPARATORS = re.compile(r"[\s().\-/]")


@dataclass(frozen=True)
class SuppressionList:
    """One do-not-call list: its file and the E.164 numbers on it."""

    path: Path
    numbers: frozenset[str]

    @property
    def reason(self) -> str:
        return f"on the do-not-call list {self.path.name}"


def read_suppression_list(path: str | Path, ctx: Context) -> SuppressionList:
    """Read one list; ``InputFileError`` naming it when it cannot be read or holds a non-number."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "no such file (given as a do-not-call list with --suppress)")
    if path.is_dir():
        raise InputFileError(path, "is a folder, not a do-not-call list")
    entries = _plain_list(path)
    if entries is None:
        entries = _sheet_column(path)
    found, found_problems = parse_phone_column(
        pd.Series([c for _, c in entries], dtype=object), ctx.default_region
    )
    problems = [
        f"{where}: {shorten(cell_text(cell))} {problem}"
        for (where, cell), problem in zip(entries, found_problems.tolist(), strict=True)
        if problem is not None and not problem.startswith(NOT_VALID)
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
    on_list: set[str] = set(found.dropna().tolist())
    # Not valid where the run is, and written without a +: perhaps a country code without its +.
    abroad: list[str] = []
    for (_, cell), problem in zip(entries, found_problems.tolist(), strict=True):
        digits = _SEPARATORS.sub("", cell_text(cell))
        if problem is not None and problem.startswith(NOT_VALID) and _COUNTRY_AND_NUMBER.fullmatch(digits):
            abroad.append("+" + digits)
    if abroad:
        read_abroad, _ = parse_phone_column(pd.Series(abroad, dtype=object), None)
        on_list.update(read_abroad.dropna().tolist())
    return SuppressionList(path=path, numbers=frozenset(on_list))


def _plain_list(path: Path) -> list[tuple[str, Cell]] | None:
    """The entries of a text file holding one number per line; None when it is a table with headers."""
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
    # A table's first line is its headers; a plain list's first line is already a number.
    return lines if _PHONE_SHAPED.fullmatch(lines[0][1]) else None


def _sheet_column(path: Path) -> list[tuple[str, Cell]]:
    try:
        sheet = read_sheet(path)
        others = _other_sheets(path, sheet.sheet_name) if sheet.kind != "text" else []
    except InputFileError as exc:
        raise InputFileError(path, f"{exc.problem} (a do-not-call list given with --suppress)") from None
    except UsageError as exc:
        raise InputFileError(path, f"cannot be read as a do-not-call list ({exc})") from None
    if others:
        listed = ", ".join(repr(name) for name in [sheet.sheet_name, *others])
        raise InputFileError(
            path,
            f"has rows on more than one sheet ({listed}); a do-not-call list is read from one sheet",
            hint="Put every number on one sheet, or save each sheet as its own file and give each with "
            "--suppress, so that no listed number is called by mistake.",
        )
    try:
        columns = map_columns(sheet)
    except ColumnError as exc:
        if len(sheet.headers) == 1 and _PHONE_SHAPED.fullmatch(sheet.headers[0]):
            # A single column of numbers with no header: the first number is in the header row.
            cells = [sheet.headers[0], *sheet.cells[0].tolist()]
            rows = [sheet.header_row, *sheet.source_rows]
            return [(f"row {r}", c) for r, c in zip(rows, cells, strict=True) if not is_blank(c)]
        raise ColumnError(
            path,
            f"cannot be used as a do-not-call list: {exc.problem}",
            hint='Give it one column headed "phone" (or "mobile", "to_number"...), '
            "or use a plain text file with one number per line.",
        ) from None
    column = sheet.cells[columns.fields["to_number"]]
    return [(f"row {row}", cell) for row, cell in column.items() if not is_blank(cell)]


def _other_sheets(path: Path, read: str | None) -> list[str]:
    """The workbook's sheets other than ``read`` that hold rows below a header row.

    Each sheet is read as the reader reads any (a list is small); one it cannot read
    refuses the list, as the first sheet would.
    """
    names: list[str] = []
    for index in itertools.count():
        try:
            other = read_sheet(path, sheet=index)
        except NoRowsError:
            continue
        except NoSuchSheetError:
            return names  # past the last sheet
        if other.sheet_name != read:
            names.append(str(other.sheet_name))
    return names


def read_suppression_lists(paths: Iterable[str | Path], ctx: Context) -> list[SuppressionList]:
    return [read_suppression_list(p, ctx) for p in paths]


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
