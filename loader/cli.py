"""The ``callkaro-loader`` command: flags in, one library call, a summary and an exit code out.

Everything the commands do lives in ``loader.pipeline``; this module only
parses options, turns the library's exceptions into one line plus a hint,
and maps outcomes to the documented exit codes:

    0  nothing needs a person        2  usage, configuration or input-file error
    1  some rows need a person       3  the API refused the run (key or agent)
    4  the API was unavailable; nothing is lost: run the same command again later
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loader import __version__, early_read
from loader.errors import LoaderError, UsageError
from loader.options import O, PlanOptions, RunOptions
from loader.secrets import ENV_VAR, MASK, ApiKey, load_api_key, mask

if TYPE_CHECKING:
    from loader.pipeline import RunResult

# loader.pipeline (pandas, pyarrow, pandera) is imported by the commands that need it, after
# main() has set a workbook's parse going (loader.early_read).

PROG = "callkaro-loader"
#: Objects made between two runs of the cycle collector's youngest generation (Python's default: 700).
_GC_THRESHOLD = 50_000
#: Rows with problems that ``validate`` prints before pointing at --report.
SHOWN_ROWS = 20

EXIT_CODES = """\
exit codes:
  0  nothing needs a person: every row is scheduled, duplicate or suppressed
     (also valid, for validate and --dry-run)
  1  finished, but some rows need a person: invalid, failed, uncertain or pending
     (or calls were made but the results file or summary could not be written)
  2  usage, configuration or input-file error; nothing was sent
  3  the API refused the run itself (key or agent); nothing more was sent
  4  the API was unavailable (unreachable, or 5xx for the campaign or every
     request) past --retry-for; nothing is lost: run the same command again later
"""


class _BadArguments(Exception):
    """argparse's own usage error, shown by ``main`` once values that may be secrets are hidden."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog, self.message = prog, message


class _Once(argparse.Action):
    """An option that takes one value refuses a second one: ``--history a --history b`` would
    otherwise silently use b, and a pasted command line could quietly undo a setting."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        given: set[str] = vars(namespace).setdefault("_given_once", set())
        if self.dest in given:
            names = "/".join(self.option_strings)
            parser.error(f"{names} was given twice; it takes one value: give it once")
        given.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


class _StoreOnce(_Once, argparse._StoreAction):
    pass


class _BooleanOnce(_Once, argparse.BooleanOptionalAction):
    pass


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Every option that stores one value (argparse's default action), in every subcommand.
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)

    def error(self, message: str) -> Any:  # argparse's own usage errors: exit 2, one line, a hint
        raise _BadArguments(self.prog, message)


def _bad_arguments(exc: _BadArguments, argv: Sequence[str], parser: argparse.ArgumentParser) -> None:
    """Print argparse's error with the values of unknown flags hidden, then exit 2 as argparse does.

    ``--token sk-...`` or ``--api=sk-...`` is someone putting the key on the command line under a
    name the loader does not know: the error names the flag, never the value.
    """
    message = exc.message
    for value in sorted(_unknown_flag_values(argv, parser), key=len, reverse=True):
        message = re.sub(rf"(?<![^\s'=]){re.escape(value)}(?![^\s',])", MASK, message)
    # The key pasted anywhere else argparse complains about (a stray argument, a flag's value):
    # found where a run finds it, the environment or .env.
    try:
        key = load_api_key()
    except LoaderError:  # a key no header can carry (still hidden), or a .env that cannot be read
        key = ApiKey(raw) if (raw := os.environ.get(ENV_VAR, "").strip()) else None
    message = mask(message, key)
    print(f"{exc.prog}: error: {message}\nhint: see '{exc.prog} --help'", file=sys.stderr)
    raise SystemExit(2)


def _unknown_flag_values(argv: Sequence[str], parser: argparse.ArgumentParser) -> set[str]:
    """The values given to flags the command does not know (``--api VALUE``, ``--api=VALUE``)."""
    known = set(parser._option_string_actions)
    commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    named = [arg for arg in argv if commands and arg in commands[0].choices]
    if named:
        known |= set(commands[0].choices[named[0]]._option_string_actions)
    values: set[str] = set()
    for index, arg in enumerate(argv):
        name, equals, value = arg.partition("=")
        # A unique abbreviation (--agent for --agent-id) is a flag argparse knows.
        if not arg.startswith("-") or len([k for k in known if k.startswith(name)]) == 1 or name in known:
            continue
        if equals:
            values.add(value)
        elif index + 1 < len(argv) and not argv[index + 1].startswith("-"):
            values.add(argv[index + 1])
    return values - {""}


def _days(text: str) -> int | str:
    """``--skip-recent``: a whole number of days, or ``all``."""
    if text.strip().lower() == "all":
        return "all"
    return int(text)


_days.__name__ = "days"  # argparse names the type in its error: "invalid days value: 'x'"


def _input_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reading the sheet")
    group.add_argument(
        "--sheet", metavar="NAME", help="Excel sheet by name or 0-based index (default: the first sheet)"
    )
    group.add_argument(
        "--header-row",
        metavar="N",
        type=int,
        help="the row (1-based) that holds the column headers, for sheets with title rows above (default: 1)",
    )
    group.add_argument(
        "--encoding",
        metavar="NAME",
        help="text encoding of a CSV/TXT file, when detection gets it wrong (e.g. cp1252, utf-16)",
    )
    group.add_argument(
        "--map",
        metavar='"HEADER=FIELD"',
        action="append",
        help='take column HEADER as call field FIELD, e.g. --map "Mobile No=to_number" (repeatable); '
        "do-not-call lists also read every column mapped to to_number",
    )

    group = parser.add_argument_group("checking rows")
    group.add_argument(
        "--default-region",
        metavar="CC",
        help="ISO country code for numbers written without a country code, e.g. IN",
    )
    group.add_argument(
        "--timezone",
        metavar="TZ",
        help="IANA time zone for judging past times and converting offsets, e.g. Asia/Kolkata "
        "(default: this machine's)",
    )
    group.add_argument("--allow-past", action="store_true", help="accept schedule_at values in the past")
    group.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="schedule a number again when it appears on several rows (default: later rows are 'duplicate')",
    )
    group.add_argument(
        "--include-hidden-rows",
        action="store_true",
        help="call rows hidden in a workbook too: hidden, filtered out, zero height or collapsed "
        "(default: they are 'suppressed')",
    )
    group.add_argument(
        "--suppress",
        metavar="PATH",
        type=Path,
        action="append",
        help="a do-not-call list: CSV or Excel with a phone column, or one number per line; rows with "
        "a listed number are 'suppressed' (repeatable)",
    )

    group = parser.add_argument_group("defaults for blank cells")
    group.add_argument("--schedule-at", metavar="DATETIME", help="when to call, e.g. '2030-05-28 09:30'")
    group.add_argument("--min-trigger-time", metavar="HH:MM", help="start of each day's calling window")
    group.add_argument("--max-trigger-time", metavar="HH:MM", help="end of each day's calling window")
    group.add_argument(
        "--carry-over",
        action=_BooleanOnce,
        help="move a call not made by the window's end to the next day",
    )
    group.add_argument("--retries", metavar="N", help="retries when the customer does not pick up")
    group.add_argument(
        "--gap", metavar="MINUTES[,MINUTES...]", help="minutes between retries, one value or one per retry"
    )
    group.add_argument("--priority", metavar="N", help="call priority, -100 to 100")


def _campaign_options(group: argparse._ArgumentGroup) -> None:
    """--batch-id and --output: which campaign and which state a run (and its preview) uses."""
    group.add_argument(
        "--batch-id", metavar="ID", help="schedule into this existing campaign instead of creating one"
    )
    group.add_argument(
        "--output",
        metavar="PATH",
        type=Path,
        help="results file, .csv or .xlsx (default: <input name>.results.csv beside the input); its "
        "state says which numbers the campaign already called",
    )


def _sending_plan_options(group: argparse._ArgumentGroup) -> None:
    """The sending options that change which rows are sent (so validate takes them too)."""
    group.add_argument(
        "--sandbox",
        action="store_true",
        help="send to a built-in simulated API instead of CallKaro; needs no key",
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        help="API base URL (default: $CALLKARO_BASE_URL, else https://api.callkaro.ai); "
        "plain http only to this machine",
    )
    group.add_argument(
        "--fresh",
        action="store_true",
        help="ignore an earlier run's state for this --output and start over in a new campaign: "
        "everyone it called is called again, except numbers the call ledger shows called within "
        "--skip-recent (it says how many first)",
    )
    group.add_argument(
        "--retry-uncertain",
        action="store_true",
        help="resend rows whose earlier request got no answer (they may be called twice)",
    )


def _ledger_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--history",
        metavar="PATH",
        type=Path,
        help="the call ledger: a SQLite file of every number scheduled, when and in which campaign, "
        "shared by runs; created if missing (default: $CALLKARO_HISTORY, else a per-user ledger in "
        "this user's state folder; --sandbox keeps none unless given)",
    )
    group.add_argument(
        "--skip-recent",
        metavar="DAYS",
        type=_days,
        help="rows whose number the ledger shows scheduled in the last DAYS days, in any campaign, are "
        "'suppressed' (default: 1; 0 turns it off, calling them again; 'all': ever called)",
    )
    group.add_argument(
        "--no-history",
        action="store_true",
        help="neither read nor write the call ledger, so anyone called before may be called again "
        "(for throwaway tests only)",
    )


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        type=Path,
        help="read options from a TOML file, each key named as its option with _ for - "
        '(e.g. default_region = "IN"); options given here win over the file',
    )


def _options(args: argparse.Namespace, kind: type[O]) -> O:
    """The options given: the ``--config`` file's, with the flags given on the command line over them.

    The run and validate parsers leave flags that were not given out of
    ``args`` altogether (``argument_default=SUPPRESS``), so a default can
    never hide a value from the file.
    """
    from loader.config import make_options

    names = {f.name for f in dataclasses.fields(kind)}
    given = {name: value for name, value in vars(args).items() if name in names}
    return make_options(kind, None, getattr(args, "config", None), given)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Turn a spreadsheet of contacts into a scheduled outbound-calling campaign on CallKaro.",
        epilog="Start with: callkaro-loader run contacts.xlsx --agent-id demo-agent --sandbox "
        "--default-region IN\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    run = commands.add_parser(
        "run",
        argument_default=argparse.SUPPRESS,
        help="check a sheet, create a campaign and schedule one call per valid row",
        description="Check every row of INPUT, create a campaign (or use --batch-id), schedule one call per "
        "valid row, and write every row's outcome to a results file. Running the same command "
        "again resumes: nothing already scheduled is sent twice. The API key comes from "
        "CALLKARO_API_KEY or a .env file, never from the command line.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "input",
        metavar="INPUT",
        type=Path,
        help="contacts file: .csv, .tsv, .txt, .xlsx, .xlsm, .xls or .ods",
    )
    group = run.add_argument_group("campaign")
    group.add_argument("--agent-id", metavar="ID", help="the CallKaro agent that makes the calls (required)")
    group.add_argument(
        "--campaign-name",
        metavar="NAME",
        help="name of the campaign to create; {date} and {input} are filled in (default: '{input} {date}')",
    )
    _campaign_options(group)
    _input_options(run)
    group = run.add_argument_group("sending")
    group.add_argument("--concurrency", metavar="N", type=int, help="requests in flight at once (default: 8)")
    group.add_argument(
        "--rate-limit",
        metavar="R",
        type=float,
        help="start at most R requests per second, R at least 1/86400 (one a day) (default: no limit, "
        "but slow down when the API answers 429)",
    )
    group.add_argument(
        "--retry-for",
        metavar="DURATION",
        help="keep retrying failures that prove nothing was scheduled (unreachable, 429, 503, the "
        "API's own 5xx error) this long, e.g. 30m, 90s, 2h, before leaving rows pending and exiting 4 "
        "(default: 5 tries over a few seconds)",
    )
    group.add_argument(
        "--dry-run", action="store_true", help="check every row and build every request, send nothing"
    )
    _sending_plan_options(group)
    _ledger_options(run.add_argument_group("across runs"))
    group = run.add_argument_group("output")
    group.add_argument(
        "--summary-json",
        metavar="PATH",
        type=Path,
        help="also write the summary (counts per status, campaign id, durations, results path) as JSON",
    )
    group.add_argument(
        "--log-file",
        metavar="PATH",
        type=Path,
        help="append one JSON line per row outcome and per retry (never the API key)",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument("--quiet", action="store_true", help="print only errors (for cron)")
    _config_option(run)

    validate = commands.add_parser(
        "validate",
        argument_default=argparse.SUPPRESS,
        help="check a sheet and report every problem; sends nothing",
        description="Read and check INPUT exactly as 'run' would, send nothing, and print a summary. "
        "The counts are what 'run' with the same options would report now: the campaign state of its "
        "--output, the call ledger and do-not-call lists apply, read without changing them. "
        "Needs no API key.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    validate.add_argument("input", metavar="INPUT", type=Path, help="contacts file to check")
    validate.add_argument(
        "--report",
        metavar="PATH",
        type=Path,
        help="write the problems to PATH: .csv gives one line per problem (source_row, column, value, "
        "error); .xlsx gives a copy of the sheet with each bad cell filled red and a comment saying how "
        "to fix it, to correct in Excel and load again",
    )
    _input_options(validate)
    group = validate.add_argument_group("the run to preview (its state and ledger are read, never written)")
    _campaign_options(group)
    _sending_plan_options(group)
    _ledger_options(validate.add_argument_group("across runs"))
    validate.add_argument("--quiet", action="store_true", help="print only errors")
    _config_option(validate)

    status = commands.add_parser(
        "status",
        help="show where the run for a results file stands, from its state; sends nothing",
        description="Read OUTPUT's state (OUTPUT.state, beside the results file) without changing it or "
        "contacting the API, and print the campaign, the count of rows per status, the input and the "
        "last activity. Exits 0 when nothing needs a person, 1 when some rows do, 2 when there is no state.",
    )
    status.add_argument(
        "output", metavar="OUTPUT", type=Path, help="the results file of a run (its --output)"
    )

    template = commands.add_parser(
        "template",
        help="write an empty contacts sheet (.xlsx or .csv) to fill in",
        description="Write an empty contacts sheet with every call-field column, two example metadata "
        "columns and one example row. The .xlsx template formats the phone column as text (so Excel "
        "keeps every digit), explains each column in a header comment and checks the constrained "
        "columns as they are typed. An existing file is never replaced.",
    )
    template.add_argument("path", metavar="PATH", type=Path, help="where to write it: .xlsx or .csv")

    sandbox = commands.add_parser(
        "sandbox",
        help="serve a simulated CallKaro API on this machine, for demos and tests",
        description="Serve a faithful simulation of the CallKaro API on a loopback address until Ctrl-C. "
        "GET /_sandbox/calls and /_sandbox/campaigns show what it accepted.",
    )
    sandbox.add_argument(
        "--host", default="127.0.0.1", help="loopback address to listen on (default: 127.0.0.1)"
    )
    sandbox.add_argument("--port", type=int, default=8787, help="port (default: 8787; 0 picks a free one)")
    sandbox.add_argument(
        "--api-key",
        dest="sandbox_key",
        metavar="KEY",
        default="sandbox-key",
        help="the key clients must send (default: sandbox-key)",
    )
    sandbox.add_argument(
        "--agent",
        action="append",
        metavar="ID",
        help="an agent id the sandbox knows (repeatable; default: demo-agent)",
    )
    faults = sandbox.add_argument_group("fault injection")
    faults.add_argument(
        "--latency-ms", type=float, default=0.0, metavar="MS", help="delay before each answer"
    )
    faults.add_argument(
        "--error-rate", type=float, default=0.0, metavar="P", help="share of requests answered 500"
    )
    faults.add_argument(
        "--rate-limit", type=float, metavar="N", help="answer 429 with Retry-After past N requests per second"
    )
    faults.add_argument(
        "--drop-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of calls recorded and then left unanswered (the connection is closed)",
    )
    faults.add_argument(
        "--gateway-error-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of calls recorded and then answered 502 or 504 with an HTML page, as a load "
        "balancer in front of a slow API would",
    )
    faults.add_argument("--seed", type=int, help="make the faults reproducible")
    return parser


def _refuse_key_flags(argv: Sequence[str]) -> None:
    """A key on the command line shows in ``ps`` and shell history: refuse it with the right way."""
    if argv and argv[0] == "sandbox":
        return
    for arg in argv:
        name = arg.split("=", 1)[0]
        if name in ("--api-key", "--key", "--apikey", "--x-api-key"):
            raise UsageError(
                f"{name} is not accepted: a key on the command line shows up in process lists "
                "and shell history",
                hint="Set CALLKARO_API_KEY in the environment, or put CALLKARO_API_KEY=... in a .env "
                "file here.",
            )


def _started(args: argparse.Namespace, kind: type[O]) -> O:
    """The command's options, checked; then, while pandas loads, the workbook's parse is set going.

    Options come first: a run that cannot start (no --agent-id, a bad --config file) is not
    kept waiting by a parse nobody needs, and a sheet chosen in the --config file is the one
    parsed.
    """
    options = _options(args, kind)
    if isinstance(options, RunOptions):
        try:
            options.check()
        except LoaderError:
            # No parse for a run that cannot start: load_campaign refuses these options itself,
            # and tells --summary-json and --log-file why, as for a library caller.
            return options
    early_read.start(args.input, options.sheet)
    return options


def _cmd_run(args: argparse.Namespace, options: RunOptions) -> int:
    from loader.pipeline import load_campaign, summary_lines

    result: RunResult = load_campaign(
        args.input,
        options,
        handle_signals=True,
        notify=lambda line: print(f"{PROG}: {line}", file=sys.stderr),
    )
    if not options.quiet:
        for line in summary_lines(result.counts):
            _say(line)
        if result.calls["earlier_runs"] and result.dry_run:
            _say("scheduled by earlier runs {earlier_runs}, not sent again".format(**result.calls))
        elif result.calls["earlier_runs"]:
            _say("scheduled by this run {this_run}, by earlier runs {earlier_runs}".format(**result.calls))
        if result.batch_id and not result.dry_run:
            _say(f"campaign: {result.batch_id}")
        _say(f"results: {result.results_path}")
    elif result.exit_code == 1 and not result.stopped:
        # Under cron nobody sees the exit code: a quiet run must still say when rows need a person.
        _print_needing_a_person(result, result.needing_a_person)
    elif result.unavailable is not None:
        # Rows left pending by the outage are said below; any others (uncertain...) need a person now.
        others = {status: n for status, n in result.needing_a_person.items() if status != "pending"}
        if others:
            _print_needing_a_person(result, others)
    if result.stopped:
        print(
            f"{PROG}: stopped before every row was sent; run the same command again to resume",
            file=sys.stderr,
        )
    if result.refused is not None:
        _print_error(result.refused)
    elif result.unavailable is not None:
        # Also under --quiet: cron's one line says the API was down, not that rows need a person.
        _print_error(result.unavailable)
    return result.exit_code


def _print_needing_a_person(result: RunResult, needing: dict[str, int]) -> None:
    """One line on stderr: how many rows need a person, by status, and where to read why."""
    total = sum(needing.values())
    parts = ", ".join(f"{status} {n}" for status, n in needing.items())
    print(
        f"{PROG}: {total} row{'s' if total != 1 else ''} need{'' if total != 1 else 's'} a person "
        f"({parts}); read callkaro_message in {result.results_path}",
        file=sys.stderr,
    )


def _cmd_validate(args: argparse.Namespace, options: PlanOptions) -> int:
    from loader.pipeline import summary_lines, validate_file

    result = validate_file(args.input, report=getattr(args, "report", None), options=options)
    if not getattr(args, "quiet", False):
        for line in summary_lines(result.counts):
            _say(line)
        # Rows an earlier run of the campaign scheduled are no problem: not listed one by one.
        flagged = result.outcomes[~result.outcomes["callkaro_status"].isin(["valid", "scheduled"])]
        for row, outcome in flagged.head(SHOWN_ROWS).iterrows():
            _say(f"  row {row} {outcome['callkaro_status']}: {outcome['callkaro_message']}")
        if len(flagged) > SHOWN_ROWS:
            more = len(flagged) - SHOWN_ROWS
            _say(
                f"  ... and {more} more row{'s' if more != 1 else ''}"
                + ("" if result.report_path else " (see every problem with --report problems.csv)")
            )
        if result.report_path:
            _say(f"report: {result.report_path}")
    return result.exit_code


def _cmd_template(args: argparse.Namespace) -> int:
    from loader.template import write_template

    _say(f"template: {write_template(args.path)}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from loader.pipeline import SETTLED, summary_lines
    from loader.state import read_status

    found = read_status(args.output)
    campaign = found.batch_id or "not created yet"
    if found.batch_id and found.campaign_name:
        campaign += f" ({found.campaign_name})"
    if found.finished and found.refused:
        where = f"refused by the API at {found.finished_at}: {found.refused}"
    elif found.finished and found.unavailable:
        where = f"stopped at {found.finished_at}: {found.unavailable}"
    elif found.finished and found.stopped:
        where = (
            f"stopped at {found.finished_at} before every row was sent; run the same command again to resume"
        )
    elif found.finished:
        where = f"finished at {found.finished_at}"
    elif found.counts.get("sending"):
        where = "running, or stopped while requests were in flight ('sending' rows)"
    else:
        where = "running, or stopped before writing its results"
    _say(f"campaign: {campaign}")
    _say(f"input: {found.input or '?'}")
    _say(f"last activity: {found.last_activity or '?'}")
    _say(f"run: {where}")
    for line in summary_lines(found.counts):
        _say(line)
    _say(f"results: {found.results_path or args.output}")
    _say(f"ledger: {found.ledger or 'none (--no-history, or the built-in --sandbox)'}")
    return 0 if found.finished and set(found.counts) <= SETTLED else 1


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from loader.sandbox import Faults, serve

    if not 0 <= args.port <= 65535:  # the socket library raises OverflowError, not OSError
        raise UsageError(f"--port must be from 0 to 65535 (0 picks a free one), not {args.port}")
    try:
        faults = Faults(
            latency_ms=args.latency_ms,
            error_rate=args.error_rate,
            rate_limit=args.rate_limit,
            drop_rate=args.drop_rate,
            gateway_error_rate=args.gateway_error_rate,
            seed=args.seed,
        )
        serve(
            host=args.host,
            port=args.port,
            api_key=args.sandbox_key,
            agents=args.agent or ["demo-agent"],
            faults=faults,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    return 0


def _say(line: str) -> None:
    """One line of a command's output. Whoever reads it may stop early (``| head``): the work is
    done by then, so the rest is dropped, without a traceback and with the command's own exit code."""
    try:
        print(line)
    except BrokenPipeError:
        _drop_stdout()


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()


def _drop_stdout() -> None:
    import os

    # Output still buffered would fail again when Python flushes it at exit: send it nowhere.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _print_error(exc: LoaderError) -> None:
    print(f"{PROG}: error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _refuse_key_flags(argv)
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except _BadArguments as exc:
            _bad_arguments(exc, argv, parser)
        if args.command == "run":
            code = _cmd_run(args, _started(args, RunOptions))
        elif args.command == "validate":
            code = _cmd_validate(args, _started(args, PlanOptions))
        else:
            other = {"template": _cmd_template, "status": _cmd_status, "sandbox": _cmd_sandbox}
            code = other[args.command](args)
        _flush_stdout()
        return code
    except LoaderError as exc:
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            f"{PROG}: stopped at once; what was recorded is kept; run the same command again to resume",
            file=sys.stderr,
        )
        return 1
    finally:
        early_read.discard()


def entry() -> int:
    """The ``callkaro-loader`` command: ``main``, with settings only a whole process should choose."""
    # Reading and checking a sheet makes millions of short-lived objects and almost no reference
    # cycles; at Python's default threshold (700) the cycle collector runs over them thousands
    # of times: 0.15 s of the 1.9 s a 100,000-row workbook took. Cycles are still collected.
    gc.set_threshold(_GC_THRESHOLD, *gc.get_threshold()[1:])
    code = main()
    if early_read.unneeded():
        # The run stopped before it read its workbook (a usage error, Ctrl-C) while the parse
        # still goes on in its thread: end now rather than wait for a sheet nobody will read.
        _exit_at_once(code)
    try:
        # A parse the reader passed over (the file changed after it began): rare, and short.
        early_read.wait()
    except KeyboardInterrupt:
        _exit_at_once(code)  # a second Ctrl-C: stop at once, as asked; the parse dies with the process
    # The process ends now: a last cycle collection over everything it read would only delay it.
    gc.freeze()
    return code


def _exit_at_once(code: int) -> None:
    """End the process with ``code`` without Python's shutdown, which would wait for the parse.

    ``main`` has returned: every file the run opened is closed. What is left is output not yet
    written out: the log handlers' and the terminal's.
    """
    import logging
    import os

    logging.shutdown()
    _flush_stdout()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(entry())
