"""callkaro-loader: a contacts spreadsheet becomes a scheduled CallKaro calling campaign.

Library use, in one call each::

    import loader
    result = loader.load_campaign("leads.xlsx", agent_id="...", default_region="IN")
    report = loader.validate_file("leads.xlsx", default_region="IN")
    nightly = loader.load_campaign("export.csv", config="nightly.toml", suppress=["dnc.csv"])
    where = loader.read_status("export.results.csv")

The stages, in the order data flows through them:

    loader.read        read_sheet: the file's cells, exactly as written
                         loader.formats: what the file really is, by content as well as name
                         loader.text_files: encodings, separators, quotes, ragged rows
                         loader.workbooks: zip and XML safety checks, then calamine
                         loader.workbook_view: hidden rows, country codes shown by formats
                         loader.limits: the cell, column and size limits, in one place
    loader.columns     map_columns: which column is which call field; the rest is metadata
    loader.normalise   parsers: each cell as the value the API expects
    loader.phones      phone numbers a whole column at a time, as phonenumbers decides them
    schemas            CallRequests: the API's field rules, as a pandera DataFrameModel
    loader.validate    validate_rows: every problem of every row, and each row's status
    loader.suppress    do-not-call lists (--suppress): listed numbers are 'suppressed'
                         loader.list_entries: the numbers one list entry holds, or why it is refused
    loader.history     History: the call ledger, every number scheduled, shared by runs (on by default)
    loader.payload     build_bodies: one JSON body per sendable row, built column-wise
    loader.client      CallKaroClient: the two endpoints, answers mapped to errors
    loader.transport   aiohttp's connection pool under httpx, honest about what was sent
    loader.send        send_calls: bounded concurrency, retries, outcomes into the state
    loader.campaign    SendJob: a run's campaign and calls (loaded only by a run that sends)
    loader.state       RunState: SQLite beside the results; resume and never-twice; GroupCommit
    loader.results     the results file, derived from validation and state
    loader.pipeline    load_campaign / validate_file: the whole job, planned alike for run and previews
    loader.config      load_config: options from a --config TOML file
    loader.monitoring  --log-file (JSON lines) and --summary-json

Beside the stages: ``loader.report`` (``validate --report``: problems as CSV
lines or a marked-up copy of the sheet), ``loader.template`` (an empty
sheet to fill in) and ``loader.memory`` (freed memory handed back to the
system between stages). What may be read or written at all (regular
files only, read up to their limit) is decided in ``loader.files``.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loader.client import CallKaroClient
    from loader.columns import ColumnMap, map_columns
    from loader.config import load_config
    from loader.errors import (
        ApiRefusedError,
        ApiUnavailableError,
        AuthError,
        ColumnError,
        InputFileError,
        LoaderError,
        NotFoundError,
        StateError,
        UnrecordedError,
        UsageError,
    )
    from loader.history import History
    from loader.pipeline import InputOptions, RunResult, ValidateResult, load_campaign, validate_file
    from loader.read import Sheet, read_sheet
    from loader.state import RunStatus, read_status
    from loader.suppress import SuppressionList, read_suppression_list
    from loader.validate import Validation, validate_rows

#: Where each public name lives. They are imported on first use, so that ``import loader``
#: (and every command) loads only what it needs: ``validate`` never loads the HTTP client.
_HOMES = {
    "CallKaroClient": "loader.client",
    "ColumnMap": "loader.columns",
    "map_columns": "loader.columns",
    "load_config": "loader.config",
    "ApiRefusedError": "loader.errors",
    "ApiUnavailableError": "loader.errors",
    "AuthError": "loader.errors",
    "ColumnError": "loader.errors",
    "InputFileError": "loader.errors",
    "LoaderError": "loader.errors",
    "NotFoundError": "loader.errors",
    "StateError": "loader.errors",
    "UnrecordedError": "loader.errors",
    "UsageError": "loader.errors",
    "History": "loader.history",
    "InputOptions": "loader.pipeline",
    "RunResult": "loader.pipeline",
    "ValidateResult": "loader.pipeline",
    "load_campaign": "loader.pipeline",
    "validate_file": "loader.pipeline",
    "Sheet": "loader.read",
    "read_sheet": "loader.read",
    "RunStatus": "loader.state",
    "read_status": "loader.state",
    "SuppressionList": "loader.suppress",
    "read_suppression_list": "loader.suppress",
    "Validation": "loader.validate",
    "validate_rows": "loader.validate",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'loader' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


__version__ = "0.1.0"

__all__ = [
    "ApiRefusedError",
    "ApiUnavailableError",
    "AuthError",
    "CallKaroClient",
    "ColumnError",
    "ColumnMap",
    "History",
    "InputFileError",
    "InputOptions",
    "LoaderError",
    "NotFoundError",
    "RunResult",
    "RunStatus",
    "Sheet",
    "StateError",
    "UnrecordedError",
    "SuppressionList",
    "UsageError",
    "ValidateResult",
    "Validation",
    "__version__",
    "load_campaign",
    "load_config",
    "map_columns",
    "read_sheet",
    "read_status",
    "read_suppression_list",
    "validate_file",
    "validate_rows",
]
