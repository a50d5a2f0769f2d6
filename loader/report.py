"""The problem report of ``validate --report``, for people to fix the sheet.

``.csv``: one line per problem (``source_row, column, value, error``).

``.xlsx``: a copy of the sheet, row for row (row numbers match the
original, title rows above the header included), with every bad cell
filled red and a comment saying what is wrong and how to fix it, a
``callkaro_message`` column with each row's whole message, and the header
row frozen. Rows without problems are left plain. A problem that belongs to
no single cell (a row with too many cells, a window whose start comes from
a ``--min-trigger-time`` default) is marked on the row's
``callkaro_message`` cell. The person fixes the cells and loads the same
file again: the ``callkaro_message`` column is ignored when it is read.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

from loader.cells import Cell
from loader.columns import ColumnMap
from loader.errors import UsageError, cannot_write
from loader.files import check_output
from loader.phones import LOOKS_LIKE
from loader.read import Sheet
from loader.results import atomic_write, inert, shows_in_full, xlsx_text
from loader.validate import PROBLEM_COLUMNS, Validation, problem_text

MESSAGE_COLUMN = "callkaro_message"
#: Excel's own "Bad" cell style: light red fill, dark red text.
BAD_FILL = "FFC7CE"
BAD_FONT = "9C0006"
COMMENT_AUTHOR = "callkaro-loader"

#: How to fix a bad cell of each call field, added to its comment.
FIX_HINTS = {
    "to_number": "Type the number with its country code, e.g. +91 98765 43210, in a cell formatted as "
    "text (or load with --default-region for numbers without one).",
    "schedule_at": "Type a date and time in the future, e.g. 2030-05-28 09:30.",
    "min_trigger_time": "Type a time of day, e.g. 09:30 or 6:30 PM; the window's start must be before "
    "its end.",
    "max_trigger_time": "Type a time of day, e.g. 18:00 or 6:00 PM; the window's start must be before "
    "its end.",
    "carry_over": "Type yes or no, or leave the cell blank.",
    "number_of_retries": "Type a whole number, 0 or more.",
    "gap_between_retries": "Type whole minutes above 0: one value (30) or one per retry (30,120).",
    "priority": "Type a whole number from -100 to 100.",
}


def check_report_path(path: Path, input_path: Path) -> None:
    """Refuse a --report that could not be written, before the sheet is read."""
    if path.suffix.lower() not in (".csv", ".xlsx"):
        raise UsageError(
            f"--report {path} must end in .csv (one line per problem) or .xlsx (a copy of the sheet "
            "with the bad cells marked)"
        )
    if path.resolve() == input_path.resolve():
        raise UsageError(f"--report {path} is the input file; the loader never overwrites its input")
    check_output(path, "--report")


def write_report(path: Path, sheet: Sheet, columns: ColumnMap, validation: Validation) -> None:
    """Write ``validation``'s problems to ``path``: ``.csv`` lines or an ``.xlsx`` marked-up copy."""
    check_report_path(path, sheet.path)
    try:
        if path.suffix.lower() == ".csv":
            atomic_write(path, lambda handle: _write_csv(handle, validation), binary=False)
        else:
            atomic_write(path, lambda handle: _write_xlsx(handle, sheet, columns, validation), binary=True)
    except OSError as exc:
        raise cannot_write(f"--report {path}", exc) from None


def _write_csv(handle: IO[Any], validation: Validation) -> None:
    writer = csv.writer(handle, lineterminator="\r\n")
    writer.writerow(PROBLEM_COLUMNS)
    for problem in validation.problems.itertuples(index=False):
        writer.writerow(
            [problem.source_row, inert(str(problem.column)), inert(str(problem.value)), problem.error]
        )


def bad_cells(sheet: Sheet, columns: ColumnMap, validation: Validation) -> dict[tuple[int, int], list[str]]:
    """Each problem placed on its cell: ``(spreadsheet row, report column) -> comment lines``.

    Report columns are the sheet's columns (less those carried over from an
    earlier results file), then ``callkaro_message``.
    """
    kept = _kept_columns(sheet, columns)
    place = {position: index for index, position in enumerate(kept)}
    message_column = len(kept)
    by_header = {sheet.headers[position]: (name, position) for name, position in columns.fields.items()}
    by_header.update({key: (key, position) for key, position in columns.metadata})
    marks: dict[tuple[int, int], list[str]] = {}
    for problem in validation.problems.itertuples(index=False):
        sentence = problem_text(str(problem.column), str(problem.value), str(problem.error))
        found = by_header.get(str(problem.column)) if problem.column else None
        if found is not None and found[1] in place:
            column, hint = place[found[1]], FIX_HINTS.get(found[0])
            if LOOKS_LIKE in str(problem.error):
                hint = None  # the problem says how to fix it (a number that has its country code)
        else:
            column, hint = message_column, None
        marks.setdefault((int(str(problem.source_row)), column), []).append(
            f"{sentence}\nTo fix: {hint}" if hint else sentence
        )
    return marks


def _kept_columns(sheet: Sheet, columns: ColumnMap) -> list[int]:
    ignored = set(columns.ignored)
    return [i for i in range(len(sheet.headers)) if i not in ignored]


def _write_xlsx(handle: IO[Any], sheet: Sheet, columns: ColumnMap, validation: Validation) -> None:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.comments import Comment
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter

    kept = _kept_columns(sheet, columns)
    marks = bad_cells(sheet, columns, validation)
    workbook = Workbook(write_only=True)
    out = workbook.create_sheet((sheet.sheet_name or "problems")[:31])
    out.freeze_panes = f"A{sheet.header_row + 1}"
    out.column_dimensions[get_column_letter(len(kept) + 1)].width = 60
    fill = PatternFill(fill_type="solid", start_color=BAD_FILL, end_color=BAD_FILL)
    font = Font(color=BAD_FONT)

    def cell(value: Cell, row: int, column: int) -> Any:
        lines = marks.get((row, column))
        if not lines and (value is None or value == ""):
            return None
        made = WriteOnlyCell(out, value=xlsx_text(value) if isinstance(value, str) else value)
        if isinstance(value, str):
            made.data_type = "s"  # a string cell is never run as a formula, whatever it starts with
        elif shows_in_full(value):
            made.number_format = "0"
        if lines:
            made.fill = fill
            made.font = font
            comment = Comment("\n\n".join(lines), COMMENT_AUTHOR)
            comment.width = 320
            comment.height = 60 + 45 * len(lines)
            made.comment = comment
        return made

    for number, row in enumerate(sheet.above_header, start=1):
        out.append([cell(v, number, i) for i, v in enumerate(row)])
    header = [sheet.headers[i] for i in kept] + [MESSAGE_COLUMN]
    out.append([cell(h, sheet.header_row, i) for i, h in enumerate(header)])
    table = sheet.cells[kept]
    messages = validation.message
    expected = sheet.header_row + 1
    for number, values in zip(table.index.tolist(), table.itertuples(index=False, name=None), strict=True):
        for _ in range(expected, number):
            out.append([])  # a blank row of the original keeps its place
        row = [*values, messages.get(number, "")]
        out.append([cell(v, number, i) for i, v in enumerate(row)])
        expected = number + 1
    workbook.save(handle)
