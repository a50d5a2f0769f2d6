"""Stage 4: build the JSON body of ``POST /call/outbound`` for each valid row.

Bodies are built column by column (one pass per field, then one loop that
only assembles dicts), never through a per-row ``DataFrame.to_dict`` or any
other per-row pandas call: that is the difference between seconds and
minutes on a million-row sheet. Metadata cells are typed once per distinct
value of their column.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from loader.cells import distinct_cells
from loader.columns import ROW_FIELDS
from loader.normalise import metadata_value
from loader.read import Sheet
from loader.validate import Validation


def _plain(value: Any) -> Any:
    """A pandas scalar as the plain JSON value it stands for, or None for a blank."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item") and not isinstance(value, list):
        return value.item()
    return value


def field_values(column: pd.Series) -> list[Any]:
    """A parsed call-field column as plain JSON values, None for blanks, in one pass.

    Nullable integer, boolean and string columns convert in C (``to_numpy`` with
    ``na_value=None`` yields Python ints, bools and strs); only object columns
    (``gap_between_retries``, a number or a list) look at each value.
    """
    if column.dtype != object:
        return column.to_numpy(dtype=object, na_value=None).tolist()  # type: ignore[call-overload]
    return [_plain(v) for v in column.tolist()]


def metadata_values(cells: pd.Series) -> list[Any]:
    """``metadata_value`` of every cell, each distinct cell typed once (columns repeat a lot)."""
    codes, distinct = distinct_cells(cells.to_numpy(dtype=object))
    typed = np.empty(len(distinct), dtype=object)
    for code, cell in enumerate(distinct):
        typed[code] = metadata_value(cell)
    return typed.take(codes).tolist()


#: Rows per chunk when bodies are made only to be checked (a dry run): memory stays flat.
CHUNK_ROWS = 16_384


def check_bodies(
    sheet: Sheet,
    validation: Validation,
    *,
    agent_id: str,
    batch_id: str | None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Build every sendable row's body, as a send would, keeping none of them (``--dry-run``).

    A chunk of rows at a time, so a dry run of a million rows never holds a
    million bodies. Returns how many bodies were made.
    """
    rows = validation.status.index[validation.status == "valid"]
    made = 0
    for start in range(0, len(rows), chunk_rows):
        chunk = rows[start : start + chunk_rows]
        made += len(build_bodies(sheet, validation, agent_id=agent_id, batch_id=batch_id, rows=chunk))
    return made


def build_bodies(
    sheet: Sheet,
    validation: Validation,
    *,
    agent_id: str,
    batch_id: str | None,
    rows: pd.Index | None = None,
) -> dict[int, dict[str, Any]]:
    """The request body of every sendable row, keyed by spreadsheet row.

    ``rows`` limits the work to those rows (a resumed run sends only what is
    left); by default every ``valid`` row gets a body. Field order follows
    the API's table, so bodies read the same in logs and in the sandbox.
    """
    if rows is None:
        rows = validation.status.index[validation.status == "valid"]
    requests = validation.requests.loc[rows]
    numbers = requests["to_number"].tolist()
    columns: list[tuple[str, list[Any]]] = []
    for name in ROW_FIELDS[1:]:
        values = field_values(requests[name])
        if any(v is not None for v in values):
            columns.append((name, values))
    meta_columns: list[tuple[str, list[Any]]] = []
    cells = sheet.cells.loc[rows]
    for key, position in validation.columns.metadata:
        values = metadata_values(cells[position])
        if any(v is not None for v in values):
            meta_columns.append((key, values))

    bodies: dict[int, dict[str, Any]] = {}
    head: dict[str, Any] = {"agent_id": agent_id}
    if batch_id:
        head["batch_id"] = batch_id
    meta_keys = [key for key, _ in meta_columns]
    field_names = [name for name, _ in columns]
    # Row-wise views of the columns; rows without any such column get an empty tuple each.
    count = len(numbers)
    meta_rows = list(zip(*(v for _, v in meta_columns), strict=True)) if meta_columns else [()] * count
    field_rows = list(zip(*(v for _, v in columns), strict=True)) if columns else [()] * count
    for row, number, meta_row, field_row in zip(rows.tolist(), numbers, meta_rows, field_rows, strict=True):
        body: dict[str, Any] = {"to_number": number, **head}
        metadata = {key: value for key, value in zip(meta_keys, meta_row, strict=True) if value is not None}
        if metadata:
            body["metadata"] = metadata
        for name, value in zip(field_names, field_row, strict=True):
            if value is not None:
                body[name] = value
        bodies[int(row)] = body
    return bodies
