"""Everything the loader raises on purpose, as one tree.

    LoaderError                     base; ``exit_code`` is what the CLI exits with
    ├── UsageError                  a flag or option that cannot work (exit 2)
    ├── InputFileError              the input file as a whole cannot be used (exit 2)
    │   ├── NoSuchSheetError        the workbook has no such sheet
    │   ├── NoRowsError             nothing below the header row
    │   └── ColumnError             the header row cannot be mapped to call fields
    ├── StateError                  the state or the call ledger cannot be used, or is held (exit 2)
    ├── UnrecordedError             calls were made, but a file reporting them could not be written (exit 1)
    ├── ApiRefusedError             the API refused the run itself (exit 3)
    │   ├── AuthError               401/403: the key is missing, wrong or not allowed
    │   ├── NotFoundError           404 for the agent or the campaign
    │   └── KeyEchoedError          the API sent the key back as an id; the id is never stored
    ├── ApiUnavailableError         the API could not be reached, or failed every request (exit 4)
    └── RequestError                one request did not schedule a call; becomes a row outcome
        ├── RejectedError           400/404 and other final answers: the row is ``failed``
        ├── TransientError          429, 503, the API's own 5xx error, or never sent: safe to retry
        └── NoAnswerError           sent, but no answer (or a gateway's 5xx) came: the row is ``uncertain``

Problems with single rows are never raised: they are collected as a table
(``loader.validate.Validation.problems``) and end up in the results file.
Each exception's message is a complete sentence a person can act on; ``hint``
adds how to fix it where the CLI can say more.
"""

from __future__ import annotations

from pathlib import Path


class LoaderError(Exception):
    """Base of every error the loader raises deliberately."""

    exit_code = 2
    #: Rows per status in the results file, when the run wrote one before failing (it had started sending).
    counts: dict[str, int] | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(LoaderError):
    """A command-line flag, config key or library argument that cannot work."""


def cannot_write(what: str, exc: OSError) -> UsageError:
    """``what`` (e.g. ``--output out.csv``) cannot be written: the one-line error, saying why."""
    if isinstance(exc, FileExistsError) and exc.filename:
        why = f"{exc.filename} is a file, not a folder"  # what makedirs says when a file is in the way
    else:
        why = exc.strerror or str(exc)
    return UsageError(f"{what} cannot be written ({why})", hint="Choose a path in a folder you can write to.")


class InputFileError(LoaderError):
    """The input file cannot be read or has no usable table."""

    def __init__(self, path: Path | str, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {problem}", hint=hint)
        self.path = Path(path)
        self.problem = problem


class NoSuchSheetError(InputFileError):
    """The workbook has no sheet by the name or index asked for."""


class NoRowsError(InputFileError):
    """The sheet (or file) holds no rows below its header row, or nothing at all."""


class ColumnError(InputFileError):
    """The header row cannot be mapped to call fields (no phone column, two columns for one field)."""


class StateError(LoaderError):
    """The state beside the results file cannot be used (another agent or campaign, damaged, or
    written by an older loader for another sheet), or another run holds it; or the call ledger
    cannot be used (not the loader's, damaged, newer, or locked too long)."""


class UnrecordedError(LoaderError):
    """Calls were made, but the results file or the summary could not be written. The state
    beside the results file keeps every call, so the same command run again writes them; a
    person must see to it (exit 1), and it must not read as "nothing was sent" (exit 2)."""

    exit_code = 1


class ApiRefusedError(LoaderError):
    """The API refused the run as a whole; nothing more is sent."""

    exit_code = 3

    def __init__(self, message: str, *, status_code: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status_code = status_code


class AuthError(ApiRefusedError):
    """The API answered 401 or 403: the key is missing, wrong or lacks permission."""


class NotFoundError(ApiRefusedError):
    """The API answered 404 for the run's agent or campaign."""


class ApiUnavailableError(LoaderError):
    """The API was unreachable, or failed the campaign or every request, for as long as the run
    kept retrying (``--retry-for``): rows not sent are ``pending``, nothing is lost, and the same
    command run later resumes."""

    exit_code = 4


class KeyEchoedError(ApiRefusedError):
    """The API answered with the API key as an id (``field``: ``batch_id`` or ``call_id``).

    For a ``call_id`` the API said the call was scheduled: the row is ``uncertain``, never resent.
    """

    def __init__(self, message: str, *, field: str, hint: str | None = None) -> None:
        super().__init__(message, status_code=200, hint=hint)
        self.field = field


class RequestError(LoaderError):
    """One request to the API did not schedule a call; the send stage turns it into a row outcome."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class RejectedError(RequestError):
    """The API gave a final answer against this request (400, 404 for the row, ...): do not retry."""


class TransientError(RequestError):
    """The request may be sent again: it never reached the server, or the server said try later."""

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class NoAnswerError(RequestError):
    """The request was sent but no answer came, or a gateway answered (502, 504, a 5xx that is not the
    API's own error): the call may or may not be scheduled."""
