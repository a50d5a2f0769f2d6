"""Sending: each row is committed as ``sending`` before its request, retried only when that is safe,
and a refusal of the run stops new requests without losing those in flight."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from loader.client import CallKaroClient
from loader.errors import AuthError, NotFoundError, StateError
from loader.secrets import ApiKey
from loader.send import GATEWAY_STREAK, RetryPolicy, SendReport, send_calls
from loader.state import RowState, RunState

pytestmark = pytest.mark.anyio

BASE = "https://api.callkaro.ai"
FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def number(row: int) -> str:
    return f"+9198765{row:05d}"


def bodies(rows: range) -> dict[int, dict[str, Any]]:
    return {row: {"to_number": number(row), "agent_id": "demo-agent", "batch_id": "b1"} for row in rows}


def row_of(request: httpx.Request) -> int:
    return int(json.loads(request.content)["to_number"][-5:])


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"status": "success", "call_id": f"call-{row_of(request)}"})


def error(status: int, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"status": "error", "message": message}, headers=headers)


def status_on_disk(state: RunState, row: int) -> str:
    """The row's status as another process would read it: only what is committed."""
    with sqlite3.connect(state.path) as other:
        (status,) = other.execute("SELECT status FROM rows WHERE source_row = ?", (row,)).fetchone()
    return str(status)


class Delays:
    """An injected sleep that returns at once and remembers what it was asked to wait."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


class Events:
    def __init__(self) -> None:
        self.outcomes: list[tuple[int, str, int]] = []
        self.retries: list[tuple[int, int, float, str]] = []

    def outcome(
        self, source_row: int, status: str, *, call_id: str | None, message: str | None, attempts: int
    ) -> None:
        self.outcomes.append((source_row, status, attempts))

    def retry(self, source_row: int, *, attempt: int, delay: float, reason: str) -> None:
        self.retries.append((source_row, attempt, delay, reason))


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False, using="httpx") as router:
        yield router


@pytest.fixture
def state(tmp_path: Path) -> Iterator[RunState]:
    with RunState(tmp_path / "leads.results.csv") as run_state:
        yield run_state


@pytest.fixture
async def client() -> AsyncIterator[CallKaroClient]:
    async with CallKaroClient(api_key=ApiKey("test-key"), base_url=BASE) as api_client:
        yield api_client


async def send(
    client: CallKaroClient, state: RunState, rows: range, **kwargs: Any
) -> tuple[SendReport, dict[int, RowState]]:
    state.add_pending(rows)
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("sleep", Delays())
    report = await send_calls(client, bodies(rows), state, **kwargs)
    return report, state.rows()


def requested_rows(route: respx.Route) -> list[int]:
    return [row_of(call.request) for call in route.calls]


# --- sending before the request, outcome after ----------------------------------------------------


async def test_row_is_committed_as_sending_before_its_request_leaves_and_scheduled_after(
    api: respx.MockRouter, client: CallKaroClient, state: RunState
) -> None:
    seen_while_in_flight: dict[int, str] = {}

    async def server(request: httpx.Request) -> httpx.Response:
        row = row_of(request)
        seen_while_in_flight[row] = status_on_disk(state, row)
        return ok(request)

    api.post("/call/outbound").mock(side_effect=server)
    events = Events()
    report, rows = await send(client, state, range(2, 7), events=events)

    assert seen_while_in_flight == {row: "sending" for row in range(2, 7)}
    assert {row: (r.status, r.call_id, r.attempts) for row, r in rows.items()} == {
        row: ("scheduled", f"call-{row}", 1) for row in range(2, 7)
    }
    assert all(status_on_disk(state, row) == "scheduled" for row in range(2, 7))
    assert report.statuses == {"scheduled": 5}
    assert (report.sent, report.retries, report.refused, report.stopped) == (5, 0, None, False)
    assert sorted(events.outcomes) == [(row, "scheduled", 1) for row in range(2, 7)]


async def test_bodies_are_sent_exactly_as_built(
    api: respx.MockRouter, client: CallKaroClient, state: RunState
) -> None:
    route = api.post("/call/outbound").mock(side_effect=ok)
    await send(client, state, range(2, 4))
    sent = sorted((json.loads(call.request.content) for call in route.calls), key=lambda b: b["to_number"])
    assert sent == list(bodies(range(2, 4)).values())


# --- retries --------------------------------------------------------------------------------------


async def test_server_that_says_try_later_is_retried_honouring_retry_after(
    api: respx.MockRouter, client: CallKaroClient, state: RunState
) -> None:
    delays = Delays()
    statuses_while_waiting: list[str] = []

    async def sleep(seconds: float) -> None:
        statuses_while_waiting.append(status_on_disk(state, 2))
        await delays(seconds)

    route = api.post("/call/outbound").mock(
        side_effect=[
            error(500, "Server error"),
            error(429, "Too many requests", **{"Retry-After": "7"}),
            ok,
        ]
    )
    events = Events()
    report, rows = await send(
        client, state, range(2, 3), sleep=sleep, events=events, retry=RetryPolicy(attempts=5, max_delay=0.5)
    )

    assert route.call_count == 3
    assert rows[2].status == "scheduled" and rows[2].call_id == "call-2" and rows[2].attempts == 3
    # The first wait is the jittered back-off; the second is at least what the server asked for.
    assert 0 <= delays.asked[0] <= 0.5
    assert delays.asked[1] >= 7
    # While waiting, the row is known not to be scheduled: pending, not sending.
    assert statuses_while_waiting == ["pending", "pending"]
    assert (report.sent, report.retries) == (3, 2)
    assert [(row, attempt, reason) for row, attempt, _, reason in events.retries] == [
        (2, 1, "HTTP 500: Server error"),
        (2, 2, "HTTP 429: Too many requests"),
    ]


@pytest.mark.parametrize(
    ("header", "least"), [("7", 7.0), ("59", 59.0), ("3600", 60.0)], ids=["7s", "59s", "an hour, capped"]
)
async def test_retry_after_is_a_minimum_for_the_back_off(
    api: respx.MockRouter, client: CallKaroClient, state: RunState, header: str, least: float
) -> None:
    delays = Delays()
    api.post("/call/outbound").mock(side_effect=[error(503, "busy", **{"Retry-After": header}), ok])
    await send(client, state, range(2, 3), sleep=delays)
    assert len(delays.asked) == 1
    assert least <= delays.asked[0] <= max(least, FAST.max_delay)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param(error(429, "Too many requests"), "HTTP 429: Too many requests", id="429"),
        pytest.param(error(500, "Server error"), "HTTP 500: Server error", id="500"),
        pytest.param(error(503, "Unavailable"), "HTTP 503: Unavailable", id="503"),
        pytest.param(httpx.Response(503), "HTTP 503", id="503 without a body"),
        pytest.param(
            httpx.ConnectError("refused"), "could not reach the API (ConnectError: refused)", id="refused"
        ),
        pytest.param(
            httpx.ConnectTimeout("slow"),
            "could not reach the API (ConnectTimeout: slow)",
            id="connect timeout",
        ),
    ],
)
@pytest.mark.parametrize("attempts", [1, 3, 5])
async def test_safe_to_retry_failure_is_tried_the_policys_attempts_then_left_pending_as_an_outage(
    api: respx.MockRouter,
    client: CallKaroClient,
    state: RunState,
    answer: httpx.Response | Exception,
    message: str,
    attempts: int,
) -> None:
    effect = answer if isinstance(answer, Exception) else (lambda request: answer)
    route = api.post("/call/outbound").mock(side_effect=effect)
    delays = Delays()
    report, rows = await send(
        client, state, range(2, 3), sleep=delays, retry=RetryPolicy(attempts=attempts, max_delay=0.01)
    )
    assert route.call_count == attempts
    assert len(delays.asked) == attempts - 1
    # Nothing from the API itself all the while: it is down, and the row simply was not sent.
    assert report.unavailable == message
    assert (rows[2].status, rows[2].message) == (
        "pending",
        f"the API was unavailable ({message}); run the same command again later",
    )
    assert rows[2].attempts == attempts
    assert report.stopped is False


async def test_a_row_that_keeps_failing_while_the_api_answers_others_is_failed(
    api: respx.MockRouter, client: CallKaroClient, state: RunState
) -> None:
    api.post("/call/outbound").mock(
        side_effect=lambda request: error(503, "Unavailable") if row_of(request) == 2 else ok(request)
    )
    report, rows = await send(client, state, range(2, 8), concurrency=2)
    assert (rows[2].status, rows[2].message) == ("failed", "HTTP 503: Unavailable (gave up after 3 attempts)")
    assert {rows[r].status for r in range(3, 8)} == {"scheduled"}
    assert report.unavailable is None


async def test_an_outage_stops_sending_and_leaves_every_row_not_sent_pending_saying_why(
    api: respx.MockRouter, client: CallKaroClient, state: RunState
) -> None:
    route = api.post("/call/outbound").mock(return_value=error(500, "Server error"))
    report, rows = await send(client, state, range(2, 42), concurrency=4)
    message = "the API was unavailable (HTTP 500: Server error); run the same command again later"
    assert {(row.status, row.message) for row in rows.values()} == {("pending", message)}
    # The first rows found the outage; the others were never sent.
    assert route.call_count <= 4 * FAST.attempts
    assert report.unavailable == "HTTP 500: Server error"


async def test_a_gateway_answering_every_request_stops_the_run_before_everyone_is_uncertain(
    api: respx.MockRouter, client: CallKaroClient, state: RunState
) -> None:
    route = api.post("/call/outbound").mock(
        return_value=httpx.Response(
            502, text="<html>Bad Gateway</html>", headers={"Content-Type": "text/html"}
        )
    )
    report, rows = await send(client, state, range(2, 42), concurrency=1)
    # Each answered request may have scheduled its call, so it is uncertain; after five in a row
    # with no word from the API itself, the rest are not sent into the outage.
    assert route.call_count == GATEWAY_STREAK
    assert [r for r, row in rows.items() if row.status == "uncertain"] == list(range(2, 2 + GATEWAY_STREAK))
    assert {rows[r].status for r in range(2 + GATEWAY_STREAK, 42)} == {"pending"}
    assert report.unavailable == (
        f"{GATEWAY_STREAK} requests in a row answered by a gateway, not the API: "
        "the API answered HTTP 502 (a gateway's answer, not the API's own error)"
    )


async def test_a_gateway_error_now_and_then_does_not_stop_the_run(
    api: respx.MockRouter, client: CallKaroClient, state: RunState
) -> None:
    gateway = httpx.Response(504, text="<html>Gateway Time-out</html>", headers={"Content-Type": "text/html"})
    api.post("/call/outbound").mock(
        side_effect=lambda request: gateway if row_of(request) % 3 == 0 else ok(request)
    )
    report, rows = await send(client, state, range(2, 42), concurrency=1)
    assert report.unavailable is None
    assert {row.status for row in rows.values()} == {"scheduled", "uncertain"}


async def test_retry_for_keeps_retrying_past_the_usual_attempts(
    api: respx.MockRouter, client: CallKaroClient, state: RunState
) -> None:
    answers = iter([error(503, "Unavailable")] * 12)
    route = api.post("/call/outbound").mock(side_effect=lambda request: next(answers, ok(request)))
    delays = Delays()
    report, rows = await send(client, state, range(2, 3), sleep=delays, retry=RetryPolicy(retry_for=3600))
    assert rows[2].status == "scheduled"
    assert route.call_count == 13
    assert len(delays.asked) == 12


async def test_retry_for_zero_tries_once(
    api: respx.MockRouter, client: CallKaroClient, state: RunState
) -> None:
    route = api.post("/call/outbound").mock(return_value=error(503, "Unavailable"))
    report, rows = await send(client, state, range(2, 3), retry=RetryPolicy(retry_for=0))
    assert route.call_count == 1
    assert rows[2].status == "pending"


# --- sent but unanswered --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param(
            httpx.ReadTimeout("timed out"),
            "no answer from the API (ReadTimeout: timed out)",
            id="read timeout",
        ),
        pytest.param(
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            "the connection broke before the API answered (RemoteProtocolError: "
            "Server disconnected without sending a response.)",
            id="server hung up",
        ),
        pytest.param(
            httpx.ReadError("reset"),
            "the connection broke before the API answered (ReadError: reset)",
            id="connection reset",
        ),
        pytest.param(
            httpx.Response(200, json={"status": "success"}),
            "the API accepted the request but sent no call_id",
            id="success without call_id",
        ),
        pytest.param(
            error(502, "Bad gateway"),
            "the API answered HTTP 502: Bad gateway (a gateway's answer, not the API's own error)",
            id="502",
        ),
        pytest.param(
            httpx.Response(504, text="<html>Gateway Time-out</html>", headers={"Content-Type": "text/html"}),
            "the API answered HTTP 504 (a gateway's answer, not the API's own error)",
            id="504",
        ),
        pytest.param(
            httpx.Response(500, text="upstream exploded"),
            "the API answered HTTP 500: upstream exploded (a gateway's answer, not the API's own error)",
            id="500 that is not the API's own error",
        ),
    ],
)
async def test_request_sent_without_an_answer_becomes_uncertain_and_is_never_resent(
    api: respx.MockRouter,
    client: CallKaroClient,
    state: RunState,
    answer: httpx.Response | Exception,
    message: str,
) -> None:
    if isinstance(answer, Exception):
        route = api.post("/call/outbound").mock(side_effect=answer)
    else:
        route = api.post("/call/outbound").mock(return_value=answer)
    delays = Delays()
    report, rows = await send(client, state, range(2, 3), sleep=delays)
    assert route.call_count == 1
    assert delays.asked == []
    assert rows[2].status == "uncertain"
    assert rows[2].message == f"{message}; not resent, as the call may have been scheduled"
    assert report.statuses == {"uncertain": 1}


# --- final refusals of a row ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [(400, "to_number must be in E.164 format"), (404, "Number is not reachable"), (422, "Unprocessable")],
)
async def test_row_the_api_refuses_is_failed_at_once_and_the_others_still_go(
    api: respx.MockRouter, client: CallKaroClient, state: RunState, status: int, message: str
) -> None:
    async def server(request: httpx.Request) -> httpx.Response:
        return error(status, message) if row_of(request) == 3 else ok(request)

    route = api.post("/call/outbound").mock(side_effect=server)
    report, rows = await send(client, state, range(2, 6), concurrency=1)
    assert requested_rows(route) == [2, 3, 4, 5]
    assert (rows[3].status, rows[3].message, rows[3].attempts) == ("failed", f"HTTP {status}: {message}", 1)
    assert [rows[r].status for r in (2, 4, 5)] == ["scheduled"] * 3
    assert report.refused is None
    assert report.statuses == {"scheduled": 3, "failed": 1}


# --- refusals of the run --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"), [(401, "Invalid API key"), (403, "Missing X-API-KEY in headers")]
)
async def test_refused_key_stops_the_run_leaving_the_rest_pending_while_requests_in_flight_finish(
    api: respx.MockRouter, client: CallKaroClient, state: RunState, status: int, message: str
) -> None:
    refused = asyncio.Event()

    async def server(request: httpx.Request) -> httpx.Response:
        if row_of(request) == 3:
            refused.set()
            return error(status, message)
        # Row 2 is still in flight when row 3 is refused.
        await refused.wait()
        await asyncio.sleep(0.02)
        return ok(request)

    route = api.post("/call/outbound").mock(side_effect=server)
    report, rows = await send(client, state, range(2, 12), concurrency=2, grace=5.0)

    assert sorted(requested_rows(route)) == [2, 3]
    assert isinstance(report.refused, AuthError)
    assert str(report.refused) == f"the API refused the key (HTTP {status}: {message})"
    assert report.stopped is False
    assert (rows[2].status, rows[2].call_id) == ("scheduled", "call-2")
    assert (rows[3].status, rows[3].message) == (
        "pending",
        f"the API refused the key (HTTP {status}: {message})",
    )
    assert {row: (rows[row].status, rows[row].attempts) for row in range(4, 12)} == {
        row: ("pending", 0) for row in range(4, 12)
    }


@pytest.mark.parametrize("message", ["Agent does not exist", "Campaign does not exist"])
async def test_api_not_knowing_the_runs_agent_or_campaign_stops_the_run(
    api: respx.MockRouter, client: CallKaroClient, state: RunState, message: str
) -> None:
    route = api.post("/call/outbound").mock(return_value=error(404, message))
    report, rows = await send(client, state, range(2, 8), concurrency=1)

    assert route.call_count == 1
    assert isinstance(report.refused, NotFoundError)
    assert report.refused.exit_code == 3
    assert str(report.refused) == f"the API does not know this run's agent or campaign (HTTP 404: {message})"
    assert report.refused.hint == "Check --agent-id (and --batch-id) against your CallKaro dashboard."
    assert (rows[2].status, rows[2].message) == ("failed", f"HTTP 404: {message}")
    assert [rows[row].status for row in range(3, 8)] == ["pending"] * 5


# --- how much at once, and stopping ---------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3, 8])
async def test_no_more_requests_are_in_flight_than_the_concurrency_allows(
    api: respx.MockRouter, state: RunState, concurrency: int
) -> None:
    in_flight = 0
    most = 0
    full = asyncio.Event()

    async def server(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight >= concurrency:
            full.set()
        # Each request is held until `concurrency` are in flight at once (however slowly the
        # workers start), then the loop turns a few times so that one too many would show.
        await asyncio.wait_for(full.wait(), timeout=30)
        for _ in range(20):
            await asyncio.sleep(0)
        in_flight -= 1
        return ok(request)

    api.post("/call/outbound").mock(side_effect=server)
    async with CallKaroClient(api_key=ApiKey("k"), base_url=BASE, max_connections=concurrency) as api_client:
        report, rows = await send(api_client, state, range(2, 22), concurrency=concurrency)
    assert most == concurrency
    assert report.statuses == {"scheduled": 20}, {r: v.message for r, v in rows.items()}


async def test_stop_event_stops_new_requests_and_leaves_the_rest_pending(
    api: respx.MockRouter, client: CallKaroClient, state: RunState
) -> None:
    stop = asyncio.Event()

    async def server(request: httpx.Request) -> httpx.Response:
        if row_of(request) == 4:
            stop.set()  # Ctrl-C while row 4 is in flight
        return ok(request)

    route = api.post("/call/outbound").mock(side_effect=server)
    report, rows = await send(client, state, range(2, 10), concurrency=1, stop=stop)

    assert requested_rows(route) == [2, 3, 4]
    assert [rows[row].status for row in (2, 3, 4)] == ["scheduled"] * 3
    assert {rows[row].status for row in range(5, 10)} == {"pending"}
    assert report.stopped is True and report.refused is None


async def test_stop_during_a_back_off_sends_nothing_more_and_leaves_the_row_pending(
    api: respx.MockRouter, client: CallKaroClient, state: RunState
) -> None:
    stop = asyncio.Event()

    async def server(request: httpx.Request) -> httpx.Response:
        asyncio.get_running_loop().call_later(0.02, stop.set)
        return error(503, "Server error", **{"Retry-After": "30"})

    route = api.post("/call/outbound").mock(side_effect=server)
    state.add_pending([2])
    # The real sleep: cut short by the stop instead of waiting 30 seconds.
    report = await asyncio.wait_for(
        send_calls(client, bodies(range(2, 3)), state, stop=stop, retry=RetryPolicy(attempts=5)), timeout=5
    )
    row = state.rows()[2]
    assert route.call_count == 1
    assert (row.status, row.message) == (
        "pending",
        "not retried because the run was stopped: HTTP 503: Server error",
    )
    assert report.stopped is True


async def test_request_still_unanswered_after_the_grace_period_is_left_sending(
    api: respx.MockRouter, client: CallKaroClient, state: RunState
) -> None:
    stop = asyncio.Event()

    async def server(request: httpx.Request) -> httpx.Response:
        stop.set()
        await asyncio.sleep(30)
        return ok(request)

    api.post("/call/outbound").mock(side_effect=server)
    state.add_pending(range(2, 4))
    report = await asyncio.wait_for(
        send_calls(client, bodies(range(2, 4)), state, concurrency=1, stop=stop, grace=0.05), timeout=5
    )
    rows = state.rows()
    # Sent and never answered: whoever reads the state next treats it as uncertain.
    assert (rows[2].status, rows[3].status) == ("sending", "pending")
    assert report.stopped is True


async def test_state_that_cannot_be_written_stops_sending_and_says_so_instead_of_ending_quietly(
    api: respx.MockRouter, client: CallKaroClient, state: RunState, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = api.post("/call/outbound").mock(side_effect=ok)
    real_apply = RunState.apply

    def locked_once_row_4_is_answered(self: RunState, writes: Any) -> None:
        if any(w.source_row == 4 and w.status == "scheduled" for w in writes):
            raise sqlite3.OperationalError("database is locked")
        real_apply(self, writes)

    monkeypatch.setattr(RunState, "apply", locked_once_row_4_is_answered)
    with pytest.raises(
        StateError, match=r"leads\.results\.csv\.state cannot be written \(database is locked\)"
    ):
        await send(client, state, range(2, 10), concurrency=1)

    rows = state.rows()
    assert requested_rows(route) == [2, 3, 4]  # nothing more is sent once an outcome cannot be recorded
    assert [rows[row].status for row in (2, 3)] == ["scheduled", "scheduled"]
    assert rows[4].status == "sending"  # called, answer not recorded: reported uncertain, never resent
    assert {rows[row].status for row in range(5, 10)} == {"pending"}


async def test_bookkeeping_for_many_requests_in_flight_is_grouped_into_few_transactions(
    api: respx.MockRouter, client: CallKaroClient, state: RunState
) -> None:
    api.post("/call/outbound").mock(side_effect=ok)
    report, rows = await send(client, state, range(2, 66), concurrency=16)
    assert {r.status for r in rows.values()} == {"scheduled"}
    assert report.sent == 64
    # One transaction per write would be 128; requests leaving and answers arriving together share one.
    assert report.transactions < 64
    assert report.cpu_seconds > 0 and report.cpu_ms_per_request is not None
