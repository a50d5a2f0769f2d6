"""Stage 3: check every row completely and decide whether it may be sent.

Parsing (``loader.normalise``) and the rules (``schemas.CallRequests``) each
report problems; this module gathers them into one table, one line per
problem, the way pandera reports ``failure_cases``, and gives each row its
status: ``valid``, ``invalid`` or ``duplicate``, or ``suppressed`` for a row hidden in the
workbook (a person filtering a sheet to "the ones to call" has not asked for the others).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from loader import memory
from loader.cells import Cell, arrow_text, blank_mask, cell_text, is_blank, is_text_column, shorten
from loader.columns import ROW_FIELDS, ColumnMap
from loader.errors import UsageError
from loader.normalise import DTYPES, Context, parse_column, seconds_of_day
from loader.pandera_quiet import pa
from loader.read import Sheet
from loader.workbook_view import as_shown
from schemas import ROW_CHECK_COLUMNS, WINDOW_ERROR, CallRequests

PROBLEM_COLUMNS = ["source_row", "column", "value", "error"]
#: Longest metadata value sent, in characters. Metadata goes into the voice agent's
#: prompt on every call; the API documents no limit, and a page of text in one
#: cell is a pasted mistake far more often than something an agent should read.
MAX_METADATA_CHARS = 2_000
#: Why a row hidden in the workbook is not called, and how to call it.
HIDDEN_MESSAGE = "hidden in the sheet (unhide the row, or run with --include-hidden-rows, to call it)"
#: A cell that labels its row as adding up the rows above it.
TOTAL_LABEL = re.compile(r"^\s*(?:grand\s*|sub\s*-?\s*)?totals?\s*:?\s*$|^\s*sum\s*:?\s*$", re.IGNORECASE)
#: Rows at the bottom of a sheet looked at for totals.
TOTALS_ROWS = 5
#: A cell of the phone column that is a plain number (digits, or a float export of them).
_PLAIN_NUMBER = r"^\s*[0-9]+(?:\.0+)?\s*$"
#: Rows checked against the schema at a time.
RULE_SLICE_ROWS = 131_072

#: The command-line flag that gives each field's run-level default.
DEFAULT_FLAGS = {
    "schedule_at": "--schedule-at",
    "min_trigger_time": "--min-trigger-time",
    "max_trigger_time": "--max-trigger-time",
    "carry_over": "--carry-over",
    "number_of_retries": "--retries",
    "gap_between_retries": "--gap",
    "priority": "--priority",
}


@dataclass(frozen=True)
class Defaults:
    """Run-level values for blank cells (``--priority 0`` and friends), as the user wrote them."""

    values: dict[str, Cell] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.values) - set(DEFAULT_FLAGS)
        if unknown:
            raise UsageError(f"no default can be given for {', '.join(sorted(unknown))}")


@dataclass(frozen=True)
class Validation:
    """Every row's parsed request, status and problems; indexed by spreadsheet row."""

    requests: pd.DataFrame
    status: pd.Series
    message: pd.Series
    problems: pd.DataFrame
    columns: ColumnMap

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.status.value_counts(sort=False).items()}


def check_defaults(defaults: Defaults, ctx: Context) -> None:
    """Refuse a default that would itself be invalid, before any row is looked at."""
    for name, value in defaults.values.items():
        if is_blank(value):
            # A blank default fills nothing: the calls would go out without it (at once, for --schedule-at).
            raise UsageError(
                f"{DEFAULT_FLAGS[name]} is blank", hint="Give it a value, or leave the option out."
            )
    raw = {name: pd.Series([value], dtype=object) for name, value in defaults.values.items()}
    parsed: dict[str, pd.Series] = {}
    for name in ROW_FIELDS:
        if name not in raw:
            parsed[name] = pd.Series([None], dtype=DTYPES[name])
            continue
        values, problems = parse_column(name, raw[name], ctx)
        (problem,) = problems
        if problem:
            raise UsageError(f"{DEFAULT_FLAGS[name]} {cell_text(raw[name][0])!r} {problem}")
        parsed[name] = pd.Series(values, dtype=DTYPES[name])
    # A default that parses can still break a rule (--priority 150, a window out of order).
    broken = _rule_problems(pd.DataFrame(parsed), raw, {})
    if broken:
        _, name, value, error = broken[0]
        raise UsageError(f"{DEFAULT_FLAGS[name]} {value!r} {error}")


def validate_rows(
    sheet: Sheet,
    columns: ColumnMap,
    ctx: Context,
    *,
    defaults: Defaults | None = None,
    allow_duplicates: bool = False,
    include_hidden_rows: bool = False,
) -> Validation:
    """Parse and check every row of ``sheet``; nothing here raises for a bad row.

    Rows hidden in the workbook are ``suppressed`` unless ``include_hidden_rows``.
    """
    defaults = defaults or Defaults()
    check_defaults(defaults, ctx)
    index = sheet.cells.index
    headers = {name: sheet.headers[pos] for name, pos in columns.fields.items()}
    raw: dict[str, pd.Series] = {}
    for name in ROW_FIELDS:
        if name in columns.fields:
            cells = sheet.cells[columns.fields[name]]
            if name in defaults.values:
                default = defaults.values[name]
                blank = blank_mask(cells)
                if blank.any():
                    if is_text_column(cells) and not isinstance(default, str):
                        cells = cells.astype(object)
                    cells = cells.where(~blank, default)
            raw[name] = cells
        elif name in defaults.values:
            raw[name] = pd.Series([defaults.values[name]] * len(index), index=index, dtype=object)
    unreadable: dict[int, str] = {}
    if sheet.shown_formats or sheet.shown_text:
        raw["to_number"], unreadable = phones_as_shown(sheet, columns.fields["to_number"], raw["to_number"])

    # Rows whose cells do not line up with the headers (a text file's ragged rows): the
    # row as a whole is the problem, so no column is named.
    problems: list[tuple[int, str, str, str]] = [
        (int(row), "", "", text) for row, text in sheet.row_problems.items()
    ]
    parsed: dict[str, pd.Series] = {}
    for name in ROW_FIELDS:
        if name not in raw:
            parsed[name] = pd.Series([None] * len(index), index=index, dtype=DTYPES[name])
            continue
        values, errors = parse_column(name, raw[name], ctx)
        parsed[name] = pd.Series(values, index=index, dtype=DTYPES[name])
        del values
        # A column's parsing frees large temporary columns (phone numbers: hundreds of MB for a
        # million rows); the next column's peak should not sit on top of them.
        memory.release()
        label = headers.get(name, name)
        found = np.asarray(errors, dtype=object)
        del errors
        hits = np.flatnonzero(pd.notna(found))
        hits = hits[found[hits] != ""]
        if name == "to_number" and unreadable:
            # A cell whose format shows a country code the loader cannot read has one problem: that.
            hits = hits[~index.take(hits).isin(list(unreadable))]
            parsed[name] = parsed[name].where(~index.isin(list(unreadable)))
            for row, code in unreadable.items():
                value = cell_text(raw[name].loc[row])
                problems.append((row, label, value, unreadable_format(code)))
        if len(hits):
            bad = raw[name].take(hits).tolist()
            for row, cell, error in zip(
                index.take(hits).tolist(), bad, found.take(hits).tolist(), strict=True
            ):
                problems.append((int(row), label, cell_text(cell), error))

    phone_column = headers["to_number"]
    for row in index[blank_mask(raw["to_number"])].tolist():
        problems.append((int(row), phone_column, "", "is blank; every row needs a phone number"))
    totals = totals_rows(sheet, raw["to_number"])
    if totals:
        # A totals row is not a contact: one problem says so, instead of its number's problems.
        problems = [problem for problem in problems if problem[0] not in totals]
        problems.extend((row, "", "", why) for row, why in totals.items())
        parsed["to_number"] = parsed["to_number"].where(~index.isin(list(totals)))

    requests = pd.DataFrame(parsed, index=index)
    problems.extend(_rule_problems(requests, raw, headers))
    problems.extend(_oversized_metadata(sheet, columns))

    problem_table = pd.DataFrame(problems, columns=PROBLEM_COLUMNS)
    # Problems read left to right, as the columns stand in the sheet; defaults come last,
    # and a problem with the row as a whole (a ragged row) first.
    label_order = {headers.get(n, n): columns.fields.get(n, 10_000 + i) for i, n in enumerate(ROW_FIELDS)}
    label_order.update(dict(columns.metadata))
    label_order[""] = -1
    problem_table["_order"] = problem_table["column"].map(label_order)
    problem_table = (
        problem_table.sort_values(["source_row", "_order"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )

    status = pd.Series("valid", index=index, dtype=object)
    message = pd.Series("", index=index, dtype=object)
    if len(problem_table):
        # The table is sorted by row: each row's problems are next to each other.
        joined: dict[int, str] = {}
        for row, column, value, error in zip(
            problem_table["source_row"].tolist(),
            problem_table["column"].tolist(),
            problem_table["value"].tolist(),
            problem_table["error"].tolist(),
            strict=True,
        ):
            sentence = problem_text(str(column), str(value), str(error))
            joined[row] = f"{joined[row]}; {sentence}" if row in joined else sentence
        rows = list(joined)
        status.loc[rows] = "invalid"
        message.loc[rows] = pd.Series(list(joined.values()), index=rows, dtype=object)
    numbers = requests["to_number"]
    hidden = index.isin(list(sheet.hidden_rows)) if sheet.hidden_rows and not include_hidden_rows else None
    if hidden is not None:
        status[hidden] = "suppressed"
        message[hidden] = HIDDEN_MESSAGE
        # A hidden row is not called, so it neither needs fixing nor makes a row a person sees a duplicate.
        problem_table = problem_table[~problem_table["source_row"].isin(index[hidden])].reset_index(drop=True)
        numbers = numbers.where(~hidden)
    if not allow_duplicates:
        _mark_duplicates(numbers, status, message, phone_column)  # totals rows hold no number
    memory.release()
    return Validation(
        requests=requests,
        status=status,
        message=message,
        problems=problem_table,
        columns=columns,
    )


def totals_rows(sheet: Sheet, phones: pd.Series) -> dict[int, str]:
    """The rows at the bottom of ``sheet`` that add up the rows above, each with why it looks so:
    a cell labelled ``Total``, ``Grand Total``, ``Subtotal`` (the last rows so labelled), or a
    phone cell holding the sum (or count) of the phone column's numbers above it."""
    found: dict[int, str] = {}
    rows = sheet.cells.index.tolist()
    if len(rows) > 2 and _adds_up(phones):
        found[int(rows[-1])] = _totals_message("the phone column holds the sum of the numbers above it")
        rows = rows[:-1]
    for row in reversed(rows[-TOTALS_ROWS:]):
        label = next(
            (c for c in sheet.cells.loc[row].tolist() if isinstance(c, str) and TOTAL_LABEL.match(c)), None
        )
        if label is None:
            break
        found[int(row)] = _totals_message(repr(label.strip()))
    return found


def _totals_message(why: str) -> str:
    return f"looks like a totals row ({why}), not a contact; delete the row from the sheet"


def _adds_up(phones: pd.Series) -> bool:
    """Whether the last cell is a number that is the sum, or the count, of the numbers above it."""
    last = phones.iloc[-1]
    if isinstance(last, bool) or not isinstance(last, int | float | str):
        return False
    if isinstance(last, str) and not re.match(_PLAIN_NUMBER, last):
        return False
    total = float(last)
    above = phones.iloc[:-1]
    texts = arrow_text(above)
    if texts is not None:
        import pyarrow as pa
        import pyarrow.compute as pc

        plain = pc.fill_null(pc.match_substring_regex(texts, _PLAIN_NUMBER), False)
        numbers = pc.cast(pc.utf8_trim_whitespace(texts.filter(plain)), pa.float64()).to_numpy()
    else:
        numbers = np.array(
            [
                float(c)
                for c in above.tolist()
                if (isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c))
                or (isinstance(c, str) and re.match(_PLAIN_NUMBER, c))
            ],
            dtype=np.float64,
        )
    counted = int((~blank_mask(above)).sum())
    if counted >= 2 and total == counted:
        return True
    # Floats, as the spreadsheet adds them: equal to 12 significant digits.
    return len(numbers) >= 2 and math.isclose(total, float(numbers.sum()), rel_tol=1e-12)


def phones_as_shown(sheet: Sheet, position: int, cells: pd.Series) -> tuple[pd.Series, dict[int, str]]:
    """The phone cells at column ``position`` of ``sheet`` as the sheet shows them (any phone column:
    a do-not-call list's too): a number whose format shows a country code
    (``"+44 "0000000000``) becomes the text shown (``+44 7911123456``), so the number is read with
    that code and never with ``--default-region``; and the rows (with their formats) whose format
    cannot be shown exactly, to be refused."""
    # What the file writes as shown (.ods): taken as it is. Only rows of ``cells``: the sheet also
    # keeps its header row's (a headerless list's first number is there).
    rows = cells.index
    shown = {
        row: text for (row, column), text in sheet.shown_text.items() if column == position and row in rows
    }
    unreadable: dict[int, str] = {}
    for (row, column), code in sheet.shown_formats.items():
        if column != position or row not in rows:
            continue
        text = as_shown(cells.loc[row], code)
        if text is None:
            unreadable[row] = code
        else:
            shown[row] = text
    if shown:
        cells = cells.astype(object)
        cells.loc[list(shown)] = list(shown.values())
    return cells, unreadable


def unreadable_format(code: str) -> str:
    """Why a cell shown with a country code by number format ``code`` is refused."""
    return (
        f"is shown with a country code by its number format {code}, which the loader cannot read "
        "exactly; type the number as text, with its country code (e.g. +44 7911 123456)"
    )


def _mark_duplicates(numbers: pd.Series, status: pd.Series, message: pd.Series, phone_column: str) -> None:
    """Mark each row whose number an earlier row already has, with that row in the message."""
    present, first = _first_with_same_number(numbers)
    later = np.flatnonzero(first != present)
    if not len(later):
        return  # every number appears once
    at = present[later]
    first_rows = numbers.index.to_numpy()[first[later]]
    # A repeat that also broke a rule keeps saying so: nothing the row says wrong goes unreported.
    own = message.take(at).tolist()
    was_invalid = (status.take(at) == "invalid").tolist()
    status.iloc[at] = "duplicate"
    message.iloc[at] = [
        f"{phone_column}: {number} already appears on row {row}" + (f"; {text}" if bad else "")
        for number, row, text, bad in zip(
            numbers.take(at).tolist(), first_rows.tolist(), own, was_invalid, strict=True
        )
    ]


def _first_with_same_number(numbers: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The positions holding a number, and for each the position of the first with that number.

    The numbers are sorted (stably, so equal numbers keep their order and the
    first of each run is the earliest row), never put into a hash table: an
    E.164 number is ``+`` and at most 15 digits, never starting with 0, so it
    sorts as a 64-bit integer, and a million of them take 8 MB where a hash
    table of a million strings takes well over 100.
    """
    keys = _number_keys(numbers)
    present = np.flatnonzero(keys >= 0)
    keys = keys[present]
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.empty(len(ordered), dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    del ordered, keys
    first = np.empty(len(order), dtype=np.int64)
    first[order] = order[starts][np.cumsum(starts) - 1]
    return present, present[first]


def _number_keys(numbers: pd.Series) -> np.ndarray:
    """Each number as a non-negative integer (equal numbers, equal integers), -1 where there is none."""
    texts = arrow_text(numbers)
    if texts is not None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if pc.all(pc.match_substring_regex(texts, r"^\+[1-9][0-9]{0,17}$")).as_py() is not False:
            digits = pc.cast(pc.utf8_slice_codeunits(texts, 1), pa.int64())
            return np.asarray(pc.fill_null(digits, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    codes, _ = pd.factorize(numbers)
    return np.asarray(codes, dtype=np.int64)


def _oversized_metadata(sheet: Sheet, columns: ColumnMap) -> list[tuple[int, str, str, str]]:
    """Metadata cells too long to send: they are read into the agent's prompt on every call."""
    found: list[tuple[int, str, str, str]] = []
    for key, position in columns.metadata:
        cells = sheet.cells[position]
        texts = arrow_text(cells)
        if texts is not None:
            import pyarrow.compute as pc

            # Bytes bound characters: a column whose longest cell fits needs no count per cell.
            if (pc.max(pc.binary_length(texts)).as_py() or 0) <= MAX_METADATA_CHARS:
                continue
            counted = pc.fill_null(pc.utf8_length(texts), 0)
            lengths = pd.Series(counted.to_numpy(zero_copy_only=False), index=cells.index)
        else:
            lengths = pd.Series(
                [len(c) if isinstance(c, str) else 0 for c in cells.tolist()],
                index=cells.index,
                dtype=np.int64,
            )
        for row in lengths.index[lengths > MAX_METADATA_CHARS]:
            found.append(
                (
                    int(row),
                    key,
                    str(cells[row]),
                    f"is {lengths[row]:,} characters long; metadata values are limited to "
                    f"{MAX_METADATA_CHARS:,} (the agent reads them on every call), so shorten it",
                )
            )
    return found


def _rule_problems(
    requests: pd.DataFrame, raw: dict[str, pd.Series], headers: dict[str, str]
) -> list[tuple[int, str, str, str]]:
    found: set[tuple[int, str, str]] = set()
    out: list[tuple[int, str, str, str]] = []
    # Every rule is about one row, so the rows are checked a slice at a time: pandera's
    # intermediate frames then stay small however long the sheet is.
    for start in range(0, len(requests), RULE_SLICE_ROWS):
        try:
            CallRequests.validate(requests.iloc[start : start + RULE_SLICE_ROWS], lazy=True)
        except pa.errors.SchemaErrors as exc:
            out.extend(_failures(exc.failure_cases, raw, headers, found))
    return out


def _failures(
    cases: pd.DataFrame, raw: dict[str, pd.Series], headers: dict[str, str], found: set[tuple[int, str, str]]
) -> list[tuple[int, str, str, str]]:
    """pandera's failure cases as problems, one per row, column and rule (``found``: those seen)."""
    new: list[tuple[int, str, str]] = []
    for case in cases.itertuples(index=False):
        row: Any = case.index
        if row is None or pd.isna(row):
            # A failure that is not about a row is a bug in the loader, not the sheet.
            raise AssertionError(f"schema failure not tied to a row: {case}")
        column = ROW_CHECK_COLUMNS.get(str(case.check), str(case.column))
        key = (int(row), column, str(case.check))
        if key not in found:
            found.add(key)
            new.append(key)
    # The cells as written, a column at a time: one lookup per cell costs more than the checks.
    rows_of: dict[str, list[int]] = {}
    for row, column, _ in new:
        if column in raw:
            rows_of.setdefault(column, []).append(row)
    cells: dict[tuple[int, str], Any] = {}
    for column, rows in rows_of.items():
        cells.update(zip([(row, column) for row in rows], raw[column].loc[rows].tolist(), strict=True))
    return [
        (row, headers.get(column, column), cell_text(cells.get((row, column), "")), _why(check, row, raw))
        for row, column, check in new
    ]


def _why(check: str, row: int, raw: dict[str, pd.Series]) -> str:
    """The rule's message, naming the end the window's start is not before, and saying so where
    rounding to whole minutes is what emptied the window."""
    if check != WINDOW_ERROR:
        return check
    written = [raw[name].loc[row] for name in ("min_trigger_time", "max_trigger_time") if name in raw]
    # The start is the cell reported; the end may be in another column, or a run-level default.
    end = shorten(cell_text(raw["max_trigger_time"].loc[row]).strip()) if "max_trigger_time" in raw else ""
    check = f"{check} {end}" if end else check
    if any(seconds % 60 for seconds, _ in map(seconds_of_day, written) if seconds is not None):
        return f"{check} once both are rounded to whole minutes (the start up, the end down)"
    return check


def problem_text(column: str, value: str, error: str) -> str:
    """One problem as people read it: ``priority: 150 is outside [-100, 100]``."""
    if not column:
        return error
    value = shorten(value.strip())
    return f"{column}: {value} {error}" if value else f"{column}: {error}"
