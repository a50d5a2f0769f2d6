"""When the API misbehaves: nobody is called twice, nothing is sent late, and an outage says so.

Each test runs the real command (or ``load_campaign``) against the sandbox on a real loopback
port and counts what the sandbox recorded (``GET /_sandbox/calls``), not only the results file.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import socket
import subprocess
import zoneinfo
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sandbox_process import CLI, running_sandbox

KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")
COMMON = ["--agent-id", "demo-agent", "--default-region", "IN", "--timezone", "Asia/Kolkata", "--no-progress"]


def write_leads(path: Path, count: int, **columns: str) -> list[str]:
    """A CSV of ``count`` leads (plus ``columns``, the same value on every row); their E.164 numbers."""
    numbers = [f"+9198{n:08d}" for n in range(1, count + 1)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "phone", *columns])
        for n, number in enumerate(numbers, start=1):
            writer.writerow([f"Lead {n}", number, *columns.values()])
    return numbers


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def recorded(url: str) -> Counter[str]:
    calls = httpx.get(f"{url}/_sandbox/calls", timeout=10).json()
    return Counter(call["body"]["to_number"] for call in calls)


def stats(url: str) -> dict[str, int]:
    return dict(httpx.get(f"{url}/_sandbox/stats", timeout=10).json())


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CALLKARO_API_KEY": "sandbox-key",
        # Never the real user's ledger.
        "CALLKARO_HISTORY": str(tmp_path / "ledger.sqlite"),
    }
    done = subprocess.run([CLI, "run", *args], env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- (7) a gateway's 502/504 after the call was scheduled ------------------------------------------


def test_a_gateways_502_or_504_after_scheduling_leaves_the_row_uncertain_and_the_person_called_once(
    tmp_path: Path,
) -> None:
    leads = tmp_path / "leads.csv"
    numbers = write_leads(leads, 10)
    output = tmp_path / "leads.results.csv"
    with running_sandbox("--gateway-error-rate", "0.4", "--seed", "3") as sandbox:
        command = [str(leads), *COMMON, "--base-url", sandbox.url, "--output", str(output)]
        first = run(command, tmp_path)
        gateway_errors = stats(sandbox.url).get("gateway_error", 0)
        again = run(command, tmp_path)
        calls = recorded(sandbox.url)

    assert gateway_errors >= 2, "the seed should give the run some gateway errors"
    # Every number reached the API exactly once: a 502/504 was never followed by a second call.
    assert calls == Counter(numbers)
    assert (first.returncode, again.returncode) == (1, 1), first.stderr + again.stderr
    results = read_results(output)
    uncertain = [r for r in results if r["callkaro_status"] == "uncertain"]
    assert len(uncertain) == gateway_errors
    assert {r["callkaro_status"] for r in results} == {"scheduled", "uncertain"}
    for row in uncertain:
        assert "a gateway's answer, not the API's own error" in row["callkaro_message"], row
        assert "not resent" in row["callkaro_message"], row


def test_a_gateway_failing_every_request_stops_the_run_instead_of_making_everyone_uncertain(
    tmp_path: Path,
) -> None:
    leads = tmp_path / "leads.csv"
    numbers = write_leads(leads, 12)
    output = tmp_path / "leads.results.csv"
    with running_sandbox("--gateway-error-rate", "1") as sandbox:
        command = [
            str(leads),
            *COMMON,
            "--base-url",
            sandbox.url,
            "--output",
            str(output),
            "--concurrency",
            "1",
        ]
        done = run([*command, "--quiet"], tmp_path)
        calls = recorded(sandbox.url)

    assert done.returncode == 4, done.stderr
    assert calls == Counter(numbers[:5])
    statuses = [r["callkaro_status"] for r in read_results(output)]
    assert statuses == ["uncertain"] * 5 + ["pending"] * 7
    # cron's mail says both: five rows need a person now, and the rest wait for the API.
    lines = done.stderr.splitlines()
    assert lines[0].startswith("callkaro-loader: 5 rows need a person (uncertain 5)")
    assert lines[1].startswith(
        "callkaro-loader: error: the API was unavailable (5 requests in a row answered by a gateway"
    )
    assert lines[1].endswith("7 rows left pending, nothing is lost: run the same command again later")


# --- (12) an outage, then the API back -------------------------------------------------------------


@pytest.mark.parametrize("outage", ["campaign answered 500", "closed port"])
def test_an_api_outage_exits_4_leaving_rows_pending_and_the_same_command_later_calls_everyone_once(
    tmp_path: Path, outage: str
) -> None:
    leads = tmp_path / "leads.csv"
    numbers = write_leads(leads, 5)
    output = tmp_path / "leads.results.csv"
    summary = tmp_path / "summary.json"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(leads), *COMMON, "--base-url", url, "--output", str(output), "--retry-for", "1s",
        "--summary-json", str(summary), "--quiet",
    ]  # fmt: skip

    if outage == "closed port":
        down = run(command, tmp_path)
        calls_while_down: Counter[str] = Counter()
    else:
        with running_sandbox("--port", str(port), "--error-rate", "1") as sandbox:
            down = run(command, tmp_path)
            calls_while_down = recorded(sandbox.url)
            assert stats(sandbox.url)["answered_500"] >= 2, "the campaign was asked for more than once"

    assert down.returncode == 4, down.stdout + down.stderr
    assert calls_while_down == Counter()
    # The quiet run's one line (what cron mails) says the API was unavailable, not "rows need a person".
    assert "the API was unavailable" in down.stderr
    assert "need a person" not in down.stderr
    assert "run the same command again later" in down.stderr
    results = read_results(output)
    assert [r["callkaro_status"] for r in results] == ["pending"] * 5
    for row in results:
        assert row["callkaro_message"].startswith("not sent: the API was unavailable ("), row
        assert row["callkaro_message"].endswith("run the same command again later"), row
    assert '"exit_code": 4' in summary.read_text(encoding="utf-8")
    status = subprocess.run([CLI, "status", str(output)], capture_output=True, text=True, timeout=60)
    assert "run: stopped at " in status.stdout and ": the API was unavailable (" in status.stdout, (
        status.stdout
    )

    with running_sandbox("--port", str(port)) as sandbox:
        back = run(command, tmp_path)
        calls = recorded(sandbox.url)
    assert back.returncode == 0, back.stdout + back.stderr
    assert calls == Counter(numbers)
    assert [r["callkaro_status"] for r in read_results(output)] == ["scheduled"] * 5


# --- (8) times checked when the request leaves ------------------------------------------------------


class SteppingClock:
    """A clock that moves one second each time a row's outcome is recorded: a slow run, told
    exactly how slow, without waiting."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    # loader.send.Events
    def outcome(self, source_row: int, status: str, **_: Any) -> None:
        self.now += dt.timedelta(seconds=1)

    def retry(self, source_row: int, **_: Any) -> None:
        pass


def send_slowly(
    tmp_path: Path, rows: int, *, after: dt.timedelta, **options: Any
) -> tuple[Any, list[str], str, Counter[str]]:
    """Leads whose ``schedule_at`` is ``after`` the run's start (written to the second), sent one at a
    time to the sandbox process while a ``SteppingClock`` moves a second per answer: the result, the
    numbers, the ``schedule_at`` written, and the calls the sandbox recorded."""
    from loader import load_campaign

    start = dt.datetime(2030, 1, 1, 10, 0, 0, tzinfo=KOLKATA)
    leads = tmp_path / "leads.csv"
    at = (start + after).strftime("%Y-%m-%d %H:%M:%S")
    numbers = write_leads(leads, rows, schedule_at=at)
    clock = SteppingClock(start)
    with running_sandbox() as sandbox:
        result = load_campaign(
            leads,
            agent_id="demo-agent",
            default_region="IN",
            timezone="Asia/Kolkata",
            base_url=sandbox.url,
            api_key="sandbox-key",
            concurrency=1,
            no_progress=True,
            clock=clock,
            events=clock,
            **options,
        )
        calls = recorded(sandbox.url)
    return result, numbers, at, calls


def test_a_slow_run_never_sends_a_schedule_at_that_has_passed(tmp_path: Path) -> None:
    # 10:00:03 (3.5 s after the start, written to the second); each answer moves the clock 1 s.
    result, numbers, at, calls = send_slowly(
        tmp_path, 8, after=dt.timedelta(seconds=3, milliseconds=500), rate_limit=50.0
    )

    # Rows 1-4 leave at 10:00:00..10:00:03, in time; the rest would have arrived late.
    assert calls == Counter(numbers[:4])
    assert result.counts == {"scheduled": 4, "invalid": 4}
    assert result.exit_code == 1
    expired = result.outcomes[result.outcomes["callkaro_status"] == "invalid"]
    for message in expired["callkaro_message"]:
        assert message == (
            f"schedule_at {at.replace(' ', 'T')} passed during the run, before this row could be sent; "
            "not sent (give it a later time and run again)"
        )


def test_with_allow_past_a_time_that_passes_during_the_run_is_still_sent(tmp_path: Path) -> None:
    result, numbers, _, calls = send_slowly(
        tmp_path, 4, after=dt.timedelta(seconds=1, milliseconds=500), allow_past=True
    )
    assert calls == Counter(numbers)
    assert result.counts == {"scheduled": 4}


# --- a gateway's answer to the campaign --------------------------------------------------------------


def gateway_then_api(campaign_answers: list[int]) -> tuple[httpx.MockTransport, Counter[str]]:
    """An API behind a gateway: the campaign requests get ``campaign_answers`` (a status each; 200
    creates it), then the API's own answers; every call is accepted."""
    seen: Counter[str] = Counter()
    answers = iter(campaign_answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] += 1
        if request.url.path == "/call/campaign":
            status = next(answers, 200)
            if status != 200:
                return httpx.Response(
                    status, text="<html>Gateway Time-out</html>", headers={"Content-Type": "text/html"}
                )
            return httpx.Response(200, json={"status": "success", "batch_id": f"b{seen['/call/campaign']}"})
        return httpx.Response(200, json={"status": "success", "call_id": f"c{seen['/call/outbound']}"})

    return httpx.MockTransport(handle), seen


def test_a_gateways_answer_to_the_campaign_is_retried_as_it_calls_nobody(tmp_path: Path) -> None:
    from loader import load_campaign
    from loader.send import RetryPolicy

    leads = tmp_path / "leads.csv"
    write_leads(leads, 3)
    transport, seen = gateway_then_api([504, 502])
    result = load_campaign(
        leads, agent_id="demo-agent", default_region="IN", api_key="k", base_url="https://api.callkaro.ai",
        transport=transport, retry=RetryPolicy(base_delay=0.001, max_delay=0.002), no_progress=True,
    )  # fmt: skip
    assert seen == {"/call/campaign": 3, "/call/outbound": 3}
    assert (result.counts, result.batch_id, result.exit_code) == ({"scheduled": 3}, "b3", 0)


def test_a_campaign_the_gateway_keeps_failing_is_an_outage(tmp_path: Path) -> None:
    from loader import load_campaign
    from loader.send import RetryPolicy

    leads = tmp_path / "leads.csv"
    write_leads(leads, 3)
    transport, seen = gateway_then_api([502] * 10)
    result = load_campaign(
        leads, agent_id="demo-agent", default_region="IN", api_key="k", base_url="https://api.callkaro.ai",
        transport=transport, retry=RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002),
        no_progress=True,
    )  # fmt: skip
    assert seen == {"/call/campaign": 3}
    assert (result.counts, result.exit_code) == ({"pending": 3}, 4)
    assert result.unavailable is not None
    assert str(result.unavailable).startswith(
        "the API was unavailable (the campaign could not be created: the API answered HTTP 502"
    )
    assert str(result.unavailable).endswith(
        "3 rows left pending, nothing is lost: run the same command again later"
    )
    assert result.summary()["unavailable"] == str(result.unavailable)
