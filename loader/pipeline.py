"""The whole job as two library calls: ``load_campaign`` and ``validate_file``.

The CLI is a thin layer over these; a notebook or a scheduler gets exactly
what ``callkaro-loader run`` and ``callkaro-loader validate`` do, including
``config=``, do-not-call lists, the shared history, ``--summary-json`` and
``--log-file``.

    read -> columns -> normalise/validate -> suppress -> plan -> payload -> send -> record

``plan`` (``_plan``: the ledger's ``--skip-recent``, rows bound to the campaign's earlier calls)
is the one code path of ``run``, ``--dry-run`` and ``validate``; the previews give it the state
copied into memory and the ledger opened read-only, so they decide exactly as the run and write
nothing. ``record`` is the state, the ledger and the results file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import sqlite3
import tempfile
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
import phonenumbers

from loader import memory
from loader.columns import ColumnMap, map_columns
from loader.config import make_options
from loader.errors import (
    ApiRefusedError,
    ApiUnavailableError,
    LoaderError,
    StateError,
    UnrecordedError,
    UsageError,
    cannot_write,
)
from loader.files import check_output, write_target
from loader.history import Claims, History, choose_ledger
from loader.monitoring import FanOut, JsonLinesLog, iso, write_json
from loader.normalise import Context
from loader.options import DEFAULT_BASE_URL, InputOptions, PlanOptions, RunOptions, Window, check_base_url
from loader.payload import check_bodies
from loader.progress import make_progress
from loader.read import Sheet, read_sheet
from loader.report import check_report_path, write_report
from loader.results import count_statuses, outcomes, results_table, write_results
from loader.secrets import ApiKey, check_key, load_api_key
from loader.state import (
    Clock,
    Planned,
    RowState,
    RunState,
    fingerprint,
    iso_utc,
    lock_path,
    state_path,
    utc_now,
)
from loader.suppress import read_suppression_lists, suppress_rows
from loader.validate import Defaults, Validation, validate_rows

if TYPE_CHECKING:
    import asyncio

    import httpx

    from loader.sandbox import Faults
    from loader.send import Events, RetryPolicy

#: Statuses that need nobody's attention after a real run.
SETTLED = frozenset({"scheduled", "duplicate", "suppressed"})
#: ... and after ``validate`` or ``--dry-run`` (``scheduled``: by an earlier run of the campaign).
SETTLED_DRY = frozenset({"valid", "scheduled", "duplicate", "suppressed"})
STATUS_ORDER = ("scheduled", "valid", "invalid", "duplicate", "suppressed", "failed", "uncertain", "pending")
#: The in-process sandbox's base URL, when ``--base-url`` gives none.
SANDBOX_BASE_URL = "http://127.0.0.1"

O = TypeVar("O", bound=InputOptions)  # noqa: E741 - as in loader.options


@dataclass(frozen=True)
class RunResult:
    """What a run did: counts per status, where the results are, each row's outcome.

    ``counts``: rows per ``callkaro_status``, exactly as in the results file.
    ``outcomes``: a DataFrame indexed by ``source_row`` with ``callkaro_status``,
    ``callkaro_call_id`` and ``callkaro_message``. ``batch_id`` (also
    ``campaign_id``): the campaign the calls went into. ``durations``:
    ``validate_seconds``, ``send_seconds`` and ``total_seconds``. ``exit_code``:
    what ``callkaro-loader run`` exits with (0 nothing needs a person, 1 some
    rows do, 3 the API refused the run, 4 the API was unavailable: ``unavailable``
    says why, and the same call later resumes).
    """

    results_path: Path
    counts: dict[str, int]
    outcomes: pd.DataFrame
    batch_id: str | None
    dry_run: bool
    stopped: bool = False
    refused: ApiRefusedError | None = None
    unavailable: ApiUnavailableError | None = None
    durations: dict[str, float] = field(default_factory=dict)
    input_path: Path | None = None
    campaign_name: str | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    #: Rows reported ``scheduled`` by calls this run made (``this_run``) and calls earlier runs of
    #: the campaign made (``earlier_runs``), which were not sent again.
    calls: dict[str, int] = field(default_factory=lambda: {"this_run": 0, "earlier_runs": 0})
    #: ``--fresh``: how many numbers the output had already called this run sent again.
    called_again: int | None = None
    #: The call ledger the run read and wrote (``None``: ``--no-history``, or the in-process sandbox).
    ledger: Path | None = None

    @property
    def exit_code(self) -> int:
        return _exit_code(self.counts, self.refused, dry_run=self.dry_run, unavailable=self.unavailable)

    @property
    def needing_a_person(self) -> dict[str, int]:
        """Rows per status a person must look at (``invalid``, ``failed``...), in ``counts``' order."""
        settled = SETTLED_DRY if self.dry_run else SETTLED
        return {status: n for status, n in self.counts.items() if status not in settled}

    @property
    def campaign_id(self) -> str | None:
        """The campaign's id (the API's ``batch_id``)."""
        return self.batch_id

    def summary(self) -> dict[str, Any]:
        """What ``--summary-json`` writes: plain JSON types only."""
        return {
            "input": str(self.input_path) if self.input_path is not None else None,
            "results_path": str(self.results_path),
            "campaign_id": self.batch_id,
            "campaign_name": self.campaign_name,
            "dry_run": self.dry_run,
            "counts": _in_order(self.counts),
            "total_rows": sum(self.counts.values()),
            "exit_code": self.exit_code,
            "stopped": self.stopped,
            "refused": str(self.refused) if self.refused is not None else None,
            "unavailable": str(self.unavailable) if self.unavailable is not None else None,
            "started_at": iso(self.started_at) if self.started_at else None,
            "finished_at": iso(self.finished_at) if self.finished_at else None,
            "durations": {k: round(v, 3) for k, v in self.durations.items()},
            "calls": dict(self.calls),
            "called_again": self.called_again,
            "ledger": str(self.ledger) if self.ledger is not None else None,
        }


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
    """``--timezone`` as a tzinfo; the machine's own zone when not given (a blank one is refused)."""
    if name is None:
        return _machine_zone()
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"--timezone {name!r} is not an IANA time zone", hint="Use a name such as Asia/Kolkata."
        ) from None


def _machine_zone() -> dt.tzinfo:
    """This machine's zone with its daylight-saving rules (``$TZ``, else ``/etc/localtime``).

    Today's offset alone (``datetime.now().astimezone()``) would convert a July time with
    January's offset, an hour off in every zone that has summer time. Where no rules can be
    found (a POSIX rule in ``$TZ``, no ``/etc/localtime``), today's offset is all there is.
    """
    name = os.environ.get("TZ", "/etc/localtime").removeprefix(":")
    with contextlib.suppress(OSError, ValueError, zoneinfo.ZoneInfoNotFoundError):
        if name.startswith("/"):
            with open(name, "rb") as rules:
                return zoneinfo.ZoneInfo.from_file(rules, key=name)
        if name:
            return zoneinfo.ZoneInfo(name)
    local = dt.datetime.now().astimezone().tzinfo
    return local if local is not None else dt.UTC


def _read_and_validate(
    path: Path, options: InputOptions, now: dt.datetime
) -> tuple[Sheet, ColumnMap, Validation, Context]:
    ctx = _context(options, now)
    sheet = read_sheet(path, sheet=options.sheet, header_row=options.header_row, encoding=options.encoding)
    # Reading leaves freed blocks in the allocators (pyarrow's threads: ~50 MB for a million rows).
    memory.release()
    # Lists first: a --map entry naming a list's column (and none of the sheet's) is for the list.
    lists = read_suppression_lists(options.suppress_paths(), ctx, column_map=options.column_map())
    columns = map_columns(
        sheet, options.column_map(), elsewhere=[h for listed in lists for h in listed.headers]
    )
    validation = validate_rows(
        sheet,
        columns,
        ctx,
        defaults=Defaults(options.defaults()),
        allow_duplicates=options.allow_duplicates,
        include_hidden_rows=options.include_hidden_rows,
    )
    if lists:
        validation = suppress_rows(validation, lists)
    return sheet, columns, validation, ctx


def default_output(path: Path) -> Path:
    return path.with_name(f"{path.stem}.results.csv")


def _results_path(options: PlanOptions, path: Path) -> Path:
    """The results file of a run of ``path`` (``--output``, else beside the input), checked."""
    out = Path(options.output) if options.output is not None else default_output(path)
    if out.suffix.lower() not in (".csv", ".xlsx"):
        raise UsageError(f"--output {out} must end in .csv or .xlsx")
    if out.is_dir():
        raise UsageError(f"--output {out} is a folder; give the path of the results file to write")
    if out.resolve() == path.resolve():
        raise UsageError(f"--output {out} is the input file; the loader never overwrites its input")
    return out


def campaign_name(template: str, *, input_path: Path, today: dt.date) -> str:
    """``--campaign-name`` with ``{date}`` and ``{input}`` filled in."""
    return template.replace("{date}", today.isoformat()).replace("{input}", input_path.stem).strip()


def validate_file(
    path: str | Path,
    *,
    report: str | Path | None = None,
    options: InputOptions | None = None,
    config: str | Path | None = None,
    clock: Clock = utc_now,
    **option_values: Any,
) -> ValidateResult:
    """Read and check ``path``; send nothing. ``report`` writes the problems (``.csv`` or ``.xlsx``).

    The counts are exactly what ``run`` with the same options would report now (``valid``: it
    would send the row): the output's campaign state (``output``, default beside the input, as
    for ``run``), the call ledger (``history``, ``skip_recent``, ``no_history``, for the API of
    ``base_url``) and ``batch_id`` apply, read without writing anything.

    Options are ``PlanOptions`` fields (``default_region="IN"``,
    ``suppress=["dnc.csv"]``, ``history=``...), given as ``options=``, in a ``config``
    TOML file (its run-only keys, such as ``agent_id``, are ignored here), or
    as keywords; keywords win over the file, the file over ``options``.
    """
    path = Path(path)
    if options is not None and not isinstance(options, PlanOptions) and isinstance(options, InputOptions):
        options = PlanOptions(**dataclasses.asdict(options))  # what validate took before it previewed runs
    options = make_options(PlanOptions, options, config, option_values)
    options.check_plan()
    report_path = Path(report) if report is not None else None
    if report_path is not None:
        check_report_path(report_path, path)
    out = _results_path(options, path)  # refused as the run would refuse it
    now = clock()
    sheet, columns, validation, ctx = _read_and_validate(path, options, now)
    frame, _ = _preview(path, sheet, validation, options, ctx, out=out, agent_id=None, clock=clock)
    if report_path is not None:
        write_report(report_path, sheet, columns, validation)
    return ValidateResult(
        path=path,
        counts=_in_order(count_statuses(frame)),
        problems=validation.problems,
        outcomes=frame,
        report_path=report_path,
    )


def load_campaign(
    path: str | Path,
    options: RunOptions | None = None,
    *,
    config: str | Path | None = None,
    api_key: ApiKey | str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sandbox_faults: Faults | None = None,
    retry: RetryPolicy | None = None,
    events: Events | None = None,
    clock: Clock = utc_now,
    stop: asyncio.Event | None = None,
    handle_signals: bool = False,
    notify: Callable[[str], None] | None = None,
    **option_values: Any,
) -> RunResult:
    """Validate ``path``, create or reuse a campaign, schedule every valid row, write the results.

    Options are ``RunOptions`` fields, named as the command-line flags
    (``agent_id=``, ``default_region=``, ``suppress=[...]``, ``history=``,
    ``skip_recent=``, ``summary_json=``, ``log_file=``, ``sandbox=True``...),
    given as ``options=``, in a ``config`` TOML file, or as keywords;
    keywords win over the file, the file over ``options`` (do-not-call lists
    from the file and the keywords all apply). The rest replace the world at
    the edges: ``api_key`` (default: ``CALLKARO_API_KEY`` or ``.env``),
    ``transport`` (an httpx transport instead of the network; ``base_url``
    defaults to ``CALLKARO_BASE_URL``, as for the command),
    ``sandbox_faults`` (faults for the in-process sandbox), ``events`` (told
    of each row outcome and retry, see ``loader.send.Events``), ``clock``,
    a ``stop`` event that ends sending as Ctrl-C does, and ``notify``, told
    in one line what needs saying before sending (``--fresh``: how many
    people it will call again).

    Returns a ``RunResult``; a refusal by the API (bad key, unknown agent) is
    reported in ``RunResult.refused`` after the results file is written, so the
    record of what happened is never lost. Bad options, unreadable files and
    a state this run cannot use (another agent or campaign) raise ``loader.errors`` exceptions
    (``--summary-json`` then records the error).
    """
    started = clock()
    path = Path(path)
    options = make_options(RunOptions, options, config, option_values)
    try:
        result = _load_campaign(
            path,
            options,
            started=started,
            api_key=api_key,
            transport=transport,
            sandbox_faults=sandbox_faults,
            retry=retry,
            events=events,
            clock=clock,
            stop=stop,
            handle_signals=handle_signals,
            notify=notify,
        )
    except LoaderError as exc:
        _record_failure(options, path, exc, started=started, finished=clock())
        raise
    if options.summary_json is not None:
        try:
            write_json(options.summary_json, result.summary())
        except UsageError as exc:
            if result.dry_run:
                raise
            raise UnrecordedError(
                f"{exc.message}; the run itself finished: its results are in {result.results_path}"
            ) from None
    return result


def _record_failure(
    options: RunOptions, path: Path, exc: LoaderError, *, started: dt.datetime, finished: dt.datetime
) -> None:
    """Record in ``--summary-json`` and ``--log-file`` (those given) that the run stopped with ``exc``.

    Monitoring must see tonight's failure, not last night's success; a file that cannot be
    written does not hide ``exc`` itself.
    """
    if options.summary_json is not None:
        with contextlib.suppress(LoaderError, OSError):
            write_json(
                options.summary_json,
                {
                    "input": str(path),
                    "error": exc.message,
                    "exit_code": exc.exit_code,
                    "counts": exc.counts or {},
                    "started_at": iso(started),
                    "finished_at": iso(finished),
                },
            )
    if options.log_file is not None:
        with contextlib.suppress(LoaderError, OSError):
            log = JsonLinesLog(options.log_file)
            try:
                log.write("run_failed", input=str(path), error=exc.message, exit_code=exc.exit_code)
            finally:
                log.close()


def _load_campaign(
    path: Path,
    options: RunOptions,
    *,
    started: dt.datetime,
    api_key: ApiKey | str | None,
    transport: httpx.AsyncBaseTransport | None,
    sandbox_faults: Faults | None,
    retry: RetryPolicy | None,
    events: Events | None,
    clock: Clock,
    stop: asyncio.Event | None,
    handle_signals: bool,
    notify: Callable[[str], None] | None,
) -> RunResult:
    options.check()
    agent_id = str(options.agent_id).strip()
    batch_id = str(options.batch_id).strip() if options.batch_id is not None else None
    concurrency = options.concurrency
    out = _results_path(options, path)
    if options.summary_json is not None and not Path(options.summary_json).parent.is_dir():
        raise UsageError(f"--summary-json {options.summary_json}: its folder does not exist")
    if options.summary_json is not None and Path(options.summary_json).is_dir():
        raise UsageError(
            f"--summary-json {options.summary_json} is a folder; give the path of the JSON file to write"
        )
    _check_outputs(out, options)
    if isinstance(api_key, str):
        check_key(api_key.strip(), "api_key")
        api_key = ApiKey(api_key)
    ledger, default_ledger = choose_ledger(
        options.history, no_history=options.no_history, sandbox=options.sandbox
    )
    window = options.recent_window()
    if options.dry_run:
        # Never the results file (a real run's, or one the run that follows would read as calls made).
        preview = preview_output(out)
        if preview.resolve() == path.resolve():
            raise UsageError(
                f"--dry-run would write its preview to {preview}, the input file; give another --output "
                "(a dry run sends nothing)"
            )
        check_output(preview, "--dry-run's preview")
        if state_path(preview).exists():
            raise StateError(
                f"{preview} belongs to a real run, and a dry run would overwrite its results",
                hint="Give the dry run another --output (a dry run sends nothing).",
            )

    sheet, columns, validation, ctx = _read_and_validate(path, options, started)
    validated = clock()
    durations = {"validate_seconds": (validated - started).total_seconds()}

    if options.dry_run:
        frame, calls = _preview(
            path, sheet, validation, options, ctx, out=out, agent_id=agent_id, clock=clock
        )
        # Build every body so a dry run proves the requests can be made, keeping none.
        check_bodies(sheet, validation, agent_id=agent_id, batch_id=batch_id)
        counts = _write_results(preview, sheet, columns, frame)
        finished = clock()
        durations["total_seconds"] = (finished - started).total_seconds()
        return RunResult(
            results_path=preview,
            counts=counts,
            outcomes=frame,
            batch_id=batch_id,
            dry_run=True,
            durations=durations,
            input_path=path,
            started_at=started,
            finished_at=finished,
            calls=calls,
            ledger=ledger,
        )

    # Only a run that sends loads the HTTP stack (see loader.campaign).
    from loader.campaign import SendJob, run_coroutine
    from loader.client import CallKaroClient
    from loader.send import RetryPolicy, SendReport, expiry_check

    simulated = None
    if options.sandbox:
        from loader.sandbox import Faults, Sandbox, SandboxTransport

        simulated = Sandbox(api_key="sandbox-key", agents=[agent_id], faults=sandbox_faults or Faults())
        transport = transport or SandboxTransport(simulated)
        api_key = ApiKey("sandbox-key")
    else:
        api_key = api_key or load_api_key()
        if api_key is None:
            raise UsageError(
                "no API key: set CALLKARO_API_KEY or put it in a .env file in this folder",
                hint="Or try the loader out with --sandbox, which needs no key.",
            )
        _refuse_key_as_name(api_key, agent_id=agent_id, batch_id=batch_id, name=options.campaign_name)
    # Refuse an unsafe --base-url before the state is touched: a usage error leaves nothing behind.
    base_url = _base_url(options)

    if not options.fresh:
        _refuse_orphaned_results(out)
    with contextlib.ExitStack() as stack:
        history = (
            stack.enter_context(History(ledger, clock=clock, api=base_url, make_folder=default_ledger))
            if ledger is not None
            else None
        )
        log = JsonLinesLog(options.log_file, api_key=api_key, clock=clock) if options.log_file else None
        if log is not None:
            stack.callback(log.close)
        state = stack.enter_context(RunState(out, clock=clock))
        plan = _plan(
            state, path, sheet, validation, history, options, agent_id=agent_id, batch_id=batch_id, ctx=ctx
        )
        validation, recorded, to_send, earlier = plan.validation, plan.recorded, plan.to_send, plan.earlier
        resumed, called_before, run_token = plan.resumed, plan.called_before, plan.run_token
        state.set(ledger=str(ledger) if ledger is not None else None)
        known_batch = state.get("batch_id")
        if simulated is not None and known_batch:
            # Each --sandbox run starts a new simulated API; let it know the campaign being resumed.
            simulated.add_campaign(known_batch, name=state.get("campaign_name") or "", agent_id=agent_id)
        valid_rows = validation.status.index[validation.status == "valid"]
        unsent = outcomes(validation.status, validation.message, {})
        unsent = unsent[(unsent["callkaro_status"] != "valid") & ~unsent.index.isin(list(recorded))]
        state.set(
            summary=None, started_at=state.timestamp(), unsent_counts=json.dumps(count_statuses(unsent))
        )
        called_again = None if called_before is None else _called_again(called_before, validation, to_send)
        if called_before and notify is not None and simulated is None:
            # Only when it had called someone; --sandbox calls nobody (an API that forgets its calls).
            notify(_fresh_notice(out, called_again or 0, batch_id))
        today = started.astimezone(ctx.timezone).date()
        if log is not None:
            log.write(
                "run_started",
                input=str(path),
                results_path=str(out),
                batch_id=state.get("batch_id"),
                rows=len(validation.status),
                to_send=len(to_send),
            )
            log.unsent(unsent)
            if log.failure is not None:  # found before a call is made: nothing sent (exit 2)
                raise cannot_write(f"--log-file {log.path}", log.failure)
        claims = None
        if history is not None:
            slots = {int(r): recorded[int(r)].slot or int(r) for r in valid_rows}
            # Another output's calls are in the ledger already, under its run: not entered again here.
            imported = state.imported().difference(slots[int(r)] for r in to_send)
            claims = SlotClaims(
                history,
                slots=slots,
                run=run_token,
                input_name=str(path),
                numbers={
                    slots[row]: recorded[row].number or "" for row in slots if slots[row] not in imported
                },
                days=window,
                timezone=ctx.timezone,
                clock=clock,
            )
        job = SendJob(
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
            retry=_retry_policy(retry or RetryPolicy(), options),
            events=FanOut(claims, log, events) if (claims or log) else events,
            stop=stop,
            handle_signals=handle_signals,
            claims=claims,
            # A time that passes while the run waits its turn is not sent (unless past times were asked for).
            expiry=None if options.allow_past else expiry_check(ctx.timezone, clock),
        )
        bar = make_progress(len(to_send), enabled=not (options.no_progress or options.quiet))
        failure: LoaderError | None = None
        try:
            report = run_coroutine(job.run(bar))
        except LoaderError as exc:
            # The history failed mid-run: what was sent is recorded; write the results, then say so.
            failure, report = exc, SendReport(stopped=True)
        finally:
            bar.close()
        recorded = state.rows()
        if claims is not None:
            # The ledger keeps this output's entries by slot: every slot, held by a row or not.
            if failure is None:
                claims.finish(state.slots(), resumed=resumed)
            else:
                with contextlib.suppress(LoaderError):
                    claims.finish(state.slots(), resumed=resumed)
        frame = _final_outcomes(validation, recorded)
        calls = _say_when_called(frame, earlier, ctx.timezone)
        try:
            counts = _write_results(out, sheet, columns, frame)
        except OSError as exc:
            raise UnrecordedError(
                f"the results file {out} could not be written ({exc.strerror or exc}); every call "
                f"made is kept in {state_path(out).name}",
                hint="Make room or fix the folder, then run the same command again: it sends nothing "
                "twice and writes the results file.",
            ) from None
        finished = clock()
        refused = str(report.refused) if report.refused is not None else None
        unavailable = _unavailable(report.unavailable, counts)
        try:
            state.set(
                summary=json.dumps(
                    {
                        "counts": counts,
                        "finished_at": state.timestamp(),
                        "results_path": str(out),
                        "stopped": report.stopped,
                        "refused": refused,
                        "unavailable": str(unavailable) if unavailable is not None else None,
                    },
                    sort_keys=True,
                )
            )
        except sqlite3.Error:
            if failure is None:
                raise  # the state failing mid-run is already the error to report
        if log is not None:
            log.write(
                "run_finished",
                batch_id=job.batch_id,
                counts=counts,
                results_path=str(out),
                exit_code=1
                if failure is not None
                else _exit_code(counts, report.refused, dry_run=False, unavailable=unavailable),
                stopped=report.stopped,
                refused=refused,
            )
        if failure is not None:
            # Sending had begun and the results are written: rows need a person (exit 1), and
            # "nothing was sent" (exit 2) would not be true.
            failure.exit_code, failure.counts = 1, counts
            raise failure
        if log is not None and log.failure is not None:
            unrecorded = UnrecordedError(
                f"--log-file {log.path} could not be written ({log.failure.strerror or log.failure}); "
                f"the run itself finished: its results are in {out}"
            )
            unrecorded.counts = counts
            raise unrecorded
        created_name = state.get("campaign_name")
    durations["send_seconds"] = (finished - validated).total_seconds()
    durations["total_seconds"] = (finished - started).total_seconds()
    # The client's own cost of sending (all threads of this process), for tuning --concurrency.
    durations["send_cpu_seconds"] = report.cpu_seconds
    if report.cpu_ms_per_request is not None:
        durations["cpu_ms_per_request"] = report.cpu_ms_per_request
    return RunResult(
        results_path=out,
        counts=counts,
        outcomes=frame,
        batch_id=job.batch_id,
        dry_run=False,
        stopped=report.stopped,
        refused=report.refused,
        unavailable=unavailable,
        durations=durations,
        input_path=path,
        campaign_name=created_name,
        started_at=started,
        finished_at=finished,
        calls=calls,
        called_again=called_again,
        ledger=ledger,
    )


def _base_url(options: PlanOptions) -> str:
    """The API the run talks to, as the run chooses it: ``--base-url`` (the command line, else the
    config file), else ``$CALLKARO_BASE_URL``, else the in-process sandbox's (``--sandbox``) or
    CallKaro's; checked (``check_base_url``). The ledger counts only its calls."""
    base_url = options.base_url or os.environ.get("CALLKARO_BASE_URL") or None
    if options.sandbox:
        base_url = base_url or SANDBOX_BASE_URL
    return check_base_url(base_url or DEFAULT_BASE_URL)


def preview_output(out: Path) -> Path:
    """Where ``--dry-run`` writes its preview of the results ``out`` would hold: beside it, never it."""
    return out.with_name(f"{out.stem}.preview{out.suffix}")


@dataclass(frozen=True)
class Plan:
    """What a run does with each row, decided before anything is sent: the same for ``run``,
    ``--dry-run`` and ``validate`` (see ``_plan``)."""

    #: The rows' statuses after the ledger's ``--skip-recent``.
    validation: Validation
    #: The campaign's record of each row holding a number, by ``source_row``.
    recorded: dict[int, RowState]
    #: The rows to send now.
    to_send: pd.Index
    #: Rows whose number this campaign had already called when the run began: never sent again.
    earlier: dict[int, RowState]
    #: ``--fresh``: the numbers the state had called; else None.
    called_before: frozenset[str] | None
    resumed: bool
    run_token: str


def _plan(
    state: RunState,
    path: Path,
    sheet: Sheet,
    validation: Validation,
    history: History | None,
    options: PlanOptions,
    *,
    agent_id: str | None,
    batch_id: str | None,
    ctx: Context,
) -> Plan:
    """read -> validate -> **plan** -> send -> record: bind the rows to the output's campaign and
    the ledger. A preview passes a copy of the state in memory and the ledger opened read-only,
    so it decides exactly as the run would and writes nothing."""
    empty = options.fresh or state.is_new()
    resumed = not empty
    called_before = _claim_state(state, path, validation, options, agent_id=agent_id, batch_id=batch_id)
    run_token = state.run_token()
    window = options.recent_window()
    # When this output's campaign began (its first run; a state from before this was kept: its
    # last run). The ledger's window counts back from then, so running the same command again
    # later never calls a number an earlier run of it skipped as called elsewhere.
    began = state.get("began_at") or state.get("started_at") or state.timestamp()
    state.set(began_at=began)
    if history is not None and window is not None:
        validation = _skip_recent(
            validation, history, window, ctx, run=run_token, began=dt.datetime.fromisoformat(began)
        )
    known_batch = state.get("batch_id")
    valid_rows = validation.status.index[validation.status == "valid"]
    if state.preview and empty and (history is None or not known_batch):
        # Nothing recorded and no other output's calls to import: binding would give each valid row
        # a new pending slot, all sent. A preview says so without building them (a million rows).
        called_before = _also_in_ledger(called_before, validation, valid_rows, history, run_token)
        return Plan(validation, {}, valid_rows, {}, called_before, resumed, run_token)
    _bind_rows(state, sheet, validation, history, options, run=run_token, batch_id=known_batch, ctx=ctx)
    state.requeue_suppressed()
    recorded = state.rows()
    earlier = {row: rec for row, rec in recorded.items() if rec.status == "scheduled"}
    skip = {"scheduled"} | (set() if options.retry_uncertain else {"uncertain"})
    to_send = pd.Index([r for r in valid_rows if recorded[int(r)].status not in skip])
    called_before = _also_in_ledger(called_before, validation, to_send, history, run_token)
    return Plan(validation, recorded, to_send, earlier, called_before, resumed, run_token)


def _also_in_ledger(
    called_before: frozenset[str] | None,
    validation: Validation,
    to_send: pd.Index,
    history: History | None,
    run: str,
) -> frozenset[str] | None:
    """``--fresh``'s numbers called before, with those only the ledger remembers (the campaigns an
    earlier ``--fresh`` forgot): the people it says it will call again are the ones it will."""
    if called_before is None or history is None:
        return called_before
    numbers = validation.requests["to_number"][to_send].astype(str)
    return called_before | frozenset(history.recent(numbers, days="all", exclude_run=run))


def _preview(
    path: Path,
    sheet: Sheet,
    validation: Validation,
    options: PlanOptions,
    ctx: Context,
    *,
    out: Path,
    agent_id: str | None,
    clock: Clock,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Each row's status as ``run`` would report it now, ``valid`` for the rows it would send, and
    the calls by earlier runs; the state and the ledger are read, never written nor created."""
    if not options.fresh:
        _refuse_orphaned_results(out)
    check_output(state_path(out), f"--output {out}: its state file")
    ledger, default = choose_ledger(options.history, no_history=options.no_history, sandbox=options.sandbox)
    with contextlib.ExitStack() as stack:
        # make_folder: the per-user ledger's folder, which the run would make, is simply not there yet.
        history = (
            stack.enter_context(
                History(
                    ledger,
                    clock=clock,
                    readonly=True,
                    api=_base_url(options),  # refused as the run refuses it
                    make_folder=default,
                )
            )
            if ledger is not None
            else None
        )
        state = stack.enter_context(RunState(out, clock=clock, preview=True))
        batch_id = str(options.batch_id).strip() if options.batch_id is not None else None
        plan = _plan(
            state, path, sheet, validation, history, options, agent_id=agent_id, batch_id=batch_id, ctx=ctx
        )
    if not plan.recorded:  # a new output: every row as validated (without sets of a million rows)
        return outcomes(plan.validation.status, plan.validation.message, {}), {
            "this_run": 0,
            "earlier_runs": 0,
        }
    sending = set(plan.to_send.tolist())
    frame = _final_outcomes(plan.validation, {r: rec for r, rec in plan.recorded.items() if r not in sending})
    return frame, _say_when_called(frame, plan.earlier, ctx.timezone)


def _refuse_key_as_name(api_key: ApiKey, **names: str | None) -> None:
    """Refuse the key given as the agent, the campaign or its name (an easy mix-up): it would be
    sent in the request body, printed and kept in the state and the summary."""
    for name, value in names.items():
        if value and api_key.found_in(str(value)):
            option = {"agent_id": "--agent-id", "batch_id": "--batch-id", "name": "--campaign-name"}[name]
            raise UsageError(
                f"{option} holds the API key, which would be sent and kept as its value; nothing was sent",
                hint="The agent id and campaign id are on your CallKaro dashboard; the key goes in "
                "CALLKARO_API_KEY only.",
            )


def _check_outputs(out: Path, options: RunOptions) -> None:
    """Refuse, before anything is read or sent, an output path that is not a regular file to
    replace or create (a device, a FIFO, a symlink to one or to nothing: ``loader.files``)."""
    check_output(out, "--output")
    check_output(state_path(out), f"--output {out}: its state file")
    check_output(lock_path(out), f"--output {out}: its lock file")
    for option, target in (("--summary-json", options.summary_json), ("--log-file", options.log_file)):
        if target is not None:
            check_output(Path(target), option)
    if options.summary_json is not None:
        # Written only at the end, beside itself then swapped in: a folder that takes no new file
        # (read-only, /proc) must be found now, not once the calls are made.
        summary = Path(options.summary_json)
        try:
            with tempfile.TemporaryFile(dir=write_target(summary).parent):
                pass
        except OSError as exc:
            raise cannot_write(f"--summary-json {summary}", exc) from None


def _write_results(out: Path, sheet: Sheet, columns: ColumnMap, frame: pd.DataFrame) -> dict[str, int]:
    """Write the results file: every input row with its outcome in ``frame``; the counts, in order."""
    headers, cells = results_table(sheet, frame, columns.ignored)
    write_results(out, headers, cells)
    return _in_order(count_statuses(frame))


def _skip_recent(
    validation: Validation,
    history: History,
    days: Window,
    ctx: Context,
    *,
    run: str | None,
    began: dt.datetime | None = None,
) -> Validation:
    """``valid`` rows whose number another run scheduled or claimed in ``days`` days (before the
    campaign ``began``, or since): ``suppressed``."""
    numbers = validation.requests["to_number"][validation.status == "valid"]
    recent = history.recent(numbers.dropna().astype(str), days=days, exclude_run=run, before=began)
    if not recent:
        return validation
    reasons = pd.Series(
        {number: entry.reason(ctx.timezone) for number, entry in recent.items()}, dtype=object
    )
    return suppress_rows(validation, [], reasons=reasons)


def _ordered(counts: Mapping[str, int]) -> list[str]:
    return [s for s in STATUS_ORDER if s in counts] + sorted(set(counts) - set(STATUS_ORDER))


def _in_order(counts: Mapping[str, int]) -> dict[str, int]:
    """``counts`` in the order the summary prints them: scheduled first, pending last."""
    return {status: counts[status] for status in _ordered(counts)}


def _exit_code(
    counts: Mapping[str, int],
    refused: ApiRefusedError | None,
    *,
    dry_run: bool,
    unavailable: ApiUnavailableError | None = None,
) -> int:
    """What ``callkaro-loader run`` exits with for a run that got this far.

    An outage (4) comes before rows needing a person (1): the same command run later is what
    the user must do first, and it exits 1 then if rows still need a person.
    """
    if refused is not None:
        return refused.exit_code
    if unavailable is not None:
        return unavailable.exit_code
    return 0 if set(counts) <= (SETTLED_DRY if dry_run else SETTLED) else 1


def _retry_policy(policy: RetryPolicy, options: RunOptions) -> RetryPolicy:
    """``policy``, retrying for ``--retry-for`` when it was given."""
    seconds = options.retry_for_seconds()
    return policy if seconds is None else dataclasses.replace(policy, retry_for=seconds)


def _unavailable(reason: str | None, counts: Mapping[str, int]) -> ApiUnavailableError | None:
    """The outage the send stage met, said as the CLI prints it, or None."""
    if reason is None:
        return None
    pending = counts.get("pending", 0)
    return ApiUnavailableError(
        f"the API was unavailable ({reason}); {pending:,} row{'s' if pending != 1 else ''} left pending, "
        "nothing is lost: run the same command again later",
        hint="--retry-for 30m (config: retry_for) keeps retrying that long before giving up.",
    )


def _refuse_orphaned_results(out: Path) -> None:
    """Refuse a results file that shows calls made when the state that would resume them is gone.

    Without the state every row would be sent again: the people it shows as called would be
    called twice. (A dry run's results show only ``valid`` rows, and write no state.)
    """
    if state_path(out).exists() or not out.is_file():
        return
    try:
        earlier = read_sheet(out)
    except LoaderError:
        return  # not a table the loader wrote
    if "callkaro_status" not in earlier.headers:
        return
    statuses = earlier.cells[earlier.headers.index("callkaro_status")].astype(str)
    made = int(statuses.isin(["scheduled", "uncertain"]).sum())
    if made:
        raise StateError(
            f"{out} shows calls already made ({made:,} scheduled or uncertain), but its state "
            f"({state_path(out).name}) is gone: running would call those numbers again",
            hint="Put the state file back beside the results and run again; a new --output or --fresh "
            "would call those people again.",
        )


def _claim_state(
    state: RunState,
    path: Path,
    validation: Validation,
    options: PlanOptions,
    *,
    agent_id: str | None,
    batch_id: str | None,
) -> frozenset[str] | None:
    """Make ``state`` this run's: new, resumed (with this input, edited or not, or another one),
    or (``--fresh``) started over. With ``--fresh``: the numbers the state had called, else None.
    ``agent_id`` None (``validate``, which takes no agent): whatever agent the state has."""
    digest = fingerprint(path)
    print_name = state.output
    if state.legacy:
        _upgrade_state(state, path, validation, digest, fresh=options.fresh)
    called = None
    if options.fresh:
        called = state.called_numbers()
        state.reset()
    elif not state.is_new():
        if agent_id is not None and state.get("agent_id") not in (None, agent_id):
            raise StateError(
                f"{print_name} was started with --agent-id {state.get('agent_id')}, not {agent_id}",
                hint="Resume with the same --agent-id; giving this run its own --output instead starts a "
                "new campaign, which calls again anyone this one has called.",
            )
        known_batch = state.get("batch_id")
        if batch_id and known_batch and batch_id != known_batch:
            raise StateError(
                f"{print_name} was sending into campaign {known_batch}, not {batch_id}",
                hint="Resume without --batch-id (or with the same one); another --output into campaign "
                f"{batch_id} would call again anyone campaign {known_batch} has called.",
            )
        state.recover_interrupted()
    state.set(
        fingerprint=digest,
        input=str(path),
        agent_id=agent_id or state.get("agent_id"),
        batch_id=batch_id or state.get("batch_id"),
        settings=json.dumps(options.settings(), default=str, sort_keys=True),
    )
    return called


def _upgrade_state(state: RunState, path: Path, validation: Validation, digest: str, *, fresh: bool) -> None:
    """A state written before slots kept numbers knows its rows only by position in the sheet read then.

    Those positions still say which numbers were called when the sheet is the same (same bytes),
    or when nothing was called; otherwise nobody can tell, and the run is refused.
    """
    calls = state.legacy_calls()
    if state.get("fingerprint") == digest:
        numbers = validation.requests["to_number"].dropna()
        state.upgrade(dict(zip(numbers.index.tolist(), numbers.astype(str).tolist(), strict=True)))
    elif calls == 0 or fresh:
        state.upgrade({})
    else:
        raise StateError(
            f"{state.path} was written by an older callkaro-loader, which kept rows by their position in "
            f"the sheet, and {path} is not the sheet its {calls:,} calls were made from",
            hint=f"Run the same command once with that sheet as it was ({state.get('input') or 'unedited'}; "
            f"{state.output} lists its rows) to bring the state up to date, then run this one; a new "
            f"--output or --fresh would call those {calls:,} people again.",
        )


def _bind_rows(
    state: RunState,
    sheet: Sheet,
    validation: Validation,
    history: History | None,
    options: PlanOptions,
    *,
    run: str,
    batch_id: str | None,
    ctx: Context,
) -> None:
    """Give each row holding a number the campaign's call for it, if there is one (see ``RunState.bind``).

    With a ledger, calls other outputs made into this campaign (``--batch-id``) count too.
    """
    numbers = validation.requests["to_number"]
    holding = validation.status.isin(["valid", "invalid", "suppressed"]) & numbers.notna()
    rows = validation.status.index[holding]
    if history is not None and batch_id:
        found = history.campaign_calls(batch_id, numbers[rows].astype(str), exclude_run=run)
        state.import_calls(
            (
                entry.number,
                call_id,
                # An entry whose time nobody can read was still a call: dated now.
                iso_utc(entry.at or ctx.now),
                "scheduled" if entry.status == "scheduled" else "uncertain",
                f"from {entry.input}" if entry.status == "scheduled" else entry.reason(ctx.timezone),
            )
            for entry, call_id in found
        )
    contents = _row_contents(sheet, rows) if options.allow_duplicates else [None] * len(rows)
    plan = [
        Planned(int(row), str(number), content, status == "valid")
        for row, number, status, content in zip(
            rows.tolist(), numbers[rows].tolist(), validation.status[rows].tolist(), contents, strict=True
        )
    ]
    state.bind(plan, one_per_number=not options.allow_duplicates)


def _row_contents(sheet: Sheet, rows: pd.Index) -> list[str | None]:
    """A digest of each row's cells, columns taken by header: the same row, moved or not, has the same one."""
    order = sorted(range(len(sheet.headers)), key=lambda i: (sheet.headers[i], i))
    cells = sheet.cells.loc[rows, [sheet.cells.columns[i] for i in order]].astype(str)
    return [format(h, "016x") for h in pd.util.hash_pandas_object(cells, index=False).tolist()]


class SlotClaims(Claims):
    """``Claims`` keyed by the state's slots, which stay with a number when the sheet is edited.

    The sender speaks in rows of this run's input; the ledger keeps a run's
    entries by a key that must not change meaning between runs of one output
    (a row position would, once rows move).
    """

    def __init__(self, history: History, *, slots: Mapping[int, int], **kw: Any) -> None:
        super().__init__(history, **kw)
        self._slots = slots

    def admit(self, rows: list[int]) -> dict[int, str]:
        refused = super().admit([self._slots[row] for row in rows])
        row_of = {self._slots[row]: row for row in rows}
        return {row_of[slot]: why for slot, why in refused.items()}

    def outcome(
        self, source_row: int, status: str, *, call_id: str | None, message: str | None, attempts: int
    ) -> None:
        slot = self._slots.get(source_row, source_row)
        super().outcome(slot, status, call_id=call_id, message=message, attempts=attempts)


def _say_when_called(
    frame: pd.DataFrame, earlier: Mapping[int, RowState], timezone: dt.tzinfo
) -> dict[str, int]:
    """Say on each row called by an earlier run when that was; count calls by this run and earlier ones."""
    scheduled = frame["callkaro_status"] == "scheduled"
    shown = frame.index[scheduled & frame.index.isin(list(earlier))].tolist()
    if shown:
        said: dict[tuple[str, str | None], str] = {}  # calls made in the same second share their text

        def text(record: RowState) -> str:
            key = (record.updated_at, record.message)
            if key not in said:
                when = dt.datetime.fromisoformat(record.updated_at).astimezone(timezone)
                origin = f" ({record.message})" if record.message else ""
                said[key] = f"scheduled by an earlier run on {when:%Y-%m-%d %H:%M %Z}{origin}; not sent again"
            return said[key]

        texts = [text(earlier[row]) for row in shown]
        frame.loc[shown, "callkaro_message"] = pd.Series(texts, index=shown, dtype=object)
    return {"this_run": int(scheduled.sum()) - len(shown), "earlier_runs": len(shown)}


def _called_again(called: frozenset[str], validation: Validation, to_send: pd.Index) -> int:
    """How many of the numbers ``to_send`` holds were called before: by the campaign ``--fresh``
    forgot, or by any run the ledger recorded."""
    return len(set(validation.requests["to_number"][to_send].astype(str)) & called)


def _fresh_notice(out: Path, again: int, batch_id: str | None) -> str:
    """What ``--fresh`` says before sending: ``again`` people it already called will be called again."""
    where = f"campaign {batch_id}" if batch_id else "a new campaign"
    people = "1 person" if again == 1 else f"{again:,} people"
    return f"--fresh: starting {out} over in {where}; {people} it already called will be called again"


def _final_outcomes(validation: Validation, recorded: Mapping[int, RowState]) -> pd.DataFrame:
    valid = set(int(r) for r in validation.status.index[validation.status == "valid"])
    suppressed = set(int(r) for r in validation.status.index[validation.status == "suppressed"])
    # A row recorded as pending that no longer validates (say, its time has passed) is reported as invalid;
    # one now on a do-not-call list (or called recently) is suppressed, unless the API already has its call.
    relevant = {
        row: rec
        for row, rec in recorded.items()
        if row in valid
        or (rec.status != "pending" and row not in suppressed)
        or (row in suppressed and rec.status in ("scheduled", "sending", "uncertain"))
    }
    return outcomes(validation.status, validation.message, relevant)


def summary_lines(counts: Mapping[str, int]) -> list[str]:
    ordered = _ordered(counts)
    width = max((len(s) for s in ordered), default=0)
    return [f"{status:<{width}}  {counts[status]}" for status in ordered]
