"""Stage 3: check every row completely and decide whether it may be sent.

Parsing (``loader.normalise``) and the rules (``schemas.CallRequests``) each
report problems; this module gathers them into one table, one line per
problem, the way pandera reports ``failure_cases``, and gives each row its
status: ``valid``, ``invalid`` or ``duplicate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from loader.cells import Cell, blank_mask, cell_text, is_text_column, shorten
from loader.columns import ROW_FIELDS, ColumnMap
from loader.errors import UsageError
from loader.normalise import Context, parse_column
from loader.read import Sheet
from schemas import ROW_CHECK_COLUMNS, CallRequests

PROBLEM_COLUMNS = ["source_row", "column", "value", "error"]
#: Longest metadata value sent, in characters. Metadata goes into the voice agent's
#: prompt on every call; the API documents no limit, and a page of text in one
#: cell is a pasted mistake far more often than something an agent should read.
MAX_METADATA_CHARS = 2_000

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
_DTYPES: dict[str, Any] = {
    "to_number": "str",
    "schedule_at": "str",
    "min_trigger_time": "str",
    "max_trigger_time": "str",
    "carry_over": "boolean",
    "number_of_retries": "Int64",
    "gap_between_retries": object,
    "priority": "Int64",
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
    raw = {name: pd.Series([value], dtype=object) for name, value in defaults.values.items()}
    parsed: dict[str, pd.Series] = {}
    for name in ROW_FIELDS:
        if name not in raw:
            parsed[name] = pd.Series([None], dtype=_DTYPES[name])
            continue
        values, problems = parse_column(name, raw[name], ctx)
        if problems[0]:
            raise UsageError(f"{DEFAULT_FLAGS[name]} {cell_text(raw[name][0])!r} {problems[0]}")
        parsed[name] = pd.Series(values, dtype=_DTYPES[name])
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
) -> Validation:
    """Parse and check every row of ``sheet``; nothing here raises for a bad row."""
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

    # Rows whose cells do not line up with the headers (a text file's ragged rows): the
    # row as a whole is the problem, so no column is named.
    problems: list[tuple[int, str, str, str]] = [
        (int(row), "", "", text) for row, text in sheet.row_problems.items()
    ]
    parsed: dict[str, pd.Series] = {}
    for name in ROW_FIELDS:
        if name not in raw:
            parsed[name] = pd.Series([None] * len(index), index=index, dtype=_DTYPES[name])
            continue
        values, errors = parse_column(name, raw[name], ctx)
        parsed[name] = pd.Series(values, index=index, dtype=_DTYPES[name])
        del values
        label = headers.get(name, name)
        found = np.asarray(errors, dtype=object)
        del errors
        hits = np.flatnonzero(pd.notna(found) & (found != ""))
        if len(hits):
            bad = raw[name].take(hits).tolist()
            for row, cell, error in zip(
                index.take(hits).tolist(), bad, found.take(hits).tolist(), strict=True
            ):
                problems.append((int(row), label, cell_text(cell), error))

    phone_column = headers["to_number"]
    for row in index[blank_mask(raw["to_number"])].tolist():
        problems.append((int(row), phone_column, "", "is blank; every row needs a phone number"))

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
    if not allow_duplicates:
        _mark_duplicates(requests["to_number"], status, message, phone_column)
    return Validation(
        requests=requests,
        status=status,
        message=message,
        problems=problem_table,
        columns=columns,
    )


def _mark_duplicates(numbers: pd.Series, status: pd.Series, message: pd.Series, phone_column: str) -> None:
    """Mark each row whose number an earlier row already has, with that row in the message.

    Works on the numbers' codes (``pd.factorize`` numbers them in order of
    first appearance, so a row repeats a number exactly when its code is not
    above every code before it), never on a set of a million Python strings.
    """
    codes, distinct = pd.factorize(numbers)
    if len(distinct) == int((codes >= 0).sum()):
        return  # every number appears once
    highest_before = np.maximum.accumulate(np.concatenate(([-1], codes[:-1])))
    repeats = (codes >= 0) & (codes <= highest_before)
    first_rows = numbers.index.to_numpy()[np.flatnonzero((codes >= 0) & ~repeats)]
    at = np.flatnonzero(repeats)
    status.iloc[at] = "duplicate"
    message.iloc[at] = [
        f"{phone_column}: {number} already appears on row {row}"
        for number, row in zip(
            distinct.take(codes[at]).tolist(), first_rows.take(codes[at]).tolist(), strict=True
        )
    ]


def _oversized_metadata(sheet: Sheet, columns: ColumnMap) -> list[tuple[int, str, str, str]]:
    """Metadata cells too long to send: they are read into the agent's prompt on every call."""
    found: list[tuple[int, str, str, str]] = []
    for key, position in columns.metadata:
        cells = sheet.cells[position]
        if is_text_column(cells):
            lengths = cells.str.len()
        else:
            lengths = cells.map(lambda c: len(c) if isinstance(c, str) else 0)
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
    try:
        CallRequests.validate(requests, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return []
    found: set[tuple[int, str, str]] = set()
    out: list[tuple[int, str, str, str]] = []
    for case in cases.itertuples(index=False):
        row: Any = case.index
        if row is None or pd.isna(row):
            # A failure that is not about a row is a bug in the loader, not the sheet.
            raise AssertionError(f"schema failure not tied to a row: {case}")
        column = ROW_CHECK_COLUMNS.get(str(case.check), str(case.column))
        key = (int(row), column, str(case.check))
        if key in found:
            continue
        found.add(key)
        cell = raw[column][row] if column in raw else ""
        out.append((int(row), headers.get(column, column), cell_text(cell), str(case.check)))
    return out


def problem_text(column: str, value: str, error: str) -> str:
    """One problem as people read it: ``priority: 150 is outside [-100, 100]``."""
    if not column:
        return error
    value = shorten(value.strip())
    return f"{column}: {value} {error}" if value else f"{column}: {error}"
