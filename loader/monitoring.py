"""What a run tells the people and programs watching it: ``--log-file`` and ``--summary-json``.

``--log-file PATH`` appends one JSON object per line: one per row outcome
(``"event": "outcome"``) and one per retry (``"event": "retry"``), framed by
``run_started`` and ``run_finished``. Every line has ``time`` (UTC, ISO
8601); row lines have ``source_row``, ``status``, ``call_id``, ``attempt``
and ``message``. Rows that are never sent (invalid, duplicate, suppressed)
get their outcome line when the run starts, with ``attempt`` 0.

``--summary-json PATH`` is written once, atomically, when the run ends: the
counts per status (the same as the results file's), the campaign, the
results path, the input, start and finish times, durations and the exit code.

Neither ever holds the API key: messages come from ``loader.client``, which
already masks it, and ``JsonLinesLog`` masks every text once more
(``loader.secrets.mask``) before writing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import pandas as pd

from loader.errors import UsageError, cannot_write
from loader.files import open_append
from loader.results import atomic_write
from loader.secrets import ApiKey, mask
from loader.state import Clock, utc_now


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")


class JsonLinesLog:
    """``--log-file``: implements ``loader.send.Events``; each line is flushed as it is written."""

    def __init__(self, path: str | Path, *, api_key: ApiKey | None = None, clock: Clock = utc_now) -> None:
        self.path = Path(path)
        self._clock = clock
        self._api_key = api_key
        #: The write that failed, when one did: nothing more is written after it.
        self.failure: OSError | None = None
        try:
            self._handle: IO[str] | None = open_append(self.path)
        except OSError as exc:
            raise UsageError(f"--log-file {self.path} cannot be opened ({exc.strerror or exc})") from None

    def write(self, event: str, **fields: Any) -> None:
        if self._handle is None:
            return
        # Masked field by field, before JSON escapes could hide a form of the key from the search.
        shown = {name: mask(v, self._api_key) if isinstance(v, str) else v for name, v in fields.items()}
        line = json.dumps({"time": iso(self._clock()), "event": event, **shown}, ensure_ascii=False)
        try:
            self._emit(line)
        except OSError as exc:
            # A full disk must not stop the calls being recorded where they must be (the state):
            # the log stops here, and the run says so when it ends (``failure``).
            self.failure = exc
            self.close()

    def _emit(self, line: str) -> None:
        assert self._handle is not None
        self._handle.write(line + "\n")
        self._handle.flush()

    def outcome(
        self, source_row: int, status: str, *, call_id: str | None, message: str | None, attempts: int
    ) -> None:
        self.write(
            "outcome",
            source_row=int(source_row),
            status=status,
            call_id=call_id or None,
            attempt=attempts,
            message=message or None,
        )

    def retry(self, source_row: int, *, attempt: int, delay: float, reason: str) -> None:
        self.write(
            "retry",
            source_row=int(source_row),
            status="retrying",
            call_id=None,
            attempt=attempt,
            message=reason,
            delay_seconds=round(delay, 3),
        )

    def unsent(self, outcomes: pd.DataFrame) -> None:
        """One outcome line for each row that will not be sent (invalid, duplicate, suppressed)."""
        for row, status, message in zip(
            outcomes.index, outcomes["callkaro_status"], outcomes["callkaro_message"], strict=True
        ):
            self.outcome(int(row), str(status), call_id=None, message=str(message), attempts=0)

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(OSError):  # what a failed flush left behind fails again
                handle.close()


class FanOut:
    """Several ``Events`` receivers as one."""

    def __init__(self, *receivers: Any) -> None:
        self.receivers = [r for r in receivers if r is not None]

    def outcome(
        self, source_row: int, status: str, *, call_id: str | None, message: str | None, attempts: int
    ) -> None:
        for receiver in self.receivers:
            receiver.outcome(source_row, status, call_id=call_id, message=message, attempts=attempts)

    def retry(self, source_row: int, *, attempt: int, delay: float, reason: str) -> None:
        for receiver in self.receivers:
            receiver.retry(source_row, attempt=attempt, delay=delay, reason=reason)


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path``, replacing it atomically: a reader never sees half of it."""
    path = Path(path)
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    try:
        # No folder is made: --summary-json into a folder that does not exist is refused.
        atomic_write(
            path, lambda handle: handle.write(text), binary=False, encoding="utf-8", make_folder=False
        )
    except OSError as exc:
        raise cannot_write(f"--summary-json {path}", exc) from None
