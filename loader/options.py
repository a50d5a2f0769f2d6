"""The options of ``validate`` and ``run``, named exactly as on the command line.

``--default-region`` is ``default_region`` here, in ``loader.load_campaign``
keyword arguments, and in a ``--config`` file: one name per option
everywhere, so a user can move a setting between the three without looking
anything up.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from loader.columns import parse_map_options
from loader.errors import UsageError

if TYPE_CHECKING:  # the command line imports this module before pandas: see loader.early_read
    from loader.cells import Cell

O = TypeVar("O", bound="InputOptions")  # noqa: E741 - the conventional name for "options"
#: The lowest --rate-limit: one request a day.
MIN_RATE_LIMIT = 1 / 86400


def _is_default(value: Any, default: Any) -> bool:
    return type(value) is type(default) and value == default  # True is not header_row=1


#: ``--base-url`` when neither the option nor ``$CALLKARO_BASE_URL`` gives one. Here, not in
#: ``loader.client``, so that a dry run can name the API its ledger entries belong to without
#: loading the HTTP stack.
DEFAULT_BASE_URL = "https://api.callkaro.ai"


def check_base_url(base_url: str) -> str:
    """The base URL without a trailing slash; refuse one the key must not be sent to.

    Plain ``http://`` is allowed only to loopback addresses (the sandbox):
    anywhere else it would send the key across the network in clear text.
    Here, not in ``loader.client``, so that ``validate`` judges the URL (its ledger entries
    belong to that API) as ``run`` does without loading the HTTP stack.
    """
    try:
        parts = urlsplit(base_url.strip())
        hostname = parts.hostname
    except ValueError:  # urlsplit's own complaint, e.g. "https://[::1" (Invalid IPv6 URL)
        hostname = None
    if hostname is None or parts.scheme not in ("http", "https"):
        raise UsageError(f"--base-url {base_url!r} is not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(hostname):
        raise UsageError(
            f"--base-url {base_url!r} uses plain http to a host that is not this machine, "
            "which would send the API key unencrypted",
            hint="Use https://, or http://127.0.0.1:PORT for a local sandbox.",
        )
    return base_url.strip().rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: ``--skip-recent`` as the ledger takes it: days, or ``"all"`` (ever).
Window = int | Literal["all"]

#: Option name -> the call field whose blank cells it fills.
DEFAULT_FIELDS = {
    "schedule_at": "schedule_at",
    "min_trigger_time": "min_trigger_time",
    "max_trigger_time": "max_trigger_time",
    "carry_over": "carry_over",
    "retries": "number_of_retries",
    "gap": "gap_between_retries",
    "priority": "priority",
}


#: ``--retry-for``: one or more amounts with a unit, e.g. ``90s``, ``30m``, ``2h``, ``1h30m``.
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?[smhd])+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | dt.timedelta, option: str = "--retry-for") -> float:
    """Seconds in ``value`` (``"30m"``, ``"90s"``, ``"2h"``, ``"1h30m"``, or a ``timedelta``)."""
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    else:
        text = str(value).strip().lower().replace(" ", "")
        if not _DURATION.fullmatch(text):
            hint = " (add a unit: s, m or h)" if re.fullmatch(r"[0-9.]+", text) else ""
            raise UsageError(f"{option} {value!r} is not a duration{hint}; write it as 90s, 30m or 2h")
        seconds = sum(float(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    if not 0 <= seconds < math.inf:
        raise UsageError(f"{option} must be a duration of 0 or more, not {value!r}")
    return seconds


@dataclass(frozen=True)
class InputOptions:
    """How to read and check a sheet: what ``validate`` and ``run`` share."""

    sheet: str | int | None = None
    header_row: int = 1
    encoding: str | None = None
    map: Sequence[str] | Mapping[str, str] = ()
    default_region: str | None = None
    timezone: str | None = None
    allow_past: bool = False
    allow_duplicates: bool = False
    #: Call rows hidden in a workbook too (hidden, filtered out, zero height, collapsed); by default they
    #: are ``suppressed``: a person who hid them has not asked for them to be called.
    include_hidden_rows: bool = False
    #: Do-not-call lists (CSV, Excel, or one number per line); matching rows are ``suppressed``.
    suppress: Sequence[str | Path] = ()
    # Defaults for blank cells, as the user wrote them.
    schedule_at: Cell | None = None
    min_trigger_time: Cell | None = None
    max_trigger_time: Cell | None = None
    carry_over: bool | None = None
    retries: Cell | None = None
    gap: Cell | None = None
    priority: Cell | None = None

    @classmethod
    def make(cls: type[O], **values: Any) -> O:
        """Options from keyword arguments; an unknown name is a usage error that names it."""
        from loader.config import checked_keyword  # loader.config imports this module

        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in values:
            if name not in fields:
                raise UsageError(
                    f"unknown option {name!r}",
                    hint=f"Options are: {', '.join(sorted(fields))}.",
                )
        # Checked as a config file's keys are: fresh="false" (true, being non-empty text) must not
        # start a run over and call everyone again, nor concurrency="8" fail deep inside.
        checked: dict[str, Any] = {
            name: value if _is_default(value, fields[name].default) else checked_keyword(name, value)
            for name, value in values.items()
        }
        return cls(**checked)

    def replace(self: O, **values: Any) -> O:
        return type(self).make(**{**dataclasses.asdict(self), **values})

    def column_map(self) -> dict[str, str]:
        """``map`` as header -> field, whether given as ``"HEADER=FIELD"`` strings or a dict."""
        if isinstance(self.map, Mapping):
            return parse_map_options(f"{header}={field}" for header, field in self.map.items())
        if isinstance(self.map, str):
            return parse_map_options([self.map])
        return parse_map_options(self.map)

    def suppress_paths(self) -> list[Path]:
        """``suppress`` as a list of paths, whether given as one path or several."""
        if isinstance(self.suppress, str | Path):
            return [Path(self.suppress)]
        return [Path(p) for p in self.suppress]

    def defaults(self) -> dict[str, Cell]:
        """Call field -> the value for its blank cells, for the defaults that were given."""
        return {
            field: getattr(self, name)
            for name, field in DEFAULT_FIELDS.items()
            if getattr(self, name) is not None
        }


@dataclass(frozen=True)
class PlanOptions(InputOptions):
    """What decides which rows ``run`` sends besides the sheet: the output's campaign state, the
    call ledger and the API it is kept for. ``validate`` takes these too, so it previews exactly."""

    batch_id: str | None = None
    output: str | Path | None = None
    sandbox: bool = False
    base_url: str | None = None
    fresh: bool = False
    retry_uncertain: bool = False
    #: The call ledger of every number scheduled, shared by runs (see ``loader.history``);
    #: ``None``: ``$CALLKARO_HISTORY``, else the per-user ledger.
    history: str | Path | None = None
    #: Rows whose number was scheduled in the last this many days are ``suppressed``; ``None``:
    #: the default, one day; ``0``: off; ``"all"``: ever.
    skip_recent: int | str | None = None
    #: Neither read nor write the call ledger.
    no_history: bool = False

    def check_plan(self) -> None:
        """Refuse plan options that cannot work together, before anything is read."""
        if self.batch_id is not None and not str(self.batch_id).strip():
            raise UsageError(
                "--batch-id is blank: give the id of an existing campaign, "
                "or leave the option out to create one"
            )
        if self.header_row < 1:
            raise UsageError(f"--header-row must be 1 or more, not {self.header_row}")
        if self.history is not None and self.no_history:
            raise UsageError("--history and --no-history contradict each other: give one of them")
        if self.skip_recent is not None:
            if self.skip_recent != "all" and (
                not isinstance(self.skip_recent, int)
                or isinstance(self.skip_recent, bool)
                or self.skip_recent < 0
            ):
                raise UsageError(
                    f"--skip-recent must be a whole number of days (0 or more) or all, not {self.skip_recent}"
                )
            if self.no_history and self.skip_recent != 0:
                raise UsageError(
                    "--skip-recent needs the call ledger, which --no-history turns off",
                    hint="Drop --no-history (the ledger is what says when each number was last "
                    "called; without it, anyone called before may be called again).",
                )

    def recent_window(self) -> Window | None:
        """``--skip-recent`` as the ledger takes it: days or ``"all"``; ``None`` when turned off."""
        if self.skip_recent == "all":
            return "all"
        days = 1 if self.skip_recent is None else int(self.skip_recent)  # check_plan() made sure it is whole
        return None if days == 0 else days

    def settings(self) -> dict[str, Any]:
        """What a state file records of the run's options (paths as text)."""
        values = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}


@dataclass(frozen=True)
class RunOptions(PlanOptions):
    """Every option of ``run`` (see ``callkaro-loader run --help``)."""

    agent_id: str = ""
    campaign_name: str = "{input} {date}"
    concurrency: int = 8
    rate_limit: float | None = None
    #: Keep retrying transient failures this long (``"30m"``); None: a few tries over seconds.
    retry_for: str | dt.timedelta | None = None
    dry_run: bool = False
    summary_json: str | Path | None = None
    log_file: str | Path | None = None
    no_progress: bool = False
    quiet: bool = False

    def check(self) -> None:
        """Refuse options that cannot work together, before anything is read or sent."""
        if not self.agent_id or not str(self.agent_id).strip():
            raise UsageError("--agent-id is required: the CallKaro agent that makes the calls")
        if not str(self.campaign_name).strip():
            raise UsageError(
                "--campaign-name is blank: the API needs a name for the campaign",
                hint='Leave it out for the default ("{input} {date}"), or give one.',
            )
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be 1 or more, not {self.concurrency}")
        # Written this way round so that nan (which compares false with everything) is refused too.
        # Below one request a day, a run would wait longer between calls than anyone waits for it
        # (and 1/R overflows for the smallest numbers): a hang, not a pace.
        if self.rate_limit is not None and not MIN_RATE_LIMIT <= self.rate_limit < math.inf:
            raise UsageError(
                "--rate-limit must be a number of requests per second from 1/86400 (one a day) up, "
                f"not {self.rate_limit}"
            )
        self.retry_for_seconds()
        self.check_plan()

    def retry_for_seconds(self) -> float | None:
        """``retry_for`` in seconds, or None when not given (a usage error when it is not a duration)."""
        return None if self.retry_for is None else parse_duration(self.retry_for)
