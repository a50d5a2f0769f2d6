"""callkaro-loader: a contacts spreadsheet becomes a scheduled CallKaro calling campaign.

Library use, in one call each::

    import loader
    result = loader.load_campaign("leads.xlsx", agent_id="...", default_region="IN")
    report = loader.validate_file("leads.xlsx", default_region="IN")

The stages, in the order data flows through them:

    loader.read        read_sheet: the file's cells, exactly as written
    loader.columns     map_columns: which column is which call field; the rest is metadata
    loader.normalise   parsers: each cell as the value the API expects
    loader.phones      phone numbers a whole column at a time, as phonenumbers decides them
    schemas            CallRequests: the API's field rules, as a pandera DataFrameModel
    loader.validate    validate_rows: every problem of every row, and each row's status
    loader.payload     build_bodies: one JSON body per sendable row, built column-wise
    loader.client      CallKaroClient: the two endpoints, answers mapped to errors
    loader.transport   aiohttp's connection pool under httpx, honest about what was sent
    loader.send        send_calls: bounded concurrency, retries, outcomes into the state
    loader.state       RunState: SQLite beside the results; resume and never-twice; GroupCommit
    loader.results     the results file, derived from validation and state
    loader.pipeline    load_campaign / validate_file: the whole job
"""

from loader.client import CallKaroClient
from loader.columns import ColumnMap, map_columns
from loader.errors import (
    ApiRefusedError,
    AuthError,
    ColumnError,
    InputFileError,
    LoaderError,
    NotFoundError,
    StateError,
    UsageError,
)
from loader.pipeline import InputOptions, RunResult, ValidateResult, load_campaign, validate_file
from loader.read import Sheet, read_sheet
from loader.validate import Validation, validate_rows

__version__ = "0.1.0"

__all__ = [
    "ApiRefusedError",
    "AuthError",
    "CallKaroClient",
    "ColumnError",
    "ColumnMap",
    "InputFileError",
    "InputOptions",
    "LoaderError",
    "NotFoundError",
    "RunResult",
    "Sheet",
    "StateError",
    "UsageError",
    "ValidateResult",
    "Validation",
    "__version__",
    "load_campaign",
    "map_columns",
    "read_sheet",
    "validate_file",
    "validate_rows",
]
