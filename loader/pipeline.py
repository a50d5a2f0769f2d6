"""The whole job as two library calls: ``load_campaign`` and ``validate_file``.

The CLI is a thin layer over these; a notebook or a scheduler gets exactly
what ``callkaro-loader run`` and ``callkaro-loader validate`` do.

    read -> columns -> normalise/validate -> payload -> send -> state -> results
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
import sys
import threading
import zoneinfo
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd
import phonenumbers

from loader.client import DEFAULT_BASE_URL, CallKaroClient, check_base_url
from loader.columns import ColumnMap, map_columns
from loader.errors import (
    ApiRefusedError,
    NoAnswerError,
    NotFoundError,
    RejectedError,
    StateError,
    TransientError,
    UsageError,
)
from loader.normalise import Context
from loader.options import InputOptions, RunOptions
from loader.payload import build_bodies, check_bodies
from loader.progress import make_progress
from loader.read import Sheet, read_sheet
from loader.results import count_statuses, outcomes, results_table, write_results
from loader.sandbox import Faults
from loader.secrets import ApiKey, load_api_key
from loader.send import (
    Events,
    Progress,
    RetryPolicy,
    SendReport,
    Stopped,
    send_calls,
    stoppable_sleep,
    with_retries,
)
from loader.state import RunState, fingerprint, state_path
from loader.validate import Defaults, Validation, validate_rows

if TYPE_CHECKING:
    from loader.sandbox import Faults

#: Statuses that need nobody's attention after a real run.
SETTLED = frozenset({"scheduled", "duplicate", "suppressed"})
#: ... and after ``validate`` or ``--dry-run``.
SETTLED_DRY = frozenset({"valid", "duplicate", "suppressed"})
STATUS_ORDER = ("scheduled", "valid", "invalid", "duplicate", "suppressed", "failed", "uncertain", "pending")

Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class RunResult:
    """What a run did: counts per status, where the results are, each row's outcome."""

    results_path: Path
    counts: dict[str, int]
    outcomes: pd.DataFrame
    batch_id: str | None
    dry_run: bool
    stopped: bool = False
    refused: ApiRefusedError | None = None
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.refused is not None:
            return self.refused.exit_code
        settled = SETTLED_DRY if self.dry_run else SETTLED
        return 0 if set(self.counts) <= settled else 1


@dataclass(frozen=True)
class ValidateResult:
    """What ``validate`` found: counts, one line per problem, and each row's status."""

    path: Path
    counts: dict[str, int]
    problems: pd.DataFrame
    outcomes: pd.DataFrame
    report_path: Path | None = None

    @property
    def exit_code(self) -> int:
        return 0 if set(self.counts) <= SETTLED_DRY else 1


def _context(options: InputOptions, now: dt.datetime) -> Context:
    region = options.default_region.strip().upper() if options.default_region else None
    if region and region not in phonenumbers.SUPPORTED_REGIONS:
        raise UsageError(
            f"--default-region {options.default_region!r} is not a country code phonenumbers knows",
            hint="Use a two-letter ISO code such as IN, US or GB.",
        )
    return Context(
        default_region=region,
        timezone=resolve_timezone(options.timezone),
        now=now,
        allow_past=options.allow_past,
    )


def resolve_timezone(name: str | None) -> dt.tzinfo:
    """``--timezone`` as a tzinfo; the machine's own zone when not given."""
    if not name:
        local = dt.datetime.now().astimezone().tzinfo
        return local if local is not None else dt.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"--timezone {name!r} is not an IANA time zone", hint="Use a name such as Asia/Kolkata."
        ) from None


def _read_and_validate(
    path: Path, options: InputOptions, now: dt.datetime
) -> tuple[Sheet, ColumnMap, Validation]:
    ctx = _context(options, now)
    sheet = read_sheet(path, sheet=options.sheet, header_row=options.header_row, encoding=options.encoding)
    columns = map_columns(sheet, options.column_map())
    validation = validate_rows(
        sheet,
        columns,
        ctx,
        defaults=Defaults(options.defaults()),
        allow_duplicates=options.allow_duplicates,
    )
    return sheet, columns, validation


def default_output(path: Path) -> Path:
    return path.with_name(f"{path.stem}.results.csv")


def campaign_name(template: str, *, input_path: Path, today: dt.date) -> str:
    """``--campaign-name`` with ``{date}`` and ``{input}`` filled in."""
    return template.replace("{date}", today.isoformat()).replace("{input}", input_path.stem).strip()


def validate_file(
    path: str | Path,
    *,
    report: str | Path | None = None,
    options: InputOptions | None = None,
    clock: Clock = _utc_now,
    **option_values: Any,
) -> ValidateResult:
    """Read and check ``path``; send nothing. ``report`` writes the problems (``.csv``).

    Options are ``InputOptions`` fields, given as ``options=`` or as keywords
    (``default_region="IN"``); keywords override ``options``.
    """
    path = Path(path)
    options = (
        (options or InputOptions()).replace(**option_values) if option_values else options or InputOptions()
    )
    sheet, columns, validation = _read_and_validate(path, options, clock())
    frame = outcomes(validation.status, validation.message, {})
    report_path = Path(report) if report is not None else None
    if report_path is not None:
        from loader.report import write_report

        write_report(report_path, sheet, columns, validation)
    return ValidateResult(
        path=path,
        counts=count_statuses(frame),
        problems=validation.problems,
        outcomes=frame,
        report_path=report_path,
    )


def load_campaign(
    path: str | Path,
    options: RunOptions | None = None,
    *,
    api_key: ApiKey | str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sandbox_faults: Faults | None = None,
    retry: RetryPolicy | None = None,
    events: Events | None = None,
    clock: Clock = _utc_now,
    stop: asyncio.Event | None = None,
    handle_signals: bool = False,
    **option_values: Any,
) -> RunResult:
    """Validate ``path``, create or reuse a campaign, schedule every valid row, write the results.

    Options are ``RunOptions`` fields, named as the command-line flags
    (``agent_id=``, ``default_region=``, ``rate_limit=``...), given as
    ``options=`` or as keywords; keywords override ``options``. The rest
    replace the world at the edges: ``api_key`` (default: ``CALLKARO_API_KEY``
    or ``.env``), ``transport`` (an httpx transport instead of the network),
    ``sandbox_faults`` (faults for the in-process sandbox), ``clock``, and a
    ``stop`` event that ends sending as Ctrl-C does.

    Returns a ``RunResult``; a refusal by the API (bad key, unknown agent) is
    reported in ``RunResult.refused`` after the results file is written, so the
    record of what happened is never lost. Bad options, unreadable files and
    state belonging to another input raise ``loader.errors`` exceptions.
    """
    started = clock()
    path = Path(path)
    options = options or RunOptions()
    if option_values:
        options = options.replace(**option_values)
    options.check()
    agent_id = str(options.agent_id).strip()
    batch_id = options.batch_id
    concurrency = options.concurrency
    out = Path(options.output) if options.output is not None else default_output(path)
    if out.suffix.lower() not in (".csv", ".xlsx"):
        raise UsageError(f"--output {out} must end in .csv or .xlsx")
    if out.resolve() == path.resolve():
        raise UsageError(f"--output {out} is the input file; the loader never overwrites its input")
    if isinstance(api_key, str):
        api_key = ApiKey(api_key)

    sheet, columns, validation = _read_and_validate(path, options, started)
    validated = clock()
    durations = {"validate_seconds": (validated - started).total_seconds()}

    if options.dry_run:
        # Build every body so a dry run proves the requests can be made.
        check_bodies(sheet, validation, agent_id=agent_id, batch_id=batch_id)
        if state_path(out).exists():
            raise StateError(
                f"{out} belongs to a real run, and a dry run would overwrite its results",
                hint="Give the dry run its own --output.",
            )
        frame = outcomes(validation.status, validation.message, {})
        headers, cells = results_table(sheet, frame, columns.ignored)
        write_results(out, headers, cells)
        return RunResult(
            results_path=out,
            counts=count_statuses(frame),
            outcomes=frame,
            batch_id=batch_id,
            dry_run=True,
            durations=durations,
        )

    simulated = None
    base_url = options.base_url
    if options.sandbox:
        from loader.sandbox import Faults, Sandbox, SandboxTransport

        simulated = Sandbox(api_key="sandbox-key", agents=[agent_id], faults=sandbox_faults or Faults())
        transport = transport or SandboxTransport(simulated)
        api_key = ApiKey("sandbox-key")
        base_url = base_url or "http://127.0.0.1"
    else:
        api_key = api_key or load_api_key()
        if api_key is None:
            raise UsageError(
                "no API key: set CALLKARO_API_KEY or put it in a .env file in this folder",
                hint="Or try the loader out with --sandbox, which needs no key.",
            )
    # Refuse an unsafe --base-url before the state is touched: a usage error leaves nothing behind.
    base_url = check_base_url(base_url or DEFAULT_BASE_URL)

    with RunState(out, clock=clock) as state:
        _claim_state(state, path, options, fresh=options.fresh)
        known_batch = state.get("batch_id")
        if simulated is not None and known_batch:
            # Each --sandbox run starts a new simulated API; let it know the campaign being resumed.
            simulated.add_campaign(known_batch, name=state.get("campaign_name") or "", agent_id=agent_id)
        valid_rows = validation.status.index[validation.status == "valid"]
        state.add_pending(int(r) for r in valid_rows)
        recorded = state.rows()
        skip = {"scheduled"} | (set() if options.retry_uncertain else {"uncertain"})
        to_send = pd.Index([r for r in valid_rows if recorded[int(r)].status not in skip])
        today = started.astimezone(_context(options, started).timezone).date()
        job = _SendJob(
            state=state,
            sheet=sheet,
            validation=validation,
            rows=to_send,
            agent_id=agent_id,
            batch_id=batch_id or state.get("batch_id"),
            campaign_name=campaign_name(options.campaign_name, input_path=path, today=today),
            client=CallKaroClient(
                api_key=api_key,
                base_url=base_url,
                transport=transport,
                max_connections=concurrency,
            ),
            concurrency=concurrency,
            rate_limit=options.rate_limit,
            retry=retry or RetryPolicy(),
            events=events,
            stop=stop,
            handle_signals=handle_signals,
        )
        bar = make_progress(len(to_send), enabled=not (options.no_progress or options.quiet))
        try:
            report = _run_coroutine(job.run(bar))
        finally:
            bar.close()
        frame = _final_outcomes(validation, state)
        headers, cells = results_table(sheet, frame, columns.ignored)
        write_results(out, headers, cells)
    finished = clock()
    durations["send_seconds"] = (finished - validated).total_seconds()
    durations["total_seconds"] = (finished - started).total_seconds()
    # The client's own cost of sending (all threads of this process), for tuning --concurrency.
    durations["send_cpu_seconds"] = report.cpu_seconds
    if report.cpu_ms_per_request is not None:
        durations["cpu_ms_per_request"] = report.cpu_ms_per_request
    return RunResult(
        results_path=out,
        counts=count_statuses(frame),
        outcomes=frame,
        batch_id=job.batch_id,
        dry_run=False,
        stopped=report.stopped,
        refused=report.refused,
        durations=durations,
    )


def _run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run``, also from code already inside an event loop (a notebook cell)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass
class _SendJob:
    """The part of a run that talks to the API, inside one event loop."""

    state: RunState
    sheet: Sheet
    validation: Validation
    rows: pd.Index
    agent_id: str
    batch_id: str | None
    campaign_name: str
    client: CallKaroClient
    concurrency: int
    rate_limit: float | None
    retry: RetryPolicy
    events: Events | None
    stop: asyncio.Event | None
    handle_signals: bool = False

    async def run(self, progress: Progress) -> SendReport:
        stop = self.stop or asyncio.Event()
        with _stop_on_signals(stop, enabled=self.handle_signals):
            return await self._run(stop, progress)

    async def _run(self, stop: asyncio.Event, progress: Progress) -> SendReport:
        async with self.client:
            if not len(self.rows):
                return SendReport()
            if self.batch_id is None:
                try:
                    self.batch_id = await self._create_campaign(stop)
                except ApiRefusedError as exc:
                    return SendReport(refused=exc)
                except (TransientError, NoAnswerError, Stopped) as exc:
                    reason = str(exc) or "the run was stopped"
                    self._leave_pending(f"the campaign could not be created: {reason}")
                    return SendReport(stopped=stop.is_set())
            bodies = build_bodies(
                self.sheet, self.validation, agent_id=self.agent_id, batch_id=self.batch_id, rows=self.rows
            )
            return await send_calls(
                self.client,
                bodies,
                self.state,
                concurrency=self.concurrency,
                rate_limit=self.rate_limit,
                retry=self.retry,
                progress=progress,
                events=self.events,
                stop=stop,
            )

    async def _create_campaign(self, stop: asyncio.Event) -> str:
        """Create the run's campaign; its id is committed before any call is sent."""
        if self.state.get("campaign_requested"):
            # An earlier run asked for a campaign and died before the answer was recorded.
            # A second, empty campaign is harmless; calls are only ever sent into one.
            self.state.set(campaign_note="an earlier attempt to create the campaign got no answer")
        self.state.set(campaign_name=self.campaign_name, campaign_requested="1")
        try:
            batch = await with_retries(
                lambda: self.client.create_campaign(name=self.campaign_name, agent_id=self.agent_id),
                self.retry,
                stop=stop,
                sleep=stoppable_sleep(stop),
            )
        except RejectedError as exc:
            if exc.status_code == 404:
                raise NotFoundError(
                    f"the API does not know agent {self.agent_id!r} ({exc})",
                    status_code=404,
                    hint="Check --agent-id against your CallKaro dashboard.",
                ) from None
            raise ApiRefusedError(
                f"the API refused to create campaign {self.campaign_name!r} ({exc})",
                status_code=exc.status_code,
            ) from None
        self.state.set(batch_id=batch)
        return batch

    def _leave_pending(self, message: str) -> None:
        for row in self.rows:
            self.state.mark(int(row), "pending", message=message)


def _claim_state(state: RunState, path: Path, options: RunOptions, *, fresh: bool) -> None:
    """Make ``state`` this input's: new, resumed, or (``--fresh``) started over."""
    agent_id = str(options.agent_id).strip()
    batch_id = options.batch_id
    print_name = state.output
    digest = fingerprint(path)
    if fresh:
        state.reset()
    elif not state.is_new():
        if state.get("fingerprint") != digest:
            raise StateError(
                f"{print_name} holds the results of a different input "
                f"({state.get('input') or 'another file'}, last written {state.get('updated_at') or '?'})",
                hint="Give this input its own --output, or run with --fresh to start over "
                "(rows that run already scheduled would be called again).",
            )
        if state.get("agent_id") not in (None, agent_id):
            raise StateError(
                f"{print_name} was started with --agent-id {state.get('agent_id')}, not {agent_id}",
                hint="Resume with the same --agent-id, or give this run its own --output.",
            )
        known_batch = state.get("batch_id")
        if batch_id and known_batch and batch_id != known_batch:
            raise StateError(
                f"{print_name} was sending into campaign {known_batch}, not {batch_id}",
                hint="Resume without --batch-id (or with the same one), or use another --output.",
            )
        state.recover_interrupted()
    state.set(
        fingerprint=digest,
        input=str(path),
        agent_id=agent_id,
        batch_id=batch_id or state.get("batch_id"),
        settings=json.dumps(options.settings(), default=str, sort_keys=True),
    )


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event, *, enabled: bool) -> Iterator[None]:
    """First Ctrl-C or SIGTERM: stop sending and finish cleanly. Second: stop at once.

    Everything acknowledged is already committed to the state, so stopping at
    once loses nothing; the results file is written by the next run.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def first() -> None:
        print(
            "\nstopping: no new calls are sent; waiting a few seconds for those in flight "
            "(press Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        stop.set()
        for sig in signals:
            loop.add_signal_handler(sig, second)

    def second() -> None:
        raise KeyboardInterrupt

    for sig in signals:
        loop.add_signal_handler(sig, first)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _final_outcomes(validation: Validation, state: RunState) -> pd.DataFrame:
    recorded = state.rows()
    valid = set(int(r) for r in validation.status.index[validation.status == "valid"])
    # A row recorded as pending that no longer validates (say, its time has passed) is reported as invalid.
    relevant = {row: rec for row, rec in recorded.items() if rec.status != "pending" or row in valid}
    return outcomes(validation.status, validation.message, relevant)


def summary_lines(counts: Mapping[str, int]) -> list[str]:
    ordered = [s for s in STATUS_ORDER if s in counts] + sorted(set(counts) - set(STATUS_ORDER))
    width = max((len(s) for s in ordered), default=0)
    return [f"{status:<{width}}  {counts[status]}" for status in ordered]
