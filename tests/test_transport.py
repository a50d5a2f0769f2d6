"""The network transport tells "never reached the server" from "sent, no answer", against a real server.

httpx-aiohttp maps every aiohttp connection error, including a server that
hangs up after reading the request, to ``httpx.ConnectTimeout`` ("not sent").
These tests hold ``loader.transport`` to the truth with the sandbox on a real
loopback port: a dropped call is ``uncertain`` and recorded exactly once, a
closed port is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from sandbox_process import running_sandbox

from loader.client import CallKaroClient
from loader.errors import NoAnswerError, TransientError
from loader.secrets import ApiKey
from loader.send import RetryPolicy, send_calls
from loader.state import RunState
from loader.transport import SafeAiohttpTransport, map_error

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)
KEY = ApiKey("sandbox-key")


@contextlib.contextmanager
def sandbox_on_a_port(*flags: str) -> Iterator[str]:
    """``callkaro-loader sandbox --port 0 *flags``; yields its URL."""
    with running_sandbox(*flags) as server:
        yield server.url


def recorded_numbers(url: str) -> Counter[str]:
    calls = httpx.get(f"{url}/_sandbox/calls", timeout=10).json()
    return Counter(call["body"]["to_number"] for call in calls)


def bodies(count: int) -> dict[int, dict[str, Any]]:
    return {row: {"to_number": f"+9198{row:08d}", "agent_id": "demo-agent"} for row in range(2, 2 + count)}


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def send_all(url: str, tmp_path: Path, rows: dict[int, dict[str, Any]]) -> RunState:
    state = RunState(tmp_path / "leads.results.csv")
    state.open()
    state.add_pending(rows)

    async def main() -> None:
        async with CallKaroClient(api_key=KEY, base_url=url, max_connections=8) as client:
            await send_calls(client, rows, state, concurrency=8, retry=FAST)

    asyncio.run(main())
    return state


def test_client_without_a_transport_sends_through_aiohttp() -> None:
    client = CallKaroClient(api_key=KEY, base_url="http://127.0.0.1:9")
    assert isinstance(client._http._transport, SafeAiohttpTransport)


def test_calls_through_the_network_transport_are_scheduled_exactly_once(tmp_path: Path) -> None:
    rows = bodies(40)
    with sandbox_on_a_port() as url:
        state = send_all(url, tmp_path, rows)
        recorded = recorded_numbers(url)
    outcome = state.rows()
    state.close()
    assert {r.status for r in outcome.values()} == {"scheduled"}
    assert recorded == Counter({body["to_number"]: 1 for body in rows.values()})


def test_server_hanging_up_after_the_request_makes_the_row_uncertain_and_it_is_never_resent(
    tmp_path: Path,
) -> None:
    rows = bodies(12)
    with sandbox_on_a_port("--drop-rate", "1.0") as url:
        state = send_all(url, tmp_path, rows)
        recorded = recorded_numbers(url)
    outcome = state.rows()
    state.close()
    assert {r.status for r in outcome.values()} == {"uncertain"}
    assert all(r.attempts == 1 for r in outcome.values())
    assert all("not resent" in (r.message or "") for r in outcome.values())
    # The sandbox recorded every call once: retrying would have called these people twice.
    assert recorded == Counter({body["to_number"]: 1 for body in rows.values()})


def test_one_dropped_request_raises_no_answer_not_a_retryable_error() -> None:
    async def main() -> None:
        async with CallKaroClient(api_key=KEY, base_url=url) as client:
            with pytest.raises(NoAnswerError, match="the connection broke before the API answered"):
                await client.schedule_call(bodies(1)[2])

    with sandbox_on_a_port("--drop-rate", "1.0") as url:
        asyncio.run(main())


def test_closed_port_is_retried_as_never_sent_and_then_left_pending_as_an_outage(tmp_path: Path) -> None:
    rows = bodies(3)
    state = send_all(f"http://127.0.0.1:{closed_port()}", tmp_path, rows)
    outcome = state.rows()
    state.close()
    assert {r.status for r in outcome.values()} == {"pending"}
    # The first to give up found the outage; the others stopped retrying then.
    assert max(r.attempts for r in outcome.values()) == FAST.attempts
    for r in outcome.values():
        assert (r.message or "").startswith("the API was unavailable (could not reach the API (ConnectError")


def test_closed_port_raises_a_transient_error() -> None:
    async def main() -> None:
        async with CallKaroClient(api_key=KEY, base_url=f"http://127.0.0.1:{closed_port()}") as client:
            with pytest.raises(TransientError, match=r"could not reach the API \(ConnectError"):
                await client.schedule_call(bodies(1)[2])

    asyncio.run(main())


REQUEST = httpx.Request("POST", "http://127.0.0.1/call/outbound")


def _connector_error() -> aiohttp.ClientConnectorError:
    key: Any = type("Key", (), {"host": "127.0.0.1", "port": 1, "ssl": None})()
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        pytest.param(_connector_error(), httpx.ConnectError, id="refused"),
        pytest.param(aiohttp.ConnectionTimeoutError("slow"), httpx.ConnectTimeout, id="connect timeout"),
        pytest.param(aiohttp.InvalidURL("x"), httpx.UnsupportedProtocol, id="bad url"),
        pytest.param(aiohttp.SocketTimeoutError("slow"), httpx.ReadTimeout, id="read timeout"),
        pytest.param(aiohttp.ServerTimeoutError("slow"), httpx.ReadTimeout, id="server timeout"),
        pytest.param(aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError, id="disconnected"),
        pytest.param(aiohttp.ClientOSError(104, "reset"), httpx.ReadError, id="reset"),
        pytest.param(aiohttp.ClientPayloadError("cut"), httpx.ReadError, id="payload"),
        pytest.param(ConnectionResetError(104, "reset"), httpx.ReadError, id="os error"),
    ],
)
def test_each_aiohttp_error_says_whether_the_request_was_sent(
    raised: BaseException, expected: type[httpx.TransportError]
) -> None:
    # As raised by aiohttp, and as httpx-aiohttp re-raises it (always "ConnectTimeout", cause kept).
    wrapped = httpx.ConnectTimeout("mapped")
    wrapped.__cause__ = raised
    for exc in (raised, wrapped):
        mapped = map_error(exc, REQUEST)
        assert type(mapped) is expected
        assert mapped.request is REQUEST


def test_an_error_whose_cause_is_unknown_counts_as_sent() -> None:
    assert type(map_error(httpx.ConnectTimeout("no cause"), REQUEST)) is httpx.ReadError


# --- a keep-alive connection the server closed while it sat idle ---------------------------------


class IdleClosingServer:
    """A small HTTP/1.1 server that keeps connections alive, then closes one left idle 0.2 s
    after its answer, as many servers and load balancers do. It counts what really arrived."""

    IDLE = 0.2

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed_idle = threading.Event()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    def __enter__(self) -> IdleClosingServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.IDLE)
                except (TimeoutError, asyncio.IncompleteReadError):
                    return
                length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
                self.requests.append(await reader.readexactly(length))
                answer = json.dumps({"status": "success", "call_id": f"c{len(self.requests)}"}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self.closed_idle.set()


def test_a_request_is_never_written_to_a_keep_alive_connection_the_server_already_closed() -> None:
    body = bodies(1)[2]
    with IdleClosingServer() as server:

        async def main() -> list[str]:
            async with CallKaroClient(api_key=KEY, base_url=f"http://127.0.0.1:{server.port}") as client:
                ids = [await client.schedule_call(body)]
                # Hold this event loop (on purpose) until the server has closed the idle connection:
                # the loop cannot see the close, as when it is busy committing the state.
                assert server.closed_idle.wait(10)
                ids.append(await client.schedule_call(body))
                return ids

        ids = asyncio.run(main())
    # The second request went out on a new connection and was answered, not lost on the dead one.
    assert ids == ["c1", "c2"]
    assert len(server.requests) == 2
    assert server.connections == 2
