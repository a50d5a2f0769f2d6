"""Stage 3: check every row completely and decide whether it may be sent.

Parsing (``loader.normalise``) and the rules (``schemas.CallRequests``) each
report problems; this module gathers them into one table, one line per
problem, the way pandera reports ``failure_cases``, and gives each row its
status: ``valid``, ``invalid`` or ``duplicate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pandera.pandas as pa

from loader.cells import Cell, cell_text, is_blank, shorten
from loader.columns import ROW_FIELDS, ColumnMap
from loader.errors import UsageError
from loader.normalise import Context, parse_column
from loader.read import Sheet
from schemas import ROW_CHECK_COLUMNS, CallRequests

PROBLEM_COLUMNS = ["source_row", "column", "value", "error"]
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
                cells = cells.where(~cells.map(is_blank), defaults.values[name])
            raw[name] = cells
        elif name in defaults.values:
            raw[name] = pd.Series([defaults.values[name]] * len(index), index=index, dtype=object)

    problems: list[tuple[int, str, str, str]] = []
    parsed: dict[str, pd.Series] = {}
    for name in ROW_FIELDS:
        if name not in raw:
            parsed[name] = pd.Series([None] * len(index), index=index, dtype=_DTYPES[name])
            continue
        values, errors = parse_column(name, raw[name], ctx)
        parsed[name] = pd.Series(values, index=index, dtype=_DTYPES[name])
        label = headers.get(name, name)
        # Only the rows with a problem are visited: a clean million-row column costs little here.
        failing = [i for i, error in enumerate(errors) if error is not None]
        if failing:
            column_cells = raw[name].to_numpy(dtype=object)
            rows = index.to_numpy()
            for i in failing:
                problems.append((int(rows[i]), label, cell_text(column_cells[i]), str(errors[i])))
        if name == "to_number":
            # Parsing gives (None, None) for a blank cell and nothing else.
            rows = index.to_numpy()
            for i, (value, error) in enumerate(zip(values, errors, strict=True)):
                if value is None and error is None:
                    problems.append((int(rows[i]), label, "", "is blank; every row needs a phone number"))
    phone_column = headers["to_number"]

    requests = pd.DataFrame(parsed, index=index)
    problems.extend(_rule_problems(requests, raw, headers))

    problem_table = pd.DataFrame(problems, columns=PROBLEM_COLUMNS)
    # Problems read left to right, as the columns stand in the sheet; defaults come last.
    label_order = {headers.get(n, n): columns.fields.get(n, 10_000 + i) for i, n in enumerate(ROW_FIELDS)}
    problem_table["_order"] = problem_table["column"].map(label_order)
    problem_table = (
        problem_table.sort_values(["source_row", "_order"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )

    status = pd.Series("valid", index=index, dtype=object)
    message = pd.Series("", index=index, dtype=object)
    if len(problem_table):
        text = pd.Series(
            [
                problem_text(str(column), str(value), str(error))
                for column, value, error in zip(
                    problem_table["column"], problem_table["value"], problem_table["error"], strict=True
                )
            ],
            index=problem_table.index,
            dtype=object,
        )
        joined = text.groupby(problem_table["source_row"]).agg("; ".join)
        status.loc[joined.index] = "invalid"
        message.loc[joined.index] = joined
    if not allow_duplicates:
        numbers = requests["to_number"]
        repeats = numbers.notna() & numbers.duplicated(keep="first")
        if repeats.any():
            present = numbers[numbers.notna()]
            first = present[~present.duplicated(keep="first")]
            first_row = pd.Series(first.index, index=first.to_numpy(dtype=object))
            repeated = numbers[repeats].to_numpy(dtype=object)
            rows_before = first_row.reindex(repeated).to_numpy()
            status[repeats] = "duplicate"
            message[repeats] = pd.Series(
                [
                    f"{phone_column}: {number} already appears on row {row}"
                    for number, row in zip(repeated.tolist(), rows_before.tolist(), strict=True)
                ],
                index=numbers.index[repeats],
                dtype=object,
            )
    return Validation(
        requests=requests,
        status=status,
        message=message,
        problems=problem_table,
        columns=columns,
    )


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
    """One problem as users read it: ``priority: 150 is outside [-100, 100]``."""
    shown = shorten(value.strip())
    return f"{column}: {shown} {error}" if shown else f"{column}: {error}"
