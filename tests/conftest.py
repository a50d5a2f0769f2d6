"""Fixtures for the per-stage tests (read, columns, normalise, validate, payload, results), and a
private home folder for every test, so that no test reads or writes the real per-user call ledger."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
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


@contextlib.contextmanager
def _private_home(folder: Path) -> Iterator[None]:
    """``HOME`` and ``XDG_STATE_HOME`` in ``folder``, ``CALLKARO_HISTORY`` unset: the default ledger
    (``platformdirs.user_state_path``) lands there. Set in ``os.environ``, so every command a test
    starts as a subprocess inherits it too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(folder))
        patch.setenv("XDG_STATE_HOME", str(folder / ".local" / "state"))
        patch.delenv("CALLKARO_HISTORY", raising=False)
        yield


@pytest.fixture(autouse=True, scope="module")
def _private_home_per_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """For module fixtures that run the loader before any test's own home exists."""
    with _private_home(tmp_path_factory.mktemp("home")):
        yield


@pytest.fixture(autouse=True)
def _private_home_per_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test its own ledger: one test's calls never suppress another's (nor a real user's)."""
    with _private_home(tmp_path_factory.mktemp("home")):
        yield


def default_ledger() -> Path:
    """Where the loader keeps its per-user ledger in the current test."""
    return Path(os.environ["XDG_STATE_HOME"]) / "callkaro-loader" / "ledger.sqlite"


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
