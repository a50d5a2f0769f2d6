"""Fixtures for the per-stage tests (read, columns, normalise, validate, payload, results)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pinned_clock
import pytest

from loader.cells import Cell
from loader.normalise import Context
from loader.read import Sheet

# Before any test runs, so that module-scoped fixtures' runs read the pinned clock too.
pinned_clock.pin()

KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")
#: "Now" for every test that judges past times: 2030-01-01 05:30 in Kolkata.
NOW = dt.datetime(2030, 1, 1, 0, 0, tzinfo=dt.UTC)

MakeSheet = Callable[..., Sheet]


@pytest.fixture
def ctx() -> Context:
    """Numbers default to India, times are judged in Kolkata, and the clock is fixed."""
    return Context(default_region="IN", timezone=KOLKATA, now=NOW)


@pytest.fixture
def make_sheet() -> MakeSheet:
    """A ``Sheet`` as ``read_sheet`` would give it, without a file: header on row 1, data from row 2."""

    def make(
        headers: Sequence[str],
        rows: Sequence[Sequence[Cell]],
        *,
        path: str | Path = "leads.csv",
        first_row: int = 2,
    ) -> Sheet:
        cells = pd.DataFrame([list(r) for r in rows], columns=range(len(headers)), dtype=object)
        cells.index = pd.RangeIndex(first_row, first_row + len(rows))
        return Sheet(path=Path(path), headers=list(headers), cells=cells, header_row=first_row - 1)

    return make
