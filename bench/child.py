"""What the benchmark runs in a child process when the command line alone cannot report it.

``send``: ``loader.load_campaign`` (what ``callkaro-loader run`` calls) against a
sandbox URL; prints the run's counts, durations and client CPU per request as JSON.

``requests-loop``: the baseline: the same bodies the loader would send, posted
one after another with a plain ``requests.Session``; only the loop is timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SANDBOX_KEY = "sandbox-key"
AGENT = "demo-agent"


def send(url: str, path: Path, concurrency: int) -> dict[str, Any]:
    import loader

    with tempfile.TemporaryDirectory() as folder:
        result = loader.load_campaign(
            path,
            agent_id=AGENT,
            api_key=SANDBOX_KEY,
            base_url=url,
            default_region="IN",
            timezone="Asia/Kolkata",
            concurrency=concurrency,
            output=Path(folder) / "out.results.csv",
            # The call ledger is on by default: a ledger of this run's own, so each timed run sends
            # every row (the user's would suppress the rows the run before it just called).
            history=Path(folder) / "ledger.sqlite",
            no_progress=True,
            quiet=True,
        )
    return {"counts": result.counts, "durations": result.durations}


def requests_loop(url: str, path: Path, rows: int) -> dict[str, Any]:
    import datetime as dt

    import requests

    from loader.options import InputOptions
    from loader.payload import build_bodies
    from loader.pipeline import _read_and_validate

    # Untimed: the bodies, exactly as the loader builds them, and a campaign to send them into.
    options = InputOptions(default_region="IN", timezone="Asia/Kolkata")
    sheet, _, validation, _ = _read_and_validate(path, options, dt.datetime.now(dt.UTC))
    session = requests.Session()
    session.headers.update({"X-API-KEY": SANDBOX_KEY, "Content-Type": "application/json"})
    answer = session.post(f"{url}/call/campaign", json={"name": "baseline", "agent_id": AGENT}, timeout=30)
    batch_id = answer.json()["batch_id"]
    bodies = list(build_bodies(sheet, validation, agent_id=AGENT, batch_id=batch_id).values())[:rows]
    payloads = [json.dumps(body, ensure_ascii=False).encode("utf-8") for body in bodies]

    target = f"{url}/call/outbound"
    failures = 0
    cpu = time.process_time()
    started = time.perf_counter()
    for payload in payloads:
        response = session.post(target, data=payload, timeout=30)
        failures += response.status_code != 200
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    return {
        "rows": len(payloads),
        "failures": failures,
        "loop_seconds": elapsed,
        "rows_per_second": len(payloads) / elapsed,
        "cpu_ms_per_request": 1000 * cpu / len(payloads),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("send")
    one.add_argument("url")
    one.add_argument("path", type=Path)
    one.add_argument("--concurrency", type=int, default=32)
    loop = sub.add_parser("requests-loop")
    loop.add_argument("url")
    loop.add_argument("path", type=Path)
    loop.add_argument("--rows", type=int, required=True)
    args = parser.parse_args()
    if args.what == "send":
        out = send(args.url, args.path, args.concurrency)
    else:
        out = requests_loop(args.url, args.path, args.rows)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
