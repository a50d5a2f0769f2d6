"""The simulated CallKaro API behaves like the documented one, faults included."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from loader import sandbox as sandbox_module
from loader.sandbox import Faults, Sandbox, SandboxTransport, create_app, serve

pytestmark = pytest.mark.anyio

KEY = "test-key"
# The two agent ids that the API documentation's examples use.
CAMPAIGN_AGENT = "6803fa770b65876868ddf"
PLAIN_AGENT = "6803fa770b666a64ab1694c1e"
ARRIVAL = datetime(2025, 5, 20, 10, 0, tzinfo=UTC)

CALL_ID = re.compile(r"[0-9a-f]{10}")
BATCH_ID = re.compile(r"[0-9a-f]{24}")
CALL_ACCEPTED = {"status": "success", "message": "Call initiated successfully"}

# "A plain call, priority 1", from the documentation.
PLAIN_CALL: dict[str, Any] = {
    "to_number": "+919876543210",
    "agent_id": PLAIN_AGENT,
    "metadata": {"name": "Abhinav", "age": 25, "city": "Bangalore"},
    "priority": 1,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_sandbox(**faults: Any) -> Sandbox:
    return Sandbox(
        api_key=KEY,
        agents=(CAMPAIGN_AGENT, PLAIN_AGENT),
        faults=Faults(**faults),
        clock=lambda: ARRIVAL,
    )


@asynccontextmanager
async def client_for(sandbox: Sandbox, key: str | None = KEY) -> AsyncIterator[httpx.AsyncClient]:
    headers = {} if key is None else {"X-API-KEY": key}
    async with httpx.AsyncClient(
        transport=SandboxTransport(sandbox), base_url="https://api.callkaro.ai", headers=headers
    ) as client:
        yield client


@pytest.fixture
def sandbox() -> Sandbox:
    return make_sandbox()


@pytest.fixture
async def api(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(sandbox) as client:
        yield client


async def create_campaign(api: httpx.AsyncClient, agent_id: str = CAMPAIGN_AGENT) -> str:
    response = await api.post("/call/campaign", json={"name": "Inspection Campaign", "agent_id": agent_id})
    assert response.status_code == 200, response.text
    batch_id: str = response.json()["batch_id"]
    return batch_id


def error(message: str) -> dict[str, str]:
    return {"status": "error", "message": message}


def assert_call_accepted(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    answer = response.json()
    call_id: str = answer.pop("call_id")
    assert CALL_ID.fullmatch(call_id)
    assert answer == CALL_ACCEPTED
    return call_id


# --- the documented examples ----------------------------------------------------


@pytest.mark.parametrize(
    "additions",
    [
        pytest.param({}, id="plain call"),
        pytest.param({"number_of_retries": 3, "gap_between_retries": [30, 60]}, id="with retries"),
        pytest.param({"schedule_at": "2025-05-28T09:30:00"}, id="scheduled"),
        pytest.param(
            {
                "schedule_at": "2025-05-28T09:30:00",
                "number_of_retries": 3,
                "gap_between_retries": 30,
            },
            id="scheduled with retries and a single gap",
        ),
        pytest.param({"min_trigger_time": "08:30", "max_trigger_time": "20:30"}, id="with a calling window"),
        pytest.param({"carry_over": True}, id="carried over to the next day"),
    ],
)
async def test_documented_call_examples_are_accepted_and_recorded_as_sent(
    api: httpx.AsyncClient, sandbox: Sandbox, additions: dict[str, Any]
) -> None:
    body = PLAIN_CALL | additions
    call_id = assert_call_accepted(await api.post("/call/outbound", json=body))
    assert sandbox.calls == [
        {"call_id": call_id, "batch_id": None, "body": body, "received_at": ARRIVAL.isoformat()}
    ]


async def test_documented_campaign_creation_answers_with_a_new_batch_id(
    api: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    response = await api.post(
        "/call/campaign", json={"name": "Inspection Campaign", "agent_id": CAMPAIGN_AGENT}
    )
    assert response.status_code == 200
    answer = response.json()
    assert BATCH_ID.fullmatch(answer["batch_id"])
    assert answer == {
        "batch_id": answer["batch_id"],
        "message": "Campaign created successfully",
        "status": "success",
    }
    assert sandbox.campaigns == [
        {
            "batch_id": answer["batch_id"],
            "name": "Inspection Campaign",
            "agent_id": CAMPAIGN_AGENT,
            "created_at": ARRIVAL.isoformat(),
        }
    ]


async def test_documented_full_body_is_accepted_in_a_campaign_of_the_same_agent(
    api: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    batch_id = await create_campaign(api)
    body = {
        "to_number": "+919876543210",
        "agent_id": CAMPAIGN_AGENT,
        "batch_id": batch_id,
        "metadata": {"key1": "Value 1", "key2": 5, "city": "Bangalore"},
        "schedule_at": "2025-05-28T09:30:00",
        "min_trigger_time": "08:30",
        "max_trigger_time": "20:30",
        "carry_over": True,
        "number_of_retries": 3,
        "gap_between_retries": [30, 120],
        "priority": 0,
    }
    call_id = assert_call_accepted(await api.post("/call/outbound", json=body))
    assert sandbox.calls == [
        {"call_id": call_id, "batch_id": batch_id, "body": body, "received_at": ARRIVAL.isoformat()}
    ]


async def test_documented_campaign_then_call_needs_no_agent_id(
    api: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    batch_id = await create_campaign(api)
    body = {
        "to_number": "+919876543210",
        "batch_id": batch_id,
        "metadata": {"key1": "Value 1", "key2": 5, "city": "Bangalore"},
        "schedule_at": "2025-05-28T09:30:00",
        "min_trigger_time": "08:30",
        "max_trigger_time": "20:30",
        "carry_over": True,
        "number_of_retries": 3,
        "gap_between_retries": 30,
    }
    assert_call_accepted(await api.post("/call/outbound", json=body))
    assert [call["batch_id"] for call in sandbox.calls] == [batch_id]


# --- refusals ----------------------------------------------------------------------

NOT_E164 = "to_number must be in E.164 format"
NOT_DATE_TIME = "schedule_at must be a date and time as YYYY-MM-DDTHH:MM:SS"
NOT_MIN_TIME = "min_trigger_time must be HH:MM (00:00 to 23:59)"
NOT_MAX_TIME = "max_trigger_time must be HH:MM (00:00 to 23:59)"
NOT_BOOL = "carry_over must be true or false"
NOT_RETRIES = "number_of_retries must be an integer, 0 or more"
NOT_GAP = "gap_between_retries must be an integer above 0 or a non-empty list of them"
NOT_PRIORITY = "priority must be an integer in [-100, 100]"


def plain_call_with(situation: str, changes: dict[str, Any], message: str, status: int = 400) -> Any:
    return pytest.param(PLAIN_CALL | changes, status, message, id=situation)


BAD_CALLS = [
    pytest.param({"agent_id": PLAIN_AGENT}, 400, "Missing to_number", id="no phone number"),
    plain_call_with("national number", {"to_number": "9876543210"}, NOT_E164),
    plain_call_with("number with spaces", {"to_number": "+91 98765 43210"}, NOT_E164),
    plain_call_with("number with leading zero", {"to_number": "+0919876543210"}, NOT_E164),
    plain_call_with("number too long", {"to_number": "+1234567890123456"}, NOT_E164),
    plain_call_with("number in non-ASCII digits", {"to_number": "+९१९८७६५४३२१०"}, NOT_E164),
    plain_call_with("number sent as a JSON number", {"to_number": 919876543210}, NOT_E164),
    pytest.param({"to_number": "+919876543210"}, 400, "Missing agent_id", id="neither agent nor campaign"),
    plain_call_with("unknown agent", {"agent_id": "nobody"}, "Agent does not exist", 404),
    plain_call_with(
        "unknown campaign", {"batch_id": "68433b7b0dee98e59245ebab"}, "Campaign does not exist", 404
    ),
    plain_call_with("null agent", {"agent_id": None, "batch_id": "x"}, "agent_id must be a non-empty string"),
    plain_call_with("blank campaign id", {"batch_id": " "}, "batch_id must be a non-empty string"),
    plain_call_with("misspelt field", {"prioirty": 1}, "Unknown field: prioirty"),
    plain_call_with("metadata as a list", {"metadata": ["Abhinav"]}, "metadata must be an object"),
    plain_call_with(
        "null in metadata",
        {"metadata": {"city": None}},
        "metadata.city must be a string, number or boolean",
    ),
    plain_call_with(
        "nested metadata",
        {"metadata": {"address": {"city": "Pune"}}},
        "metadata.address must be a string, number or boolean",
    ),
    plain_call_with("schedule with a space", {"schedule_at": "2025-05-28 09:30:00"}, NOT_DATE_TIME),
    plain_call_with("schedule without seconds", {"schedule_at": "2025-05-28T09:30"}, NOT_DATE_TIME),
    plain_call_with("schedule with a zone", {"schedule_at": "2025-05-28T09:30:00Z"}, NOT_DATE_TIME),
    plain_call_with("schedule on 30 February", {"schedule_at": "2025-02-30T09:30:00"}, NOT_DATE_TIME),
    plain_call_with("window start without padding", {"min_trigger_time": "8:30"}, NOT_MIN_TIME),
    plain_call_with("window start at 24:00", {"min_trigger_time": "24:00"}, NOT_MIN_TIME),
    plain_call_with("window end with seconds", {"max_trigger_time": "20:30:00"}, NOT_MAX_TIME),
    plain_call_with("carry over as 1", {"carry_over": 1}, NOT_BOOL),
    plain_call_with("carry over as text", {"carry_over": "true"}, NOT_BOOL),
    plain_call_with("negative retries", {"number_of_retries": -1}, NOT_RETRIES),
    plain_call_with("retries as a boolean", {"number_of_retries": True}, NOT_RETRIES),
    plain_call_with("retries as 3.0", {"number_of_retries": 3.0}, NOT_RETRIES),
    plain_call_with("zero gap", {"gap_between_retries": 0}, NOT_GAP),
    plain_call_with("empty gap list", {"gap_between_retries": []}, NOT_GAP),
    plain_call_with("gap list with text", {"gap_between_retries": [30, "60"]}, NOT_GAP),
    plain_call_with("fractional gap", {"gap_between_retries": 30.5}, NOT_GAP),
    plain_call_with("priority above 100", {"priority": 101}, NOT_PRIORITY),
    plain_call_with("priority below -100", {"priority": -101}, NOT_PRIORITY),
    plain_call_with("priority as a boolean", {"priority": True}, NOT_PRIORITY),
    plain_call_with("priority as text", {"priority": "1"}, NOT_PRIORITY),
    pytest.param([PLAIN_CALL], 400, "Request body must be a JSON object", id="body is a list"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_CALLS)
async def test_call_the_api_would_refuse_is_answered_with_its_error_and_not_recorded(
    api: httpx.AsyncClient, sandbox: Sandbox, body: Any, status: int, message: str
) -> None:
    response = await api.post("/call/outbound", json=body)
    assert (response.status_code, response.json()) == (status, error(message))
    assert sandbox.calls == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"to_number=+919876543210", "Request body must be JSON", id="form body"),
        pytest.param(b"", "Request body must be JSON", id="empty body"),
        pytest.param(b'{"to_number": "\xff"}', "Request body must be JSON", id="not UTF-8"),
        pytest.param(
            b'{"to_number": "+919876543210", "agent_id": "6803fa770b666a64ab1694c1e",'
            b' "metadata": {"score": NaN}}',
            "metadata.score must be a finite number",
            id="NaN in metadata",
        ),
    ],
)
async def test_body_that_is_not_valid_json_is_refused(
    api: httpx.AsyncClient, sandbox: Sandbox, content: bytes, message: str
) -> None:
    response = await api.post("/call/outbound", content=content, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (400, error(message))
    assert sandbox.calls == []


@pytest.mark.parametrize("path", ["/call/campaign", "/call/outbound"])
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no content type"),
        pytest.param({"Content-Type": "application/x-www-form-urlencoded"}, id="curl -d without -H"),
        pytest.param({"Content-Type": "text/plain"}, id="text"),
    ],
)
async def test_json_body_not_declared_as_json_is_refused(
    api: httpx.AsyncClient, sandbox: Sandbox, path: str, headers: dict[str, str]
) -> None:
    # Every documented request says Content-Type: application/json; a client that forgets it must notice.
    body = {"name": "Leads", "agent_id": CAMPAIGN_AGENT} if path == "/call/campaign" else PLAIN_CALL
    response = await api.post(path, content=json.dumps(body).encode(), headers=headers)
    assert (response.status_code, response.json()) == (400, error("Content-Type must be application/json"))
    assert (sandbox.calls, sandbox.campaigns) == ([], [])


async def test_json_content_type_with_a_charset_is_accepted(api: httpx.AsyncClient, sandbox: Sandbox) -> None:
    headers = {"Content-Type": "Application/JSON; charset=utf-8"}
    response = await api.post("/call/outbound", content=json.dumps(PLAIN_CALL).encode(), headers=headers)
    assert_call_accepted(response)


async def test_call_naming_another_agents_campaign_is_refused(
    api: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    batch_id = await create_campaign(api, agent_id=CAMPAIGN_AGENT)
    response = await api.post("/call/outbound", json=PLAIN_CALL | {"batch_id": batch_id})
    assert (response.status_code, response.json()) == (
        400,
        error(
            f"agent_id {PLAIN_AGENT} does not match campaign {batch_id}, "
            f"which belongs to agent {CAMPAIGN_AGENT}"
        ),
    )
    assert sandbox.calls == []


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        pytest.param({"agent_id": CAMPAIGN_AGENT}, 400, "Missing name", id="no name"),
        pytest.param({"name": " ", "agent_id": CAMPAIGN_AGENT}, 400, "Missing name", id="blank"),
        pytest.param({"name": 5, "agent_id": CAMPAIGN_AGENT}, 400, "Missing name", id="number"),
        pytest.param({"name": "Leads"}, 400, "Missing agent_id", id="no agent"),
        pytest.param({"name": "Leads", "agent_id": ""}, 400, "Missing agent_id", id="blank agent"),
        pytest.param(
            {"name": "Leads", "agent_id": "nobody"}, 404, "Agent does not exist", id="unknown agent"
        ),
        pytest.param(
            {"name": "Leads", "agent_id": CAMPAIGN_AGENT, "agent": "x"},
            400,
            "Unknown field: agent",
            id="unknown field",
        ),
        pytest.param(["Leads"], 400, "Request body must be a JSON object", id="body is a list"),
    ],
)
async def test_campaign_the_api_would_refuse_is_answered_with_its_error_and_not_recorded(
    api: httpx.AsyncClient, sandbox: Sandbox, body: Any, status: int, message: str
) -> None:
    response = await api.post("/call/campaign", json=body)
    assert (response.status_code, response.json()) == (status, error(message))
    assert sandbox.campaigns == []


@pytest.mark.parametrize("path", ["/call/campaign", "/call/outbound"])
@pytest.mark.parametrize(
    ("key", "status", "message"),
    [
        pytest.param(None, 403, "Missing X-API-KEY in headers", id="no key"),
        pytest.param("", 403, "Missing X-API-KEY in headers", id="empty key"),
        pytest.param("wrong-key", 401, "Invalid API key", id="wrong key"),
    ],
)
async def test_request_without_the_right_key_is_refused_before_its_body_is_read(
    sandbox: Sandbox, path: str, key: str | None, status: int, message: str
) -> None:
    async with client_for(sandbox, key=key) as client:
        response = await client.post(path, content=b"not even JSON")
    assert (response.status_code, response.json()) == (status, error(message))


async def test_unknown_route_and_wrong_method_answer_json_errors(api: httpx.AsyncClient) -> None:
    missing = await api.post("/call/inbound", json=PLAIN_CALL)
    assert (missing.status_code, missing.json()) == (404, error("Not Found"))
    wrong_method = await api.get("/call/outbound")
    assert (wrong_method.status_code, wrong_method.json()) == (405, error("Method Not Allowed"))
    assert wrong_method.headers["Allow"] == "POST"


# --- inspection ----------------------------------------------------------------------


async def test_inspection_lists_exactly_what_was_accepted_without_a_key(
    api: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    batch_id = await create_campaign(api)
    in_campaign = {"to_number": "+919876543210", "batch_id": batch_id}
    first = assert_call_accepted(await api.post("/call/outbound", json=in_campaign))
    await api.post("/call/outbound", json=PLAIN_CALL | {"priority": 500})
    await api.post("/call/campaign", json={"name": "Other", "agent_id": "nobody"})
    second = assert_call_accepted(await api.post("/call/outbound", json=PLAIN_CALL))

    async with client_for(sandbox, key=None) as anonymous:
        calls = (await anonymous.get("/_sandbox/calls")).json()
        campaigns = (await anonymous.get("/_sandbox/campaigns")).json()

    arrived = ARRIVAL.isoformat()
    assert calls == [
        {"call_id": first, "batch_id": batch_id, "body": in_campaign, "received_at": arrived},
        {"call_id": second, "batch_id": None, "body": PLAIN_CALL, "received_at": arrived},
    ]
    assert campaigns == [
        {
            "batch_id": batch_id,
            "name": "Inspection Campaign",
            "agent_id": CAMPAIGN_AGENT,
            "created_at": arrived,
        }
    ]
    assert (calls, campaigns) == (sandbox.calls, sandbox.campaigns)


async def test_create_app_serves_a_fresh_sandbox() -> None:
    app = create_app(api_key=KEY, agents=["agent-1"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox") as client:
        response = await client.post(
            "/call/outbound",
            json={"to_number": "+14155550100", "agent_id": "agent-1"},
            headers={"X-API-KEY": KEY},
        )
        assert_call_accepted(response)
        assert len((await client.get("/_sandbox/calls")).json()) == 1


# --- faults ----------------------------------------------------------------------------


async def outcomes(sandbox: Sandbox, requests: int) -> list[str]:
    """Send the plain call `requests` times; name what became of each."""
    seen = []
    async with client_for(sandbox) as client:
        for _ in range(requests):
            try:
                response = await client.post("/call/outbound", json=PLAIN_CALL)
            except httpx.RemoteProtocolError:
                seen.append("dropped")
            else:
                seen.append(str(response.status_code))
    return seen


async def test_same_seed_fails_the_same_requests_and_records_only_the_answered_ones() -> None:
    first = await outcomes(make_sandbox(error_rate=0.5, seed=7), 30)
    again = make_sandbox(error_rate=0.5, seed=7)
    assert await outcomes(again, 30) == first
    assert set(first) == {"200", "500"}
    assert len(again.calls) == first.count("200")


async def test_server_error_has_the_documented_body() -> None:
    async with client_for(make_sandbox(error_rate=1.0)) as client:
        response = await client.post("/call/outbound", json=PLAIN_CALL)
    assert (response.status_code, response.json()) == (500, error("Server error"))


async def test_same_seed_drops_the_same_calls_and_records_every_one() -> None:
    first = await outcomes(make_sandbox(drop_rate=0.5, seed=3), 30)
    again = make_sandbox(drop_rate=0.5, seed=3)
    assert await outcomes(again, 30) == first
    assert set(first) == {"200", "dropped"}
    assert len(again.calls) == 30


async def test_same_seed_gives_the_same_ids() -> None:
    ids = []
    for _ in range(2):
        sandbox = make_sandbox(seed=11)
        async with client_for(sandbox) as client:
            batch_id = await create_campaign(client)
            call_id = assert_call_accepted(await client.post("/call/outbound", json=PLAIN_CALL))
        ids.append((batch_id, call_id))
    assert ids[0] == ids[1]


async def test_dropped_call_is_recorded_but_the_client_sees_a_disconnect() -> None:
    sandbox = make_sandbox(drop_rate=1.0)
    async with client_for(sandbox) as client:
        with pytest.raises(
            httpx.RemoteProtocolError, match="^Server disconnected without sending a response.$"
        ):
            await client.post("/call/outbound", json=PLAIN_CALL)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/call/campaign", json={"name": "Leads", "agent_id": CAMPAIGN_AGENT})
    assert [call["body"] for call in sandbox.calls] == [PLAIN_CALL]
    assert CALL_ID.fullmatch(sandbox.calls[0]["call_id"])
    assert [campaign["name"] for campaign in sandbox.campaigns] == ["Leads"]


async def test_gateway_fault_records_the_call_then_answers_502_or_504_as_a_gateway_would() -> None:
    sandbox = make_sandbox(gateway_error_rate=1.0, seed=5)
    answers = []
    async with client_for(sandbox) as client:
        for _ in range(12):
            response = await client.post("/call/outbound", json=PLAIN_CALL)
            answers.append(response.status_code)
            assert response.headers["content-type"].startswith("text/html")
            assert f"<h1>{response.status_code} " in response.text
        # Campaigns are left alone: a second, empty campaign would prove nothing.
        assert (
            await client.post("/call/campaign", json={"name": "Leads", "agent_id": CAMPAIGN_AGENT})
        ).status_code == 200
    assert set(answers) == {502, 504}
    assert len(sandbox.calls) == 12
    assert sandbox.stats["gateway_error"] == 12


async def test_same_seed_gives_the_same_gateway_errors() -> None:
    first = await outcomes(make_sandbox(gateway_error_rate=0.5, seed=9), 30)
    again = make_sandbox(gateway_error_rate=0.5, seed=9)
    assert await outcomes(again, 30) == first
    assert {"200", "502", "504"} <= set(first)
    assert len(again.calls) == 30


async def test_refused_call_is_answered_with_its_error_when_gateway_errors_are_on() -> None:
    sandbox = make_sandbox(gateway_error_rate=1.0)
    async with client_for(sandbox) as client:
        response = await client.post("/call/outbound", json=PLAIN_CALL | {"priority": 101})
    assert response.status_code == 400
    assert sandbox.calls == []


async def test_refused_call_is_still_answered_when_drops_are_on() -> None:
    async with client_for(make_sandbox(drop_rate=1.0)) as client:
        response = await client.post("/call/outbound", json=PLAIN_CALL | {"priority": 101})
    assert response.status_code == 400


async def test_rate_limit_answers_429_with_retry_after_until_the_second_has_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sandbox's own clock, moved by the test: a slow machine cannot spread the three requests
    # over more than a second, nor make the one-second wait fall short.
    now = [1000.0]
    monkeypatch.setattr(sandbox_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    sandbox = make_sandbox(rate_limit=2)
    assert await outcomes(sandbox, 3) == ["200", "200", "429"]
    async with client_for(sandbox) as client:
        limited = await client.post("/call/outbound", json=PLAIN_CALL)
        assert (limited.status_code, limited.json()) == (429, error("Too many requests"))
        assert limited.headers["Retry-After"] == "1"
        # Inspection is never limited.
        assert (await client.get("/_sandbox/calls")).status_code == 200
        now[0] += 0.999
        assert (await client.post("/call/outbound", json=PLAIN_CALL)).status_code == 429
        now[0] += 0.001
        assert_call_accepted(await client.post("/call/outbound", json=PLAIN_CALL))
    assert len(sandbox.calls) == 3


async def test_latency_delays_each_answer() -> None:
    async with client_for(make_sandbox(latency_ms=150)) as client:
        started = time.perf_counter()
        assert_call_accepted(await client.post("/call/outbound", json=PLAIN_CALL))
        assert time.perf_counter() - started >= 0.15


async def test_faults_leave_inspection_alone() -> None:
    # A latency no test would wait out: an inspection that went through the faults never returns.
    async with client_for(make_sandbox(error_rate=1.0, latency_ms=10**9)) as client:
        inspected = await asyncio.wait_for(client.get("/_sandbox/campaigns"), timeout=60)
        assert (inspected.status_code, inspected.json()) == (200, [])


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ({"error_rate": 1.5}, "error_rate must be between 0 and 1, not 1.5"),
        ({"drop_rate": -0.1}, "drop_rate must be between 0 and 1, not -0.1"),
        ({"gateway_error_rate": 2}, "gateway_error_rate must be between 0 and 1, not 2"),
        ({"rate_limit": 0}, "rate_limit must be above 0, not 0"),
        ({"latency_ms": -1}, "latency_ms must be 0 or more, not -1"),
    ],
)
def test_impossible_fault_settings_are_refused(faults: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Faults(**faults)


# --- serve -------------------------------------------------------------------------------


def test_sandbox_on_a_real_port_drops_the_connection_instead_of_answering() -> None:
    script = "from loader.sandbox import Faults, serve; serve(port=0, faults=Faults(drop_rate=1.0))"
    with subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            found = re.fullmatch(
                r"CallKaro sandbox on (http://127\.0\.0\.1:\d+) "
                r"\(api key: sandbox-key, agents: demo-agent\)\n",
                line,
            )
            assert found, line
            with httpx.Client(base_url=found[1], headers={"X-API-KEY": "sandbox-key"}) as client:
                body = {"to_number": "+919876543210", "agent_id": "demo-agent"}
                with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                    client.post("/call/outbound", json=body)
                # Refusals are answered as usual.
                assert client.post("/call/outbound", json={}).status_code == 400
                calls = client.get("/_sandbox/calls").json()
            assert [call["body"] for call in calls] == [body]
        finally:
            server.terminate()
            _, stderr = server.communicate(timeout=10)
    # uvicorn neither answered 500 nor logged the drop as an application error.
    assert stderr == ""


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "::", "example.com"])
def test_serve_refuses_to_listen_beyond_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="only on loopback"):
        serve(host=host, port=0)
