"""A simulated CallKaro API: a small stateful server for demos and end-to-end tests.

It answers ``POST /call/campaign`` and ``POST /call/outbound`` with the documented
success and error bodies (see ``callkaro-api.md``), checks ``X-API-KEY``, knows a
fixed set of agents, and records every accepted campaign and call so a test can
read back exactly what the loader sent (``GET /_sandbox/calls``,
``GET /_sandbox/campaigns``).

It is deliberately stricter than the published contract where the contract is
silent on types (nulls, NaN, ``3.0`` for an integer, unknown fields): a loader
that passes against the sandbox sends only values the real API documents.

Faults (:class:`Faults`) make it misbehave the way production services do:
latency, 429s, 500s and, the cases that matter most for a client without
idempotency keys, a call that is recorded but never answered, and a call that
is recorded and then answered 502/504 by a "gateway" in front of the API.

Three ways to use it:

* ``SandboxTransport(Sandbox(...))`` as an ``httpx`` transport, in-process;
* ``serve(...)`` on a real loopback port (the ``callkaro-loader sandbox`` command);
* ``Sandbox(...).app`` / ``create_app(...)`` under any ASGI server, except that a
  dropped connection then surfaces as a server error unless the server is
  ``serve``'s, which can really close the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import random
import re
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["Faults", "Sandbox", "SandboxTransport", "create_app", "serve"]

# ASCII classes on purpose: `\d` would accept Devanagari and other Unicode digits.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")
_HH_MM = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]")

_CAMPAIGN_FIELDS = ("name", "agent_id")
_OUTBOUND_FIELDS = (
    "to_number",
    "agent_id",
    "batch_id",
    "metadata",
    "schedule_at",
    "min_trigger_time",
    "max_trigger_time",
    "carry_over",
    "number_of_retries",
    "gap_between_retries",
    "priority",
)

# The scope extension through which serve()'s HTTP protocol lets the app close the socket.
_ABORT_EXTENSION = "callkaro.sandbox.abort"


@dataclass(frozen=True)
class Faults:
    """How the sandbox misbehaves; all off by default."""

    latency_ms: float = 0.0
    """Delay before answering each API request."""
    error_rate: float = 0.0
    """Probability of answering 500 ``Server error`` without recording anything."""
    rate_limit: float | None = None
    """Requests per second; past it the answer is 429 with ``Retry-After``."""
    drop_rate: float = 0.0
    """Probability of recording an accepted call or campaign, then closing the
    connection without an answer: the client cannot tell whether it went through."""
    gateway_error_rate: float = 0.0
    """Probability of recording an accepted call, then answering 502 or 504 with an
    HTML page, as a load balancer does when the API behind it is slow or failing: the
    call exists, but the answer does not say so. Campaigns are not affected."""
    seed: int | None = None
    """Makes every random decision (and every generated id) reproducible."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise ValueError(f"latency_ms must be 0 or more, not {self.latency_ms}")
        for name in ("error_rate", "drop_rate", "gateway_error_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        if self.rate_limit is not None and not (math.isfinite(self.rate_limit) and self.rate_limit > 0):
            raise ValueError(f"rate_limit must be above 0, not {self.rate_limit}")


class _ApiError(Exception):
    """An answer in the API's error shape: ``{"status": "error", "message": ...}``."""

    def __init__(self, status_code: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers

    def response(self) -> JSONResponse:
        return _error_response(self.status_code, self.message, self.headers)


class _ConnectionDropped(Exception):
    """Raised by the app where it has no socket to close; SandboxTransport turns it
    into the error httpx raises when a real server hangs up."""


class _DroppedConnection(Response):
    """A "response" that closes the connection instead of answering."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        abort = scope.get("extensions", {}).get(_ABORT_EXTENSION)
        if abort is None:
            raise _ConnectionDropped
        abort()
        # Returning before uvicorn has seen the disconnect would make it answer 500.
        while (await receive())["type"] != "http.disconnect":
            pass


def _gateway_page(status_code: int) -> Response:
    """What nginx or a cloud load balancer answers in front of a slow API: HTML, not the API's JSON."""
    title = {502: "502 Bad Gateway", 504: "504 Gateway Time-out"}[status_code]
    page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>\n"
    return Response(page, status_code, media_type="text/html")


def _error_response(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code, headers)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _is_int(value: object) -> bool:
    # bool is an int subclass in Python, but JSON true is not an integer.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_filled_text(value: object) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _is_date_time(value: object) -> bool:
    if not (isinstance(value, str) and _DATE_TIME.fullmatch(value)):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return False
    return True


def _is_hh_mm(value: object) -> bool:
    return isinstance(value, str) and _HH_MM.fullmatch(value) is not None


def _is_gap(value: object) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_is_int(gap) and gap > 0 for gap in value)
    return _is_int(value) and value > 0  # type: ignore[operator]


# Checked in the documented field order, so the first problem reported is predictable.
_OPTIONAL_RULES: tuple[tuple[str, Callable[[object], bool], str], ...] = (
    ("agent_id", _is_filled_text, "agent_id must be a non-empty string"),
    ("batch_id", _is_filled_text, "batch_id must be a non-empty string"),
    ("schedule_at", _is_date_time, "schedule_at must be a date and time as YYYY-MM-DDTHH:MM:SS"),
    ("min_trigger_time", _is_hh_mm, "min_trigger_time must be HH:MM (00:00 to 23:59)"),
    ("max_trigger_time", _is_hh_mm, "max_trigger_time must be HH:MM (00:00 to 23:59)"),
    ("carry_over", lambda v: isinstance(v, bool), "carry_over must be true or false"),
    (
        "number_of_retries",
        lambda v: _is_int(v) and v >= 0,  # type: ignore[operator]
        "number_of_retries must be an integer, 0 or more",
    ),
    (
        "gap_between_retries",
        _is_gap,
        "gap_between_retries must be an integer above 0 or a non-empty list of them",
    ),
    (
        "priority",
        lambda v: _is_int(v) and -100 <= v <= 100,  # type: ignore[operator]
        "priority must be an integer in [-100, 100]",
    ),
)


def _check_metadata(metadata: object) -> None:
    if not isinstance(metadata, dict):
        raise _ApiError(400, "metadata must be an object")
    for key, value in metadata.items():
        if isinstance(value, float) and not math.isfinite(value):
            # Python's json module parses NaN and Infinity, which are not JSON.
            raise _ApiError(400, f"metadata.{key} must be a finite number")
        if not isinstance(value, str | int | float):  # bool is an int
            raise _ApiError(400, f"metadata.{key} must be a string, number or boolean")


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:  # also covers bytes that are not UTF-8
        raise _ApiError(400, "Request body must be JSON") from None
    if not isinstance(body, dict):
        raise _ApiError(400, "Request body must be a JSON object")
    return body


def _require_json_content_type(request: Request) -> None:
    # Every documented request sends "Content-Type: application/json"; a body declared as a
    # form (what curl -d sends without it) or as text is not read as JSON.
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise _ApiError(400, "Content-Type must be application/json")


def _refuse_unknown_fields(body: dict[str, Any], known: Sequence[str]) -> None:
    for field in body:
        if field not in known:
            raise _ApiError(400, f"Unknown field: {field}")


class Sandbox:
    """The simulated API's state (campaigns and calls) and its ASGI app.

    State changes only between awaits, so one event loop may serve many
    concurrent requests without locks. ``calls`` and ``campaigns`` hold exactly
    what the inspection endpoints return.
    """

    def __init__(
        self,
        *,
        api_key: str = "sandbox-key",
        agents: Iterable[str] = ("demo-agent",),
        faults: Faults = Faults(),  # noqa: B008 - frozen, so sharing the default is safe
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.api_key = api_key
        self.agents = tuple(dict.fromkeys(agents))
        self.faults = faults
        self.calls: list[dict[str, Any]] = []
        #: requests received, and how each was answered (answered_200, answered_429, dropped, ...)
        self.stats: Counter[str] = Counter()
        self.campaigns: list[dict[str, Any]] = []
        self._clock = clock
        self._rng = random.Random(faults.seed)
        # A stream of its own, so that the fault pattern depends only on how many
        # requests arrived, not on how many of them were accepted.
        self._id_rng = random.Random(None if faults.seed is None else f"ids:{faults.seed}")
        self._batches: dict[str, str] = {}  # batch_id -> agent_id
        self._call_ids: set[str] = set()
        self._admitted: deque[float] = deque()  # monotonic times, for the rate limit
        self.app = Starlette(
            routes=[
                Route("/call/campaign", self._api(self._create_campaign), methods=["POST"]),
                Route("/call/outbound", self._api(self._schedule_call, gateway=True), methods=["POST"]),
                Route("/_sandbox/calls", self._list_calls, methods=["GET"]),
                Route("/_sandbox/campaigns", self._list_campaigns, methods=["GET"]),
                Route("/_sandbox/stats", self._show_stats, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_error},
        )

    def add_campaign(self, batch_id: str, *, name: str, agent_id: str) -> None:
        """Know a campaign made elsewhere: an in-process sandbox resuming a run whose
        campaign an earlier sandbox created."""
        if batch_id in self._batches:
            return
        self._require_agent(agent_id)
        self._batches[batch_id] = agent_id
        self.campaigns.append(
            {
                "batch_id": batch_id,
                "name": name,
                "agent_id": agent_id,
                "created_at": self._clock().isoformat(),
            }
        )

    # --- the two API endpoints -------------------------------------------------

    def _create_campaign(self, body: dict[str, Any]) -> dict[str, Any]:
        _refuse_unknown_fields(body, _CAMPAIGN_FIELDS)
        for field in ("name", "agent_id"):
            if not _is_filled_text(body.get(field)):
                raise _ApiError(400, f"Missing {field}")
        agent_id = body["agent_id"]
        self._require_agent(agent_id)
        batch_id = self._new_id(24, self._batches)
        self._batches[batch_id] = agent_id
        self.campaigns.append(
            {
                "batch_id": batch_id,
                "name": body["name"],
                "agent_id": agent_id,
                "created_at": self._clock().isoformat(),
            }
        )
        return {
            "batch_id": batch_id,
            "message": "Campaign created successfully",
            "status": "success",
        }

    def _schedule_call(self, body: dict[str, Any]) -> dict[str, Any]:
        _refuse_unknown_fields(body, _OUTBOUND_FIELDS)
        if "to_number" not in body:
            raise _ApiError(400, "Missing to_number")
        to_number = body["to_number"]
        if not (isinstance(to_number, str) and _E164.fullmatch(to_number)):
            raise _ApiError(400, "to_number must be in E.164 format")
        if "agent_id" not in body and "batch_id" not in body:
            raise _ApiError(400, "Missing agent_id")
        for field, valid, message in _OPTIONAL_RULES:
            if field in body and not valid(body[field]):
                raise _ApiError(400, message)
        if "metadata" in body:
            _check_metadata(body["metadata"])

        agent_id, batch_id = body.get("agent_id"), body.get("batch_id")
        if agent_id is not None:
            self._require_agent(agent_id)
        if batch_id is not None:
            if batch_id not in self._batches:
                raise _ApiError(404, "Campaign does not exist")
            if agent_id is not None and self._batches[batch_id] != agent_id:
                raise _ApiError(
                    400,
                    f"agent_id {agent_id} does not match campaign {batch_id}, "
                    f"which belongs to agent {self._batches[batch_id]}",
                )

        call_id = self._new_id(10, self._call_ids)
        self._call_ids.add(call_id)
        self.calls.append(
            {
                "call_id": call_id,
                "batch_id": batch_id,
                "body": body,
                "received_at": self._clock().isoformat(),
            }
        )
        return {"status": "success", "message": "Call initiated successfully", "call_id": call_id}

    def _require_agent(self, agent_id: str) -> None:
        if agent_id not in self.agents:
            raise _ApiError(404, "Agent does not exist")

    def _new_id(self, hex_chars: int, taken: Container[str]) -> str:
        while True:
            candidate = f"{self._id_rng.getrandbits(hex_chars * 4):0{hex_chars}x}"
            if candidate not in taken:
                return candidate

    # --- what every API request goes through -------------------------------------

    def _api(
        self, handle: Callable[[dict[str, Any]], dict[str, Any]], *, gateway: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            self.stats["requests"] += 1
            try:
                drop, gateway_error = await self._inject_faults()
                self._authenticate(request)
                _require_json_content_type(request)
                answer = handle(_json_object(await request.body()))
            except _ApiError as error:
                self.stats[f"answered_{error.status_code}"] += 1
                return error.response()
            if drop:
                self.stats["dropped"] += 1
                return _DroppedConnection()
            if gateway and gateway_error is not None:
                self.stats["gateway_error"] += 1
                return _gateway_page(gateway_error)
            self.stats["answered_200"] += 1
            return JSONResponse(answer)

        return endpoint

    async def _inject_faults(self) -> tuple[bool, int | None]:
        """Sleep, rate-limit and fail as configured; return whether to drop a success, and the
        gateway error (502 or 504) to answer a success with instead, if any."""
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        retry_after = self._rate_limited()
        if retry_after is not None:
            raise _ApiError(429, "Too many requests", {"Retry-After": str(retry_after)})
        # Both draws happen for every admitted request, so with a seed the n-th
        # request always meets the same fate whatever became of the others.
        fail = faults.error_rate > 0 and self._rng.random() < faults.error_rate
        drop = faults.drop_rate > 0 and self._rng.random() < faults.drop_rate
        # Drawn only when the fault is on, so the seeds of runs without it keep their patterns.
        gateway = faults.gateway_error_rate > 0 and self._rng.random() < faults.gateway_error_rate
        if fail:
            raise _ApiError(500, "Server error")
        return drop, (self._rng.choice((502, 504)) if gateway else None)

    def _rate_limited(self) -> int | None:
        """Admit the request, or return the whole seconds to wait (Retry-After)."""
        limit = self.faults.rate_limit
        if limit is None:
            return None
        # A sliding window holding `capacity` requests; for a fractional limit such as
        # 0.5/s that is one request per two seconds rather than one per second.
        capacity = max(1, math.floor(limit))
        window = capacity / limit
        now = time.monotonic()
        while self._admitted and now - self._admitted[0] >= window:
            self._admitted.popleft()
        if len(self._admitted) >= capacity:
            return max(1, math.ceil(window - (now - self._admitted[0])))
        self._admitted.append(now)
        return None

    def _authenticate(self, request: Request) -> None:
        key = request.headers.get("x-api-key", "")
        if not key.strip():
            raise _ApiError(403, "Missing X-API-KEY in headers")
        if key != self.api_key:
            raise _ApiError(401, "Invalid API key")

    # --- inspection and routing errors -------------------------------------------

    async def _list_calls(self, request: Request) -> Response:
        return JSONResponse(self.calls)

    async def _list_campaigns(self, request: Request) -> Response:
        return JSONResponse(self.campaigns)

    async def _show_stats(self, request: Request) -> Response:
        return JSONResponse(dict(sorted(self.stats.items())))

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error_response(exc.status_code, exc.detail, exc.headers)


def create_app(
    *,
    api_key: str = "sandbox-key",
    agents: Iterable[str] = ("demo-agent",),
    faults: Faults = Faults(),  # noqa: B008 - frozen, so sharing the default is safe
    clock: Callable[[], datetime] = _utc_now,
) -> Starlette:
    """The ASGI app of a fresh :class:`Sandbox`."""
    return Sandbox(api_key=api_key, agents=agents, faults=faults, clock=clock).app


class SandboxTransport(httpx.AsyncBaseTransport):
    """In-process transport for ``run --sandbox``.

    Wraps ``httpx.ASGITransport(app=sandbox.app)``; a dropped connection surfaces
    as ``httpx.RemoteProtocolError("Server disconnected without sending a
    response.")``, exactly what httpx raises when a real server closes the
    connection after receiving the request.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._asgi = httpx.ASGITransport(app=sandbox.app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._asgi.handle_async_request(request)
        except _ConnectionDropped:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from None

    async def aclose(self) -> None:
        await self._asgi.aclose()


class _AbortableH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, letting the app close its connection without answering.

    An ASGI app cannot close a socket, and if it returns without a response
    uvicorn answers 500. So each request's scope carries, as an ASGI extension,
    the ``abort`` of its own connection's transport; after the connection is lost
    uvicorn sees a client disconnect and sends nothing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.app

        async def with_abort(scope: Scope, receive: Receive, send: Send) -> None:
            scope.setdefault("extensions", {})[_ABORT_EXTENSION] = self.transport.abort
            await app(scope, receive, send)

        self.app = with_abort

    def connection_made(self, transport: Any) -> None:
        # asyncio sets TCP_NODELAY only on sockets created with proto=IPPROTO_TCP, and the socket
        # serve() binds has proto 0. Without it each answer's body waits for the client's delayed
        # ACK of its headers: 40 ms per request for any client that sends one request at a time.
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


class _Server(uvicorn.Server):
    """A uvicorn server that reports once it is really accepting connections."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


def _loopback_address(host: str) -> str:
    """The address to bind for `host`; ValueError unless it is loopback."""
    if host.lower() == "localhost":
        # "localhost" may resolve to both 127.0.0.1 and ::1, and with port 0 each
        # would get a different port.
        return "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"refusing to serve the sandbox on {host}: it listens only on loopback "
            "(127.0.0.1, ::1 or localhost)"
        )
    return host


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    api_key: str = "sandbox-key",
    agents: Sequence[str] = ("demo-agent",),
    faults: Faults = Faults(),  # noqa: B008 - frozen, so sharing the default is safe
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve a fresh sandbox on a loopback port until interrupted (Ctrl-C, SIGTERM).

    Port 0 picks a free port. Once connections are accepted, calls ``ready`` with
    the bound port or, without ``ready``, prints one line naming the URL, key and
    agents (flushed, so a parent process can read the port from it).
    """
    address = _loopback_address(host)
    sandbox = Sandbox(api_key=api_key, agents=agents, faults=faults)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # Binding here rather than in uvicorn turns "port in use" into an OSError for
    # the caller instead of uvicorn's sys.exit().
    sock = socket.create_server((address, port), family=family)
    bound_port: int = sock.getsockname()[1]
    url_host = f"[{address}]" if family == socket.AF_INET6 else address

    def started() -> None:
        if ready is not None:
            ready(bound_port)
        else:
            print(
                f"CallKaro sandbox on http://{url_host}:{bound_port} "
                f"(api key: {api_key}, agents: {', '.join(sandbox.agents)})",
                flush=True,
            )

    config = uvicorn.Config(
        sandbox.app,
        http=_AbortableH11Protocol,
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    # uvicorn shuts down gracefully on Ctrl-C, then re-raises it; being
    # interrupted is how this function is meant to end.
    with sock, contextlib.suppress(KeyboardInterrupt):
        _Server(config, started).run(sockets=[sock])
