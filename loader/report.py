"""The problem report of ``validate --report``: one line per problem, for people to fix the sheet."""

from __future__ import annotations

from pathlib import Path

from loader.columns import ColumnMap
from loader.errors import UsageError
from loader.read import Sheet
from loader.results import _atomic_write, inert
from loader.validate import PROBLEM_COLUMNS, Validation


def write_report(path: Path, sheet: Sheet, columns: ColumnMap, validation: Validation) -> None:
    """Write ``validation``'s problems to ``path`` (``.csv``: ``source_row, column, value, error``)."""
    if path.suffix.lower() != ".csv":
        raise UsageError(f"--report {path} must end in .csv")
    import csv

    def write(handle: object) -> None:
        writer = csv.writer(handle, lineterminator="\r\n")  # type: ignore[arg-type]
        writer.writerow(PROBLEM_COLUMNS)
        for problem in validation.problems.itertuples(index=False):
            writer.writerow(
                [problem.source_row, inert(str(problem.column)), inert(str(problem.value)), problem.error]
            )

    _atomic_write(path, write, binary=False)
