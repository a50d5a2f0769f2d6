"""Told to slow down, the loader slows down: fewer requests in flight after 429s, and a rate cap."""

from __future__ import annotations

import asyncio
import json
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from loader import sandbox as sandbox_module
from loader.client import CallKaroClient
from loader.pacing import Pacer
from loader.sandbox import Faults, Sandbox, SandboxTransport
from loader.secrets import ApiKey
from loader.send import RetryPolicy, send_calls
from loader.state import RunState

pytestmark = pytest.mark.anyio
BASE = "https://api.callkaro.ai"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[RunState]:
    with RunState(tmp_path / "leads.results.csv") as run_state:
        yield run_state


def bodies(rows: range, batch_id: str = "b1") -> dict[int, dict[str, Any]]:
    return {
        r: {"to_number": f"+9198765{r:05d}", "agent_id": "demo-agent", "batch_id": batch_id} for r in rows
    }


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


async def test_each_429_halves_the_requests_in_flight_and_successes_grow_them_back() -> None:
    pacer = Pacer(8)
    await pacer.slow_down()
    assert pacer.limit == 4
    await pacer.slow_down()
    await pacer.slow_down()
    await pacer.slow_down()
    assert pacer.limit == 1, "never below one request in flight"
    for _ in range(1):
        await pacer.succeeded()
    assert pacer.limit == 2, "after a streak as long as the limit, one more"
    for _ in range(2):
        await pacer.succeeded()
    assert pacer.limit == 3
    for _ in range(100):
        await pacer.succeeded()
    assert pacer.limit == 8, "never above the --concurrency ceiling"
    assert pacer.slowdowns == 4


def test_pacer_refuses_settings_that_cannot_work() -> None:
    with pytest.raises(ValueError):
        Pacer(0)
    with pytest.raises(ValueError):
        Pacer(4, rate_limit=0)


async def test_after_repeated_429s_fewer_requests_are_in_flight(state: RunState) -> None:
    in_flight = 0
    in_flight_at_success: list[int] = []
    answered_429 = 0

    async def server(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, answered_429
        in_flight += 1
        try:
            await asyncio.sleep(0.002)
            if answered_429 < 8:
                answered_429 += 1
                return httpx.Response(429, json={"status": "error", "message": "Too many requests"})
            in_flight_at_success.append(in_flight)
            row = int(json.loads(request.content)["to_number"][-5:])
            return httpx.Response(200, json={"status": "success", "call_id": f"c{row}"})
        finally:
            in_flight -= 1

    state.add_pending(range(2, 42))
    with respx.mock(base_url=BASE, using="httpx") as api:
        api.post("/call/outbound").mock(side_effect=server)
        async with CallKaroClient(api_key=ApiKey("k"), base_url=BASE, max_connections=8) as client:
            report = await send_calls(
                client,
                bodies(range(2, 42)),
                state,
                concurrency=8,
                retry=RetryPolicy(attempts=10, base_delay=0.001, max_delay=0.001),
                sleep=no_wait,
            )
    assert report.statuses == {"scheduled": 40}
    assert report.slowdowns == 8
    # Right after the 429s it sends one at a time, then grows back towards 8 (AIMD).
    assert in_flight_at_success[0] == 1, in_flight_at_success
    assert max(in_flight_at_success[:6]) <= 3, in_flight_at_success
    assert max(in_flight_at_success) <= 8


async def test_a_rate_limit_below_the_apis_own_means_it_never_answers_429(state: RunState) -> None:
    sandbox = Sandbox(faults=Faults(rate_limit=20))
    batch = sandbox.add_campaign("b" * 24, name="pacing", agent_id="demo-agent")
    del batch
    rows = range(2, 32)
    state.add_pending(rows)
    async with CallKaroClient(
        api_key=ApiKey("sandbox-key"), base_url="http://127.0.0.1", transport=SandboxTransport(sandbox)
    ) as client:
        report = await send_calls(
            client, bodies(rows, "b" * 24), state, concurrency=8, rate_limit=15, sleep=no_wait
        )
    assert report.statuses == {"scheduled": 30}
    assert sandbox.stats["answered_429"] == 0
    assert len(sandbox.calls) == 30


async def test_without_a_rate_limit_the_same_burst_meets_429s_and_still_gets_through(
    state: RunState, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = Sandbox(faults=Faults(rate_limit=20))
    # The sandbox's clock stands still until its first 429, then jumps on: the burst meets the
    # limit however slowly this machine sends it, and the retries get through.
    monkeypatch.setattr(
        sandbox_module,
        "time",
        types.SimpleNamespace(
            monotonic=lambda: 0.0 if not sandbox.stats["answered_429"] else 10.0 + time.monotonic()
        ),
    )
    sandbox.add_campaign("b" * 24, name="pacing", agent_id="demo-agent")
    rows = range(2, 32)
    state.add_pending(rows)
    async with CallKaroClient(
        api_key=ApiKey("sandbox-key"), base_url="http://127.0.0.1", transport=SandboxTransport(sandbox)
    ) as client:
        report = await send_calls(
            client,
            bodies(rows, "b" * 24),
            state,
            concurrency=8,
            retry=RetryPolicy(attempts=20, base_delay=0.05, max_delay=0.2),
        )
    assert report.statuses == {"scheduled": 30}
    assert sandbox.stats["answered_429"] > 0
    assert report.slowdowns == sandbox.stats["answered_429"]
    assert len(sandbox.calls) == 30
