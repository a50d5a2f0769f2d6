"""The command line: help for every option, one-line usage errors, the documented exit codes."""

from __future__ import annotations

import argparse
import csv
import errno
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from loader.cli import build_parser, main

FIXTURES = Path(__file__).parent / "fixtures"

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data"
BASE = "https://api.callkaro.ai"
KEY = "ck_test_9f8e7d6c5b4a"
TZ = ["--timezone", "Asia/Kolkata"]

#: Every option SPEC.md lists for ``run``.
SPEC_RUN_OPTIONS = [
    "--agent-id",
    "--campaign-name",
    "--batch-id",
    "--output",
    "--sheet",
    "--header-row",
    "--map",
    "--default-region",
    "--timezone",
    "--schedule-at",
    "--min-trigger-time",
    "--max-trigger-time",
    "--carry-over",
    "--no-carry-over",
    "--retries",
    "--gap",
    "--priority",
    "--allow-past",
    "--allow-duplicates",
    "--suppress",
    "--history",
    "--skip-recent",
    "--no-history",
    "--concurrency",
    "--rate-limit",
    "--retry-for",
    "--dry-run",
    "--sandbox",
    "--base-url",
    "--fresh",
    "--retry-uncertain",
    "--encoding",
    "--summary-json",
    "--log-file",
    "--config",
    "--no-progress",
    "--quiet",
]
#: Options SPEC.md promises that ``run`` does not have yet. Remove one here when it is added.
NOT_YET_IN_RUN: set[str] = set()

CLEAN_SHEET = (
    "Name,Phone,City,Age\n"
    "Aarav Sharma,+91 98765 43210,Bengaluru,34\n"
    "Priya Nair,098450 12345,Kochi,29\n"
    "Rohan Mehta,919820011223,Mumbai,\n"
)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding the sample sheets and a clean one, as the working directory, with no key set."""
    for name in ("contacts.csv", "contacts.xlsx"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    (tmp_path / "clean.csv").write_text(CLEAN_SHEET, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALLKARO_API_KEY", raising=False)
    monkeypatch.delenv("CALLKARO_BASE_URL", raising=False)
    return tmp_path


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """The network, replaced: any request to a route not defined here fails the test."""
    with respx.mock(base_url=BASE, assert_all_called=False, using="httpx") as router:
        yield router


def callkaro_answers(api: respx.MockRouter) -> tuple[respx.Route, respx.Route]:
    """A CallKaro that accepts everything."""
    count = 0

    def call(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        return httpx.Response(200, json={"status": "success", "call_id": f"call{count:03d}"})

    campaign = api.post("/call/campaign").mock(
        return_value=httpx.Response(200, json={"status": "success", "batch_id": "batch-1"})
    )
    outbound = api.post("/call/outbound").mock(side_effect=call)
    return campaign, outbound


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``callkaro-loader *argv`` in this process: exit code, stdout, stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exited:  # argparse's own errors exit from inside parse_args
        code = exited.code if isinstance(exited.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def statuses(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in read_results(path):
        counts[row["callkaro_status"]] = counts.get(row["callkaro_status"], 0) + 1
    return counts


# --- help -----------------------------------------------------------------------------------------


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def test_every_command_and_every_option_has_help_text() -> None:
    parsers = {"callkaro-loader": build_parser(), **subcommands()}
    missing = []
    for name, parser in parsers.items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                # The commands themselves: each is listed in --help with its own line.
                missing += [f"{name} {c.dest}" for c in action._choices_actions if not (c.help or "").strip()]
            elif not (action.help or "").strip():
                missing.append(f"{name} {action.option_strings or action.dest}")
    assert missing == []


def test_run_help_mentions_every_option_the_spec_lists_that_run_has(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--help"])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    known = set(subcommands()["run"]._option_string_actions)
    present = [option for option in SPEC_RUN_OPTIONS if option in known]
    assert [option for option in present if not re.search(rf"{option}\b", help_text)] == []
    assert "CALLKARO_API_KEY" in help_text and "exit codes:" in help_text


def test_spec_options_missing_from_run_are_exactly_the_known_gaps() -> None:
    known = set(subcommands()["run"]._option_string_actions)
    assert {option for option in SPEC_RUN_OPTIONS if option not in known} == NOT_YET_IN_RUN


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--help"],
            ["run", "validate", "sandbox", "exit codes:", "--version", "4  the API was unavailable"],
        ),
        (
            ["validate", "--help"],
            ["--report", "--default-region", "--timezone", "--map", "--sheet", "--quiet"],
        ),
        (
            ["sandbox", "--help"],
            [
                "--host",
                "--port",
                "--api-key",
                "--agent",
                "--latency-ms",
                "--error-rate",
                "--rate-limit",
                "--drop-rate",
                "--gateway-error-rate",
                "--seed",
            ],
        ),
    ],
    ids=["top", "validate", "sandbox"],
)
def test_each_commands_help_names_its_options(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: callkaro-loader")
    assert [word for word in expected if word not in help_text] == []


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([sys.executable, "-m", "loader"], id="python -m loader"),
        pytest.param([str(Path(sys.executable).parent / "callkaro-loader")], id="console script"),
    ],
)
def test_both_ways_of_starting_the_command_show_the_same_help(command: list[str]) -> None:
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("usage: callkaro-loader [-h] [--version] COMMAND ...")


@pytest.mark.parametrize("name", ["contacts.csv", "contacts.xlsx"])
def test_output_cut_short_by_its_reader_ends_quietly_with_the_commands_code(name: str) -> None:
    # `callkaro-loader validate leads.xlsx | head -1`: head stops reading; no traceback follows.
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails as a closed pipe
    try:
        done = subprocess.run(
            [sys.executable, "-m", "loader", "validate", str(FIXTURES / name), "--default-region", "IN"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (1, "")  # 1: the fixture has rows needing a person


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == "callkaro-loader 0.1.0\n"


# --- usage errors: exit 2, one line naming the problem, nothing sent ------------------------------


SANDBOX_RUN = ["run", "contacts.csv", "--agent-id", "demo-agent", "--sandbox", *TZ]


@pytest.mark.parametrize(
    ("argv", "line", "hint"),
    [
        pytest.param(
            ["run", "nope.csv", "--agent-id", "demo-agent", "--sandbox"],
            "callkaro-loader: error: nope.csv: no such file",
            None,
            id="missing input file",
        ),
        pytest.param(
            ["validate", "nope.xlsx"],
            "callkaro-loader: error: nope.xlsx: no such file",
            None,
            id="validate a missing file",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--default-region", "XX"],
            "callkaro-loader: error: --default-region 'XX' is not a country code phonenumbers knows",
            "hint: Use a two-letter ISO code such as IN, US or GB.",
            id="unknown region",
        ),
        pytest.param(
            [*SANDBOX_RUN[:-2], "--default-region", "IN", "--timezone", "Mars/Olympus"],
            "callkaro-loader: error: --timezone 'Mars/Olympus' is not an IANA time zone",
            "hint: Use a name such as Asia/Kolkata.",
            id="bad timezone",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--map", "Phone"],
            'callkaro-loader: error: --map "Phone" is not of the form "HEADER=FIELD"',
            None,
            id="map without =",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--map", "Phone=mobile"],
            "callkaro-loader: error: --map \"Phone=mobile\": 'mobile' is not a call field; use one of "
            "to_number, schedule_at, min_trigger_time, max_trigger_time, carry_over, number_of_retries, "
            "gap_between_retries, priority",
            None,
            id="map to a field that does not exist",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--map", "Mobile No=to_number"],
            "callkaro-loader: error: contacts.csv: --map names column 'Mobile No', which is not in the "
            "header row ('Name', 'Phone', 'City', 'Lead Status', 'Age', 'schedule_at', 'min_trigger_time', "
            "'max_trigger_time', 'carry_over', 'number_of_retries', 'gap_between_retries', 'priority', "
            "'Notes')",
            None,
            id="map a column the sheet does not have",
        ),
        pytest.param(
            ["run", "contacts.csv", "--agent-id", "demo-agent", "--api-key", KEY],
            "callkaro-loader: error: --api-key is not accepted: a key on the command line shows up in "
            "process lists and shell history",
            "hint: Set CALLKARO_API_KEY in the environment, or put CALLKARO_API_KEY=... in a .env file here.",
            id="api key on the command line",
        ),
        pytest.param(
            ["run", "contacts.csv", "--agent-id", "demo-agent", f"--api-key={KEY}"],
            "callkaro-loader: error: --api-key is not accepted: a key on the command line shows up in "
            "process lists and shell history",
            "hint: Set CALLKARO_API_KEY in the environment, or put CALLKARO_API_KEY=... in a .env file here.",
            id="api key on the command line with =",
        ),
        pytest.param(
            ["run", "contacts.csv", "--agent-id", "demo-agent", "--default-region", "IN", *TZ],
            "callkaro-loader: error: no API key: set CALLKARO_API_KEY or put it in a .env file in this "
            "folder",
            "hint: Or try the loader out with --sandbox, which needs no key.",
            id="no key and no sandbox",
        ),
        pytest.param(
            ["run", "contacts.csv", "--sandbox"],
            "callkaro-loader: error: --agent-id is required: the CallKaro agent that makes the calls",
            None,
            id="no agent",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--concurrency", "0"],
            "callkaro-loader: error: --concurrency must be 1 or more, not 0",
            None,
            id="no concurrency",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--default-region", "IN", "--rate-limit", "nan"],
            "callkaro-loader: error: --rate-limit must be a number of requests per second from 1/86400 "
            "(one a day) up, not nan",
            None,
            id="rate limit not a number",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--default-region", "IN", "--rate-limit", "inf"],
            "callkaro-loader: error: --rate-limit must be a number of requests per second from 1/86400 "
            "(one a day) up, not inf",
            None,
            id="rate limit infinite",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--default-region", "IN", "--retry-for", "30"],
            "callkaro-loader: error: --retry-for '30' is not a duration (add a unit: s, m or h); "
            "write it as 90s, 30m or 2h",
            None,
            id="retry-for without a unit",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--default-region", "IN", "--retry-for", "soon"],
            "callkaro-loader: error: --retry-for 'soon' is not a duration; write it as 90s, 30m or 2h",
            None,
            id="retry-for not a duration",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--concurrency", "many"],
            "callkaro-loader run: error: argument --concurrency: invalid int value: 'many'",
            "hint: see 'callkaro-loader run --help'",
            id="concurrency not a number",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--output", "results.json"],
            "callkaro-loader: error: --output results.json must end in .csv or .xlsx",
            None,
            id="output of an unknown kind",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--output", "contacts.csv"],
            "callkaro-loader: error: --output contacts.csv is the input file; the loader never "
            "overwrites its input",
            None,
            id="output over the input",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--header-row", "0"],
            "callkaro-loader: error: --header-row must be 1 or more, not 0",
            None,
            id="header row 0",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--default-region", "IN", "--summary-json", "nowhere/summary.json"],
            "callkaro-loader: error: --summary-json nowhere/summary.json: its folder does not exist",
            None,
            id="summary into a folder that does not exist",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--default-region", "IN", "--summary-json", "."],
            "callkaro-loader: error: --summary-json . is a folder; give the path of the JSON file to write",
            None,
            id="summary onto a folder",
        ),
        pytest.param(
            ["frobnicate"],
            "callkaro-loader: error: argument COMMAND: invalid choice: 'frobnicate' "
            "(choose from 'run', 'validate', 'status', 'template', 'sandbox')",
            "hint: see 'callkaro-loader --help'",
            id="unknown command",
        ),
        pytest.param(
            [*SANDBOX_RUN, "--frobnicate"],
            "callkaro-loader: error: unrecognized arguments: --frobnicate",
            "hint: see 'callkaro-loader --help'",
            id="unknown option",
        ),
    ],
)
def test_usage_error_exits_2_with_one_line_naming_the_problem_and_sends_nothing(
    here: Path,
    api: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    line: str,
    hint: str | None,
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.splitlines() == [line] + ([hint] if hint else [])
    assert not api.calls
    assert not (here / "contacts.results.csv").exists()


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry run"])
def test_output_that_is_a_folder_is_refused_before_anything_is_sent(
    here: Path, capsys: pytest.CaptureFixture[str], dry_run: list[str]
) -> None:
    (here / "results.csv").mkdir()
    code, out, err = run(capsys, *SANDBOX_RUN, "--default-region", "IN", "--output", "results.csv", *dry_run)
    assert code == 2
    assert err.splitlines() == [
        "callkaro-loader: error: --output results.csv is a folder; give the path of the results file to write"
    ]
    assert sorted(p.name for p in here.iterdir() if "results" in p.name) == ["results.csv"]


def test_output_where_no_file_can_be_written_is_refused_before_anything_is_sent(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "reports").write_text("a file where the folder should be\n", encoding="utf-8")
    code, out, err = run(capsys, *SANDBOX_RUN, "--default-region", "IN", "--output", "reports/out.csv")
    assert code == 2
    assert err.splitlines() == [
        "callkaro-loader: error: --output reports/out.csv cannot be written "
        "(reports is a file, not a folder)",
        "hint: Choose a path in a folder you can write to.",
    ]
    assert out == ""


def test_plain_http_base_url_to_another_host_is_refused_before_the_key_is_sent(
    here: Path, api: respx.MockRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    code, out, err = run(
        capsys,
        "run",
        "clean.csv",
        "--agent-id",
        "a1",
        "--default-region",
        "IN",
        "--base-url",
        "http://example.com",
    )
    assert code == 2
    assert err.splitlines() == [
        "callkaro-loader: error: --base-url 'http://example.com' uses plain http to a host that is not "
        "this machine, which would send the API key unencrypted",
        "hint: Use https://, or http://127.0.0.1:PORT for a local sandbox.",
    ]
    assert not api.calls
    # Nothing is left behind that would get in the way of the corrected command (or a dry run).
    assert sorted(p.name for p in here.iterdir() if "results" in p.name) == []


def test_another_input_for_the_same_output_continues_its_campaign_unless_fresh(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = ["--agent-id", "demo-agent", "--sandbox", "--default-region", "IN", *TZ]
    assert run(capsys, "run", "contacts.csv", *first)[0] == 1

    # clean.csv holds three numbers contacts.csv already had scheduled: none is sent again.
    code, out, err = run(capsys, "run", "clean.csv", *first, "--output", "contacts.results.csv")
    assert (code, err) == (0, "")
    assert "scheduled by this run 0, by earlier runs 3" in out.splitlines()
    rows = read_results(here / "contacts.results.csv")
    assert [r["callkaro_status"] for r in rows] == ["scheduled"] * 3
    said = r"scheduled by an earlier run on \S+ \S+ IST; not sent again"
    assert all(re.fullmatch(said, r["callkaro_message"]) for r in rows), rows

    code, out, err = run(capsys, "run", "clean.csv", *first, "--output", "contacts.results.csv", "--fresh")
    # Everyone is scheduled again. --sandbox calls nobody, so there is no one to warn about (a
    # real API gets "N people it already called will be called again": see test_rerun.py).
    assert (code, err) == (0, "")
    assert statuses(here / "contacts.results.csv") == {"scheduled": 3}
    assert "scheduled by earlier runs" not in out


def test_dry_run_into_the_output_of_a_real_run_previews_beside_it_and_changes_nothing_of_the_run(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["clean.csv", "--agent-id", "demo-agent", "--default-region", "IN", *TZ, "--sandbox"]
    assert run(capsys, "run", *args)[0] == 0
    kept = {p.name: p.read_bytes() for p in here.iterdir() if p.name.startswith("clean.results")}
    code, out, err = run(capsys, "run", *args, "--dry-run")
    # What the same command would report now: the campaign scheduled every row already.
    assert (code, err) == (0, "")
    assert out.splitlines()[-2:] == [
        "scheduled by earlier runs 3, not sent again",
        "results: clean.results.preview.csv",
    ]
    assert statuses(here / "clean.results.preview.csv") == {"scheduled": 3}
    assert {p.name: p.read_bytes() for p in here.iterdir() if p.name in kept} == kept


def test_validate_after_a_finished_run_says_the_campaign_called_everyone_and_exits_0(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["clean.csv", "--default-region", "IN", *TZ]
    assert run(capsys, "run", *args, "--agent-id", "demo-agent", "--sandbox")[0] == 0
    # The same run again would send nothing: validate says so (not "valid 3"), listing no row as a problem.
    assert run(capsys, "validate", *args, "--sandbox") == (0, "scheduled  3\n", "")


@pytest.mark.parametrize(
    ("output", "said"),
    [
        ("results.txt", "--output results.txt must end in .csv or .xlsx"),
        ("clean.csv", "--output clean.csv is the input file; the loader never overwrites its input"),
    ],
)
def test_validate_refuses_an_output_the_run_would_refuse(
    here: Path, capsys: pytest.CaptureFixture[str], output: str, said: str
) -> None:
    code, out, err = run(capsys, "validate", "clean.csv", "--default-region", "IN", "--output", output)
    assert (code, out, err.splitlines()[0]) == (2, "", f"callkaro-loader: error: {said}")


# --- exit codes and what is printed ---------------------------------------------------------------


def test_sheet_whose_rows_all_get_scheduled_exits_0(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "run", "clean.csv", "--agent-id", "demo-agent", "--sandbox", "--default-region", "IN", *TZ
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "scheduled  3"
    assert re.fullmatch(r"campaign: [0-9a-f]{24}", lines[1])
    assert lines[2:] == ["results: clean.results.csv"]
    assert statuses(here / "clean.results.csv") == {"scheduled": 3}


def test_sheet_with_rows_needing_a_person_exits_1_and_prints_one_line_per_status(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *SANDBOX_RUN, "--default-region", "IN")
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert lines[:3] == ["scheduled  22", "invalid    2", "duplicate  1"]
    assert lines[4] == "results: contacts.results.csv"


def test_quiet_run_prints_nothing_when_nothing_is_wrong(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "run",
        "clean.csv",
        "--agent-id",
        "demo-agent",
        "--sandbox",
        "--default-region",
        "IN",
        *TZ,
        "--quiet",
    )
    assert (code, out, err) == (0, "", "")


def test_quiet_run_with_rows_needing_a_person_says_so_on_stderr_for_cron_to_mail(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Cron mails only what is printed; exit 1 alone would go unseen.
    code, out, err = run(capsys, *SANDBOX_RUN, "--default-region", "IN", "--quiet")
    assert (code, out) == (1, "")
    assert err == (
        "callkaro-loader: 2 rows need a person (invalid 2); read callkaro_message in contacts.results.csv\n"
    )


@pytest.mark.parametrize(
    ("campaign_answer", "line", "hint"),
    [
        pytest.param(
            httpx.Response(401, json={"status": "error", "message": "Invalid API key"}),
            "callkaro-loader: error: the API refused the key (HTTP 401: Invalid API key)",
            "hint: Check CALLKARO_API_KEY (or .env) holds the key from your CallKaro dashboard.",
            id="wrong key",
        ),
        pytest.param(
            httpx.Response(403, json={"status": "error", "message": "Missing X-API-KEY in headers"}),
            "callkaro-loader: error: the API refused the key (HTTP 403: Missing X-API-KEY in headers)",
            "hint: Check CALLKARO_API_KEY (or .env) holds the key from your CallKaro dashboard.",
            id="key not allowed",
        ),
        pytest.param(
            httpx.Response(404, json={"status": "error", "message": "Agent does not exist"}),
            "callkaro-loader: error: the API does not know agent 'a1' (HTTP 404: Agent does not exist)",
            "hint: Check --agent-id against your CallKaro dashboard.",
            id="unknown agent",
        ),
    ],
)
def test_api_refusing_the_run_exits_3_leaving_every_valid_row_pending(
    here: Path,
    api: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    campaign_answer: httpx.Response,
    line: str,
    hint: str,
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    campaign = api.post("/call/campaign").mock(return_value=campaign_answer)
    outbound = api.post("/call/outbound")
    code, out, err = run(capsys, "run", "contacts.csv", "--agent-id", "a1", "--default-region", "IN", *TZ)
    assert code == 3
    assert err.splitlines() == [line, hint]
    assert campaign.call_count == 1 and not outbound.called
    assert statuses(here / "contacts.results.csv") == {"pending": 22, "invalid": 2, "duplicate": 1}
    assert "pending    22" in out.splitlines()


def test_key_refused_mid_run_exits_3_and_keeps_what_was_scheduled(
    here: Path, api: respx.MockRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    api.post("/call/campaign").mock(return_value=httpx.Response(200, json={"batch_id": "batch-1"}))
    outbound = api.post("/call/outbound").mock(
        side_effect=[
            httpx.Response(200, json={"call_id": "first"}),
            httpx.Response(401, json={"status": "error", "message": "Key revoked"}),
        ]
    )
    code, out, err = run(
        capsys, "run", "clean.csv", "--agent-id", "a1", "--default-region", "IN", *TZ, "--concurrency", "1"
    )
    assert code == 3
    assert err.splitlines()[0] == "callkaro-loader: error: the API refused the key (HTTP 401: Key revoked)"
    assert outbound.call_count == 2
    rows = read_results(here / "clean.results.csv")
    assert [(r["callkaro_status"], r["callkaro_call_id"]) for r in rows] == [
        ("scheduled", "first"),
        ("pending", ""),
        ("pending", ""),
    ]


@pytest.mark.parametrize(
    ("change", "line", "hint"),
    [
        pytest.param(
            ["--agent-id", "a2"],
            "callkaro-loader: error: clean.results.csv was started with --agent-id a1, not a2",
            "hint: Resume with the same --agent-id; giving this run its own --output instead starts a new "
            "campaign, which calls again anyone this one has called.",
            id="another agent",
        ),
        pytest.param(
            ["--agent-id", "a1", "--batch-id", "batch-9"],
            "callkaro-loader: error: clean.results.csv was sending into campaign batch-1, not batch-9",
            "hint: Resume without --batch-id (or with the same one); another --output into campaign batch-9 "
            "would call again anyone campaign batch-1 has called.",
            id="another campaign",
        ),
    ],
)
def test_resuming_with_another_agent_or_campaign_is_refused_and_sends_nothing(
    here: Path,
    api: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    change: list[str],
    line: str,
    hint: str,
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    campaign = api.post("/call/campaign").mock(return_value=httpx.Response(200, json={"batch_id": "batch-1"}))
    outbound = api.post("/call/outbound").mock(
        side_effect=[
            httpx.Response(200, json={"call_id": "first"}),
            httpx.Response(401, json={"status": "error", "message": "Key revoked"}),
        ]
    )
    sheet = ["run", "clean.csv", "--default-region", "IN", *TZ, "--concurrency", "1"]
    assert run(capsys, *sheet, "--agent-id", "a1")[0] == 3  # two rows left pending, to resume

    code, out, err = run(capsys, *sheet, *change)
    assert (code, out) == (2, "")
    assert err.splitlines() == [line, hint]
    assert (campaign.call_count, outbound.call_count) == (1, 2)
    assert statuses(here / "clean.results.csv") == {"scheduled": 1, "pending": 2}


def test_batch_id_pasted_with_spaces_is_sent_without_them(
    here: Path, api: respx.MockRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    campaign, outbound = callkaro_answers(api)
    argv = ["run", "clean.csv", "--agent-id", "a1", "--batch-id", " batch-7\n", "--default-region", "IN", *TZ]
    assert run(capsys, *argv)[0] == 0
    assert campaign.call_count == 0
    assert {json.loads(call.request.content)["batch_id"] for call in outbound.calls} == {"batch-7"}


@pytest.mark.parametrize("blank", ["", "  "])
@pytest.mark.parametrize(
    ("flag", "refusal"),
    [
        (
            "--batch-id",
            "--batch-id is blank: give the id of an existing campaign, or leave the option out to create one",
        ),
        ("--campaign-name", "--campaign-name is blank: the API needs a name for the campaign"),
    ],
)
def test_blank_batch_id_or_campaign_name_is_refused_before_anything_is_sent(
    here: Path,
    api: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    blank: str,
    flag: str,
    refusal: str,
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    campaign, outbound = callkaro_answers(api)
    argv = ["run", "clean.csv", "--agent-id", "a1", flag, blank, "--default-region", "IN", *TZ]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.splitlines()[0] == f"callkaro-loader: error: {refusal}"
    assert (campaign.call_count, outbound.call_count) == (0, 0)
    assert not (here / "clean.results.csv.state").exists()


# --- dry run and the key --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sheet", "code", "expected"),
    [
        ("contacts.csv", 1, {"valid": 22, "invalid": 2, "duplicate": 1}),
        ("contacts.xlsx", 1, {"valid": 22, "invalid": 2, "duplicate": 1}),
        ("clean.csv", 0, {"valid": 3}),
    ],
)
def test_dry_run_writes_results_marked_valid_and_sends_nothing_without_needing_a_key(
    here: Path,
    api: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    sheet: str,
    code: int,
    expected: dict[str, int],
) -> None:
    exit_code, out, err = run(
        capsys, "run", sheet, "--agent-id", "demo-agent", "--dry-run", "--default-region", "IN", *TZ
    )
    assert (exit_code, err) == (code, "")
    # The preview is written beside the results file a run would write, never as it.
    results = here / f"{Path(sheet).stem}.results.preview.csv"
    assert statuses(results) == expected
    assert out.splitlines()[-1] == f"results: {results.name}"
    assert "campaign:" not in out
    assert not api.calls
    assert not [p.name for p in here.iterdir() if p.name.endswith((".state", ".lock", "results.csv"))]


def test_results_that_cannot_be_written_after_sending_exit_1_and_the_next_run_writes_them(
    here: Path, api: respx.MockRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import loader.pipeline

    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    _, outbound = callkaro_answers(api)
    written = loader.pipeline.write_results

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loader.pipeline, "write_results", disk_full)
    argv = ("run", "clean.csv", "--agent-id", "a1", "--default-region", "IN", *TZ)
    code, out, err = run(capsys, *argv)
    assert code == 1  # not 2: calls were made
    assert err.splitlines() == [
        "callkaro-loader: error: the results file clean.results.csv could not be written (No space left on "
        "device); every call made is kept in clean.results.csv.state",
        "hint: Make room or fix the folder, then run the same command again: it sends nothing twice and "
        "writes the results file.",
    ]
    assert outbound.call_count == 3 and not (here / "clean.results.csv").exists()

    monkeypatch.setattr(loader.pipeline, "write_results", written)
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert outbound.call_count == 3  # nothing sent twice
    assert statuses(here / "clean.results.csv") == {"scheduled": 3}


def test_a_summary_that_cannot_be_written_after_sending_exits_1_not_2(
    here: Path, api: respx.MockRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import loader.pipeline
    from loader.errors import UsageError

    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    _, outbound = callkaro_answers(api)

    def refused(path: Any, data: Any) -> None:
        raise UsageError(f"--summary-json {path} cannot be written (Permission denied)")

    monkeypatch.setattr(loader.pipeline, "write_json", refused)
    argv = ("run", "clean.csv", "--agent-id", "a1", "--default-region", "IN", *TZ, "--summary-json", "s.json")
    code, out, err = run(capsys, *argv)
    assert code == 1  # 2 would say nothing was sent
    assert err.splitlines() == [
        "callkaro-loader: error: --summary-json s.json cannot be written (Permission denied); the run itself "
        "finished: its results are in clean.results.csv"
    ]
    assert outbound.call_count == 3 and statuses(here / "clean.results.csv") == {"scheduled": 3}


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_results_showing_calls_made_without_their_state_are_refused_rather_than_called_again(
    here: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    argv = ("run", "clean.csv", "--agent-id", "demo-agent", "--sandbox", "--default-region", "IN", *TZ)
    argv += ("--output", f"out{suffix}")
    assert run(capsys, *argv)[0] == 0
    (here / f"out{suffix}.state").unlink()  # deleted, or the results copied elsewhere without it
    before = (here / f"out{suffix}").read_bytes()
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.splitlines() == [
        f"callkaro-loader: error: out{suffix} shows calls already made (3 scheduled or uncertain), but its "
        f"state (out{suffix}.state) is gone: running would call those numbers again",
        "hint: Put the state file back beside the results and run again; a new --output or --fresh would "
        "call those people again.",
    ]
    assert (here / f"out{suffix}").read_bytes() == before and not (here / f"out{suffix}.state").exists()
    assert run(capsys, *argv, "--fresh")[0] == 0  # as asked


def test_a_dry_run_then_the_real_run_to_the_same_output_is_not_refused(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("run", "clean.csv", "--agent-id", "demo-agent", "--sandbox", "--default-region", "IN", *TZ)
    assert run(capsys, *argv, "--dry-run")[0] == 0
    assert run(capsys, *argv)[0] == 0
    assert statuses(here / "clean.results.csv") == {"scheduled": 3}


def test_key_in_a_dotenv_file_is_used_and_never_written_anywhere(
    here: Path, api: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / ".env").write_text(f"# from the dashboard\nCALLKARO_API_KEY={KEY}\n", encoding="utf-8")
    campaign, outbound = callkaro_answers(api)
    code, out, err = run(
        capsys, "run", "clean.csv", "--agent-id", "a1", "--default-region", "IN", *TZ, "--output", "out/r.csv"
    )
    assert (code, err) == (0, "")
    assert {call.request.headers["X-API-KEY"] for call in [*campaign.calls, *outbound.calls]} == {KEY}
    assert outbound.call_count == 3
    assert KEY not in out
    for written in (here / "out").iterdir():
        assert KEY.encode() not in written.read_bytes(), written.name


def test_key_in_the_environment_wins_over_the_dotenv_file(
    here: Path, api: respx.MockRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (here / ".env").write_text("CALLKARO_API_KEY=from-the-file\n", encoding="utf-8")
    monkeypatch.setenv("CALLKARO_API_KEY", "from-the-environment")
    campaign, _ = callkaro_answers(api)
    assert run(capsys, "run", "clean.csv", "--agent-id", "a1", "--default-region", "IN", *TZ)[0] == 0
    assert campaign.calls.last.request.headers["X-API-KEY"] == "from-the-environment"


def test_base_url_comes_from_the_environment_when_not_given(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    monkeypatch.setenv("CALLKARO_BASE_URL", "https://staging.callkaro.test")
    with respx.mock(base_url="https://staging.callkaro.test", using="httpx") as staging:
        callkaro_answers(staging)
        assert run(capsys, "run", "clean.csv", "--agent-id", "a1", "--default-region", "IN", *TZ)[0] == 0
        assert staging.calls.call_count == 4


# --- validate -------------------------------------------------------------------------------------


def test_validate_prints_counts_and_every_problem_and_exits_1(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "validate", "contacts.csv", "--default-region", "IN", *TZ)
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        "valid      22",
        "invalid    2",
        "duplicate  1",
        "  row 14 duplicate: Phone: +919876543210 already appears on row 2",
        "  row 16 invalid: Phone: 12345 is not a valid phone number for IN",
        "  row 17 invalid: min_trigger_time: 21:00 is not before max_trigger_time 09:00; "
        "priority: 150 is outside [-100, 100]",
    ]


def test_validate_writes_a_problem_report(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "validate",
        "contacts.xlsx",
        "--default-region",
        "IN",
        *TZ,
        "--report",
        "problems.csv",
        "--quiet",
    )
    assert (code, out, err) == (1, "", "")
    rows = read_results(here / "problems.csv")
    assert [(r["source_row"], r["column"], r["value"]) for r in rows] == [
        ("16", "Phone", "12345"),
        ("17", "min_trigger_time", "21:00"),
        ("17", "priority", "150"),
    ]


def test_validate_of_a_clean_sheet_exits_0(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", "clean.csv", "--default-region", "IN", *TZ)
    assert (code, out, err) == (0, "valid  3\n", "")


# --- options given twice, and the ledger's options ------------------------------------------------------


def single_valued(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Options that take one value (not flags, not the repeatable ones)."""
    return [
        action
        for action in parser._actions
        if action.option_strings
        and not isinstance(action, argparse._AppendAction | argparse._HelpAction | argparse._VersionAction)
        and (action.nargs is None or isinstance(action, argparse.BooleanOptionalAction))
    ]


def twice(action: argparse.Action) -> list[str]:
    if isinstance(action, argparse.BooleanOptionalAction):
        return action.option_strings[:2]  # --carry-over --no-carry-over: which one was meant?
    value = {"skip_recent": "all", "port": "-1"}.get(action.dest, "1")
    return [action.option_strings[0], value, action.option_strings[0], value]


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (command, action.option_strings[0])
        for command, parser in subcommands().items()
        if command != "template" and command != "status"
        for action in single_valued(parser)
    ],
)
def test_an_option_that_takes_one_value_given_twice_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], here: Path, command: str, option: str
) -> None:
    (action,) = [a for a in single_valued(subcommands()[command]) if a.option_strings[0] == option]
    positional = ["clean.csv"] if command in ("run", "validate") else []
    if command == "sandbox" and option != "--port":
        positional = ["--port", "-1"]  # were the option not refused, no server would start either
    code, out, err = run(capsys, command, *positional, *twice(action))
    names = "/".join(action.option_strings)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"callkaro-loader {command}: error: {names} was given twice; it takes one value: give it once",
        f"hint: see 'callkaro-loader {command} --help'",
    ]


def test_history_given_twice_is_refused_and_neither_ledger_is_made(
    capsys: pytest.CaptureFixture[str], here: Path
) -> None:
    argv = [
        "run",
        "clean.csv",
        "--agent-id",
        "a",
        "--sandbox",
        "--history",
        "a.sqlite",
        "--history",
        "b.sqlite",
    ]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "--history was given twice" in err
    assert not (here / "a.sqlite").exists() and not (here / "b.sqlite").exists()
    assert not (here / "clean.results.csv").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--skip-recent", "-1"], "--skip-recent must be a whole number of days (0 or more) or all, not -1"),
        (["--skip-recent", "week"], "argument --skip-recent: invalid days value: 'week'"),
        (["--history", "h.sqlite", "--no-history"], "--history and --no-history contradict each other"),
    ],
)
def test_the_ledgers_options_refuse_what_cannot_be_meant(
    capsys: pytest.CaptureFixture[str], here: Path, flags: list[str], message: str
) -> None:
    code, _, err = run(capsys, "run", "clean.csv", "--agent-id", "a", "--sandbox", *flags)
    assert code == 2 and err.splitlines()[0].startswith(
        f"callkaro-loader{' run' if 'argument' in message else ''}: error: {message}"
    )
    assert not (here / "clean.results.csv").exists()


def test_skip_recent_beyond_any_date_means_ever_instead_of_a_traceback(
    capsys: pytest.CaptureFixture[str], here: Path
) -> None:
    first = ["run", "clean.csv", "--agent-id", "a", "--sandbox", "--default-region", "IN", *TZ]
    assert run(capsys, *first, "--history", "h.sqlite", "--output", "a.csv")[0] == 0
    code, out, err = run(
        capsys, *first, "--history", "h.sqlite", "--skip-recent", "100000000", "--output", "b.csv"
    )
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "suppressed  3"


def test_a_default_ledger_whose_folder_cannot_be_made_stops_the_run_before_sending(
    capsys: pytest.CaptureFixture[str], here: Path, api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    (here / "state").write_text("a file where the state folder would be\n", encoding="utf-8")
    monkeypatch.setenv("XDG_STATE_HOME", str(here / "state"))
    monkeypatch.setenv("CALLKARO_API_KEY", KEY)
    campaign, outbound = callkaro_answers(api)
    code, out, err = run(capsys, "run", "clean.csv", "--agent-id", "a", "--default-region", "IN", *TZ)
    assert (code, out) == (2, "")
    assert err.startswith(
        f"callkaro-loader: error: the call ledger's folder {here / 'state'}/callkaro-loader "
    )
    assert len(err.splitlines()) == 2 and not campaign.called and not outbound.called
