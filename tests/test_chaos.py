"""Never dial twice, never lose a row: a run killed three times against a faulty API.

The sandbox answers 20% of requests with 500, drops 2% of calls after
recording them and answers 2% with a gateway's 502/504 after recording them
(the ambiguous cases), rate-limits at 50 requests a second and adds
latency. The loader is killed with SIGKILL at three random moments and
resumed until it finishes; after the first kill the sheet is edited (every
row moved, cities changed), as a rep fixing it would. Afterwards the
sandbox's own record must agree with the results file: nobody called twice
except rows reported ``uncertain`` and resent on purpose with
``--retry-uncertain``, every ``scheduled`` row recorded exactly once under
its call id, no row missing, one campaign.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from sandbox_process import running_sandbox

ROWS = 2000
SEED = 20261126


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _write_leads(path: Path, *, shuffled: bool = False) -> None:
    order = random.sample(range(ROWS), ROWS) if shuffled else range(ROWS)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "phone", "city", "priority"])
        for i in order:
            writer.writerow([f"Lead {i}", f"+91 98{i:08d}", random.choice(["Pune", "Delhi"]), i % 7])


def _read_results(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def test_killed_three_times_against_a_faulty_api_nobody_is_called_twice(tmp_path: Path) -> None:
    random.seed(SEED)
    leads = tmp_path / "leads.csv"
    _write_leads(leads)
    output = tmp_path / "leads.results.csv"
    with running_sandbox(
        "--error-rate", "0.2", "--drop-rate", "0.02", "--gateway-error-rate", "0.02", "--rate-limit", "50",
        "--latency-ms", "20", "--seed", str(SEED),
    ) as sandbox:  # fmt: skip
        url = sandbox.url
        env = {**os.environ, "CALLKARO_API_KEY": "sandbox-key"}
        command = [
            sys.executable, "-m", "loader", "run", str(leads), "--agent-id", "demo-agent",
            "--default-region", "IN", "--timezone", "Asia/Kolkata", "--base-url", url,
            "--output", str(output), "--concurrency", "16", "--no-progress",
        ]  # fmt: skip
        kills = []
        for attempt, more in enumerate(random.randint(100, 400) for _ in range(3)):
            # Killed once the sandbox has received `more` requests from this run: mid-send, not by
            # the clock (which a loaded machine may reach before the run starts sending, or after).
            start = _get(f"{url}/_sandbox/stats").get("requests", 0)
            run = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            while (
                seen := _get(f"{url}/_sandbox/stats").get("requests", 0) - start
            ) < more and run.poll() is None:
                time.sleep(0.02)
            if run.poll() is None:
                run.send_signal(signal.SIGKILL)
            run.communicate()
            kills.append((run.returncode, seen, len(_get(f"{url}/_sandbox/calls"))))
            if attempt == 0:
                _write_leads(leads, shuffled=True)  # the same people, every row somewhere else
        # Each kill landed (the run was still going) while calls were being sent: its requests had
        # reached the sandbox, and rows were still left to call.
        assert [code for code, _, _ in kills] == [-signal.SIGKILL] * 3, kills
        assert all(seen >= 100 and recorded < ROWS for _, seen, recorded in kills), kills
        codes = []
        for _ in range(8):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
            assert "Traceback" not in done.stderr, done.stderr
            codes.append(done.returncode)
            statuses = Counter(r["callkaro_status"] for r in _read_results(output))
            if not statuses.keys() & {"pending", "failed"}:
                break
        assert codes[-1] in (0, 1), done.stderr
        before_retry = _read_results(output)
        uncertain_before = {r["phone"] for r in before_retry if r["callkaro_status"] == "uncertain"}

        retried = subprocess.run(
            [*command, "--retry-uncertain"], env=env, capture_output=True, text=True, timeout=240
        )
        assert "Traceback" not in retried.stderr, retried.stderr
        results = _read_results(output)
        calls = _get(f"{url}/_sandbox/calls")
        campaigns = _get(f"{url}/_sandbox/campaigns")
        stats = _get(f"{url}/_sandbox/stats")

    # Every input row is in the results file, once, in order.
    assert [r["source_row"] for r in results] == [str(n) for n in range(2, ROWS + 2)]
    assert {r["callkaro_status"] for r in results} <= {"scheduled", "uncertain", "failed"}

    # The campaign was created once, and every call went into it.
    assert len(campaigns) == 1
    assert {c["batch_id"] for c in calls} == {campaigns[0]["batch_id"]}

    recorded = Counter(c["body"]["to_number"] for c in calls)
    e164 = {r["phone"]: "+91" + r["phone"].replace(" ", "")[3:] for r in results}
    twice = {number for number, count in recorded.items() if count > 1}
    assert twice <= {e164[p] for p in uncertain_before}, "a number was called twice without being uncertain"

    call_ids = {c["call_id"]: c["body"]["to_number"] for c in calls}
    for row in results:
        if row["callkaro_status"] == "scheduled":
            number = e164[row["phone"]]
            assert call_ids.get(row["callkaro_call_id"]) == number, row
            if row["phone"] not in uncertain_before:
                assert recorded[number] == 1, row

    print(
        f"\nchaos: kills (exit code, requests of that run, calls recorded) {kills}, "
        f"{len(calls)} calls recorded for {ROWS} rows, "
        f"{len(uncertain_before)} uncertain before --retry-uncertain, {len(twice)} numbers recorded twice, "
        f"run exit codes {codes}; sandbox saw {stats}"
    )
