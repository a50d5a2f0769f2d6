"""The HTTP client: every answer the API can give becomes the right outcome, and the key never shows."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import math
import time
import traceback
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from loader.client import MAX_RETRY_AFTER, CallKaroClient, check_base_url, parse_retry_after
from loader.errors import (
    AuthError,
    LoaderError,
    NoAnswerError,
    RejectedError,
    TransientError,
    UsageError,
)
from loader.secrets import ApiKey

pytestmark = pytest.mark.anyio

BASE = "https://api.callkaro.ai"
KEY = "ck_live_5ecret-KEY-0123456789"
BODY: dict[str, Any] = {"to_number": "+919876543210", "agent_id": "demo-agent", "priority": 1}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False, using="httpx") as router:
        yield router


def make_client(**kwargs: Any) -> CallKaroClient:
    return CallKaroClient(api_key=ApiKey(KEY), base_url=kwargs.pop("base_url", BASE), **kwargs)


def error_body(message: str) -> dict[str, str]:
    return {"status": "error", "message": message}


async def schedule(api: respx.MockRouter, **answer: Any) -> str:
    """Answer ``POST /call/outbound`` as given and schedule ``BODY``."""
    api.post("/call/outbound").mock(**answer)
    async with make_client() as client:
        return await client.schedule_call(BODY)


# --- success --------------------------------------------------------------------------------------


async def test_accepted_call_returns_its_call_id(api: respx.MockRouter) -> None:
    answer = {"status": "success", "message": "Call initiated successfully", "call_id": "a1b2c3d4e5"}
    assert await schedule(api, return_value=httpx.Response(200, json=answer)) == "a1b2c3d4e5"


async def test_created_campaign_returns_its_batch_id_and_sends_name_and_agent(api: respx.MockRouter) -> None:
    route = api.post("/call/campaign").mock(
        return_value=httpx.Response(
            200,
            json={
                "batch_id": "68433b7b0dee98e59245ebab",
                "message": "Campaign created successfully",
                "status": "success",
            },
        )
    )
    async with make_client() as client:
        batch = await client.create_campaign(name="Inspection Campaign", agent_id="6803fa770b65876868ddf")
    assert batch == "68433b7b0dee98e59245ebab"
    assert json.loads(route.calls.last.request.content) == {
        "name": "Inspection Campaign",
        "agent_id": "6803fa770b65876868ddf",
    }


async def test_every_request_carries_the_key_as_x_api_key_and_a_json_body(api: respx.MockRouter) -> None:
    route = api.post("/call/outbound").mock(
        return_value=httpx.Response(200, json={"status": "success", "call_id": "c1"})
    )
    body = {**BODY, "metadata": {"City": "बेंगलुरु", "Age": 34}}
    async with make_client() as client:
        await client.schedule_call(body)
    request = route.calls.last.request
    assert request.headers["X-API-KEY"] == KEY
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content.decode("utf-8")) == body
    # Non-ASCII text goes as UTF-8, not as \u escapes.
    assert "बेंगलुरु".encode() in request.content


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_a_body_holding_nan_or_infinity_is_never_sent(api: respx.MockRouter, bad: float) -> None:
    route = api.post("/call/outbound").mock(return_value=httpx.Response(200, json={"call_id": "c1"}))
    async with make_client() as client:
        with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
            await client.schedule_call({**BODY, "metadata": {"Age": bad}})
    assert not route.called


# --- answers that are not a success ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "raised", "text"),
    [
        pytest.param(400, "Missing agent_id", RejectedError, "HTTP 400: Missing agent_id", id="400"),
        pytest.param(404, "Agent does not exist", RejectedError, "HTTP 404: Agent does not exist", id="404"),
        pytest.param(422, "Bad number", RejectedError, "HTTP 422: Bad number", id="other 4xx"),
        pytest.param(
            401,
            "Invalid API key",
            AuthError,
            "the API refused the key (HTTP 401: Invalid API key)",
            id="401",
        ),
        pytest.param(
            403,
            "Missing X-API-KEY in headers",
            AuthError,
            "the API refused the key (HTTP 403: Missing X-API-KEY in headers)",
            id="403",
        ),
        pytest.param(429, "Too many requests", TransientError, "HTTP 429: Too many requests", id="429"),
        pytest.param(500, "Server error", TransientError, "HTTP 500: Server error", id="500"),
        pytest.param(503, "Unavailable", TransientError, "HTTP 503: Unavailable", id="503"),
    ],
)
async def test_each_documented_error_status_becomes_the_error_that_says_what_to_do_next(
    api: respx.MockRouter, status: int, message: str, raised: type[LoaderError], text: str
) -> None:
    with pytest.raises(raised) as caught:
        await schedule(api, return_value=httpx.Response(status, json=error_body(message)))
    assert str(caught.value) == text
    assert getattr(caught.value, "status_code", None) == status


async def test_refused_key_comes_with_a_hint_naming_where_the_key_lives(api: respx.MockRouter) -> None:
    with pytest.raises(AuthError) as caught:
        await schedule(api, return_value=httpx.Response(401, json=error_body("Invalid API key")))
    assert caught.value.exit_code == 3
    assert caught.value.hint == (
        "Check CALLKARO_API_KEY (or .env) holds the key from your CallKaro dashboard."
    )


def html(status: int) -> httpx.Response:
    page = f"<html><body><h1>{status} Gateway Time-out</h1></body></html>"
    return httpx.Response(status, text=page, headers={"Content-Type": "text/html"})


@pytest.mark.parametrize(
    ("response", "text"),
    [
        pytest.param(httpx.Response(503), "HTTP 503", id="503 without a body"),
        pytest.param(html(503), "HTTP 503", id="503 error page"),
        pytest.param(
            httpx.Response(500, json=error_body("Server error")), "HTTP 500: Server error", id="500 API"
        ),
    ],
)
async def test_answers_that_prove_nothing_was_scheduled_are_retried(
    api: respx.MockRouter, response: httpx.Response, text: str
) -> None:
    with pytest.raises(TransientError) as caught:
        await schedule(api, return_value=response)
    assert str(caught.value) == text


@pytest.mark.parametrize(
    ("response", "text"),
    [
        pytest.param(html(502), "HTTP 502", id="502 gateway page"),
        pytest.param(html(504), "HTTP 504", id="504 gateway page"),
        # A gateway that happens to answer JSON in the API's shape still does not speak for the API.
        pytest.param(
            httpx.Response(502, json=error_body("Bad gateway")), "HTTP 502: Bad gateway", id="502 json"
        ),
        pytest.param(
            httpx.Response(504, json=error_body("Gateway timeout")),
            "HTTP 504: Gateway timeout",
            id="504 json",
        ),
        pytest.param(
            httpx.Response(500, text="upstream exploded"), "HTTP 500: upstream exploded", id="500 text"
        ),
        pytest.param(httpx.Response(500), "HTTP 500", id="500 empty"),
        pytest.param(html(500), "HTTP 500", id="500 html"),
        pytest.param(
            httpx.Response(500, json={"message": "Internal server error"}),
            "HTTP 500: Internal server error",
            id="500 json without the API's status",
        ),
        pytest.param(
            httpx.Response(
                500,
                content=json.dumps(error_body("Server error")).encode(),
                headers={"Content-Type": "text/html"},
            ),
            "HTTP 500: Server error",
            id="500 API-shaped body not declared as JSON",
        ),
        pytest.param(httpx.Response(520, text=""), "HTTP 520", id="520 empty"),
    ],
)
async def test_a_5xx_that_is_not_the_apis_own_error_is_no_answer_because_the_call_may_exist(
    api: respx.MockRouter, response: httpx.Response, text: str
) -> None:
    with pytest.raises(NoAnswerError) as caught:
        await schedule(api, return_value=response)
    assert str(caught.value) == f"the API answered {text} (a gateway's answer, not the API's own error)"
    assert caught.value.status_code == response.status_code


@pytest.mark.parametrize("status", [400, 200])
async def test_a_megabyte_message_is_cut_to_a_line_before_it_reaches_any_output(
    api: respx.MockRouter, status: int
) -> None:
    # Copied into every row's results cell, the state, the log and the summary, a hostile server's
    # 2 MB message per row would fill the disk (and is cut by Excel anyway).
    told = "word " * 400_000 + KEY
    with pytest.raises(RejectedError) as caught:
        await schedule(api, return_value=httpx.Response(status, json=error_body(told)))
    text = str(caught.value)
    assert len(text) < 1100 and text.endswith("…"), text[-40:]
    assert KEY not in text


async def test_200_whose_body_says_error_is_a_refusal(api: respx.MockRouter) -> None:
    with pytest.raises(RejectedError) as caught:
        await schedule(api, return_value=httpx.Response(200, json=error_body("Number is blocked")))
    assert str(caught.value) == "the API refused the call: Number is blocked"


@pytest.mark.parametrize(
    ("response", "text"),
    [
        pytest.param(
            httpx.Response(200, json={"status": "queued", "call_id": "c2"}),
            "the API answered HTTP 200 (status 'queued'), not the documented success",
            id="another status",
        ),
        pytest.param(
            httpx.Response(202, json={"status": "accepted", "message": "Will call soon"}),
            "the API answered HTTP 202 (status 'accepted': Will call soon), not the documented success",
            id="202",
        ),
    ],
)
async def test_a_2xx_that_is_neither_success_nor_error_is_no_answer_because_the_call_may_exist(
    api: respx.MockRouter, response: httpx.Response, text: str
) -> None:
    # A failed row is sent again on the next run; an uncertain one is not, so nobody is called twice.
    with pytest.raises(NoAnswerError) as caught:
        await schedule(api, return_value=response)
    assert str(caught.value) == text


async def test_a_201_saying_success_with_a_call_id_schedules_the_call(api: respx.MockRouter) -> None:
    answer = {"status": "success", "call_id": "c1"}
    assert await schedule(api, return_value=httpx.Response(201, json=answer)) == "c1"


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"status": "success", "message": "Call initiated successfully"}, id="no call_id"),
        pytest.param({"status": "success", "call_id": ""}, id="empty call_id"),
        pytest.param({"status": "success", "call_id": None}, id="null call_id"),
        pytest.param({"status": "success", "call_id": True}, id="boolean call_id"),
    ],
)
async def test_success_without_a_call_id_is_no_answer_because_the_call_may_exist(
    api: respx.MockRouter, answer: dict[str, Any]
) -> None:
    with pytest.raises(NoAnswerError) as caught:
        await schedule(api, return_value=httpx.Response(200, json=answer))
    assert str(caught.value) == "the API accepted the request but sent no call_id"


async def test_numeric_call_id_is_kept_as_text(api: respx.MockRouter) -> None:
    assert await schedule(api, return_value=httpx.Response(200, json={"call_id": 12345})) == "12345"


# --- Retry-After ----------------------------------------------------------------------------------


def http_date(seconds_from_now: float) -> str:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_from_now)
    return email.utils.format_datetime(when, usegmt=True)


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        pytest.param("7", 7.0, 7.0, id="seconds"),
        pytest.param("2.5", 2.5, 2.5, id="fractional seconds"),
        pytest.param("3600", MAX_RETRY_AFTER, MAX_RETRY_AFTER, id="an hour is capped"),
        # An HTTP date has whole seconds, so up to 1 s less, and less again by the time this takes.
        pytest.param(30, 29.0, 30.0, id="http date"),
        pytest.param(86400, MAX_RETRY_AFTER, MAX_RETRY_AFTER, id="http date tomorrow is capped"),
        pytest.param(-600, 0.0, 0.0, id="http date in the past"),
    ],
)
async def test_retry_after_is_read_in_seconds_or_as_an_http_date_and_capped(
    api: respx.MockRouter, status: int, header: str | int, low: float, high: float
) -> None:
    # An int stands for an HTTP date that many seconds from now, made when the test runs.
    made = time.monotonic()
    value = http_date(header) if isinstance(header, int) else header
    response = httpx.Response(status, json=error_body("slow down"), headers={"Retry-After": value})
    with pytest.raises(TransientError) as caught:
        await schedule(api, return_value=response)
    # Measured, not guessed: however slow the machine, the wait shrinks only by the time that passed.
    took = time.monotonic() - made if isinstance(header, int) and low != high else 0.0
    assert caught.value.retry_after is not None
    assert low - took <= caught.value.retry_after <= high


@pytest.mark.parametrize("header", ["soon", "", "NaN", "Wed, 99 Foo 2030"])
async def test_unreadable_retry_after_is_ignored(api: respx.MockRouter, header: str) -> None:
    response = httpx.Response(429, json=error_body("slow down"), headers={"Retry-After": header})
    with pytest.raises(TransientError) as caught:
        await schedule(api, return_value=response)
    assert caught.value.retry_after is None


def test_retry_after_http_date_is_measured_from_the_given_now() -> None:
    now = dt.datetime(2030, 5, 28, 9, 30, tzinfo=dt.UTC)
    assert parse_retry_after("Tue, 28 May 2030 09:30:12 GMT", now=now) == 12.0
    assert parse_retry_after(None) is None


# --- transport failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout], ids=lambda e: e.__name__
)
async def test_request_that_never_reached_the_server_is_safe_to_retry(
    api: respx.MockRouter, failure: type[Exception]
) -> None:
    with pytest.raises(TransientError) as caught:
        await schedule(api, side_effect=failure("boom"))
    assert str(caught.value) == f"could not reach the API ({failure.__name__}: boom)"
    assert caught.value.retry_after is None


@pytest.mark.parametrize(
    ("failure", "text"),
    [
        (httpx.ReadTimeout, "no answer from the API (ReadTimeout: boom)"),
        (httpx.WriteTimeout, "no answer from the API (WriteTimeout: boom)"),
        (
            httpx.RemoteProtocolError,
            "the connection broke before the API answered (RemoteProtocolError: boom)",
        ),
        (httpx.ReadError, "the connection broke before the API answered (ReadError: boom)"),
        (httpx.WriteError, "the connection broke before the API answered (WriteError: boom)"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
async def test_request_sent_but_unanswered_is_no_answer_never_a_retry(
    api: respx.MockRouter, failure: type[Exception], text: str
) -> None:
    with pytest.raises(NoAnswerError) as caught:
        await schedule(api, side_effect=failure("boom"))
    assert str(caught.value) == text


async def test_redirect_is_not_followed_with_the_key(api: respx.MockRouter) -> None:
    elsewhere = api.post("https://evil.example/call/outbound")
    response = httpx.Response(307, headers={"Location": "https://evil.example/call/outbound"})
    with pytest.raises(RejectedError, match="^HTTP 307$"):
        await schedule(api, return_value=response)
    assert not elsewhere.called


# --- the key never shows --------------------------------------------------------------------------


def test_key_is_not_in_the_clients_repr() -> None:
    client = make_client()
    assert repr(client) == "CallKaroClient(base_url='https://api.callkaro.ai')"
    assert KEY not in repr(client) and KEY not in str(client)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"return_value": httpx.Response(401, json=error_body("Invalid API key"))}, id="401"),
        pytest.param(
            {"return_value": httpx.Response(403, json=error_body(f"Key {KEY} is not allowed"))},
            id="403 echoing the key",
        ),
        pytest.param(
            {"return_value": httpx.Response(400, json=error_body(f"bad request with key {KEY}"))},
            id="400 echoing the key",
        ),
        pytest.param(
            {"return_value": httpx.Response(500, text=f"X-API-KEY: {KEY}")}, id="500 echoing the key"
        ),
        pytest.param({"return_value": httpx.Response(200, json={"status": "success"})}, id="no call_id"),
        pytest.param({"side_effect": httpx.ConnectError("refused")}, id="connect error"),
        pytest.param({"side_effect": httpx.ReadTimeout("timed out")}, id="read timeout"),
    ],
)
async def test_key_is_in_no_error_a_person_or_log_could_see(
    api: respx.MockRouter, answer: dict[str, Any]
) -> None:
    with pytest.raises(LoaderError) as caught:
        await schedule(api, **answer)
    exc = caught.value
    seen = [str(exc), repr(exc), exc.hint or "", "".join(traceback.format_exception(exc))]
    for text in seen:
        assert KEY not in text


# --- where the key may be sent --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8787", "http://127.0.0.1:8787"),
        ("http://127.0.0.1:8787/", "http://127.0.0.1:8787"),
        ("http://[::1]:8787", "http://[::1]:8787"),
        ("http://localhost", "http://localhost"),
        ("http://localhost:9000/", "http://localhost:9000"),
        ("https://api.callkaro.ai", "https://api.callkaro.ai"),
        ("https://example.com/", "https://example.com"),
        (" https://proxy.internal:8443/callkaro ", "https://proxy.internal:8443/callkaro"),
    ],
)
def test_https_anywhere_and_plain_http_to_this_machine_are_accepted(url: str, expected: str) -> None:
    assert check_base_url(url) == expected


@pytest.mark.parametrize(
    "url", ["http://example.com", "http://10.0.0.5:8787", "http://localhost.example.com", "http://0.0.0.0"]
)
def test_plain_http_to_another_host_is_refused_because_the_key_would_travel_in_clear(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_base_url(url)
    assert str(caught.value) == (
        f"--base-url {url!r} uses plain http to a host that is not this machine, "
        "which would send the API key unencrypted"
    )
    assert caught.value.hint == "Use https://, or http://127.0.0.1:PORT for a local sandbox."


@pytest.mark.parametrize("url", ["ftp://api.callkaro.ai", "api.callkaro.ai", "https://", "", "https://[::1"])
def test_base_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_base_url(url)
    assert str(caught.value) == f"--base-url {url!r} is not an http(s) URL"


def test_client_refuses_an_unsafe_base_url_before_any_request() -> None:
    with pytest.raises(UsageError, match="plain http"):
        make_client(base_url="http://example.com")
