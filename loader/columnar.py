"""A sheet's cells gathered column by column, a slice of rows at a time.

A workbook of a million rows read as Python lists costs a Python object per
cell and a list per row, several times the size of the sheet. ``collect_columns``
takes the rows as the reader produces them, ``CHUNK_ROWS`` at a time, and
keeps each column compactly: a pyarrow text array where every cell is text,
a numpy array of Python objects where a column holds numbers, dates or
booleans. A blank cell is ``""``, as everywhere in the loader.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loader.cells import Cell, cell_types, of_type
from loader.errors import InputFileError
from loader.limits import MAX_CELL_CHARS

#: Rows turned into columns at a time.
CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class Columns:
    """Cells by column (``arrays[i]`` is column ``i``, row ``r`` is spreadsheet row ``r + 1``)."""

    arrays: list[Any]
    height: int

    def check_cell_sizes(self, path: Path) -> None:
        """Refuse a cell longer than Excel can hold, naming the first one as rows are read."""
        import pyarrow as pa
        import pyarrow.compute as pc

        first: list[int] = []
        for array in self.arrays:
            if isinstance(array, pa.ChunkedArray):
                texts, at = array, None
            else:  # the text cells of a column of Python objects
                at = np.flatnonzero(of_type(cell_types(array), str))
                texts = pa.array(array[at], type=pa.large_string())
            if (pc.max(pc.binary_length(texts)).as_py() or 0) <= MAX_CELL_CHARS:
                continue  # bytes bound characters: nothing here is too long
            found = np.flatnonzero(pc.utf8_length(texts).to_numpy(zero_copy_only=False) > MAX_CELL_CHARS)
            if len(found):  # more bytes than the limit, yet no more characters (é, Hindi, emoji): fine
                first.append(int(found[0] if at is None else at[found[0]]))
        if not first:
            return
        row = min(first)
        for array in self.arrays:
            cell = cell_at(array, row)
            if type(cell) is str and len(cell) > MAX_CELL_CHARS:
                raise InputFileError(
                    path,
                    f"row {row + 1} has a cell of {len(cell):,} characters, more than the "
                    f"{MAX_CELL_CHARS:,} a spreadsheet cell can hold",
                )


def cell_at(array: Any, row: int) -> Cell:
    """One cell of a column, as a Python value."""
    if isinstance(array, np.ndarray):
        return array[row]
    return array[row].as_py()


def collect_columns(rows: Iterator[list[Cell]], width: int) -> Columns:
    """``rows`` (each ``width`` cells long) as ``Columns``."""
    import pyarrow as pa

    parts: list[list[Any]] = [[] for _ in range(width)]
    height = 0
    while block := list(itertools.islice(rows, CHUNK_ROWS)):
        height += len(block)
        for position, values in enumerate(zip(*block, strict=True)):
            parts[position].append(_compact(values))
        del block
    arrays: list[Any] = []
    for pieces in parts:
        if all(isinstance(p, pa.Array) for p in pieces):
            arrays.append(pa.chunked_array(pieces, type=pa.large_string()))
        else:
            arrays.append(np.concatenate([_objects(p) for p in pieces]))
        pieces.clear()
    return Columns(arrays=arrays, height=height if width else 0)


def _compact(values: tuple[Cell, ...]) -> Any:
    import pyarrow as pa

    try:
        # Most columns hold only text; pyarrow stops at the first cell that is not (a number,
        # a date, a boolean). It would take bytes as text too, but calamine never gives bytes.
        texts = pa.array(values, type=pa.large_string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        texts = None
    if texts is not None and not texts.null_count:
        return texts
    out = np.empty(len(values), dtype=object)
    out[:] = values
    kinds = cell_types(out)
    floats = np.flatnonzero(of_type(kinds, float))
    if len(floats):
        floats = floats[np.isnan(out[floats].astype(float))]
    out[floats] = ""
    out[of_type(kinds, type(None))] = ""
    return out


def _objects(piece: Any) -> np.ndarray:
    if isinstance(piece, np.ndarray):
        return piece
    out = np.empty(len(piece), dtype=object)
    out[:] = piece.to_pylist()
    return out
