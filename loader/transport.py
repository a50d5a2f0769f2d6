"""The network under the client: aiohttp's connection pool behind httpx's API, errors told apart.

``httpx``' own async pool costs about 9 ms of CPU per request and slows down
as more requests are in flight; ``httpx-aiohttp``'s transport keeps the
``httpx`` API (so ``transport=`` injection, respx and the sandbox's in-process
transport work as before) and spends about 1 ms.

Its exception map is not safe for us: it turns every
``aiohttp.ClientConnectionError``, including a server that hangs up *after*
the request was written, into ``httpx.ConnectTimeout``, which means "never
reached the server". The API has no idempotency key, so retrying such a
request could call a person twice. ``SafeAiohttpTransport`` therefore maps
the original aiohttp error itself:

====================================================  ==========================  ===============
aiohttp raised                                        when                        raised here
====================================================  ==========================  ===============
``ClientConnectorError`` (refused, DNS, TLS, proxy)   before anything was sent    ``ConnectError``
``ConnectionTimeoutError``                            connecting / pool wait      ``ConnectTimeout``
invalid or non-HTTP URL                               before anything was sent    ``UnsupportedProtocol``
``SocketTimeoutError``, other timeouts                sent, no answer in time     ``ReadTimeout``
``ServerDisconnectedError``                           sent, then hung up          ``RemoteProtocolError``
anything else (``ClientOSError``, payload errors...)  sent, or may have been      ``ReadError``
====================================================  ==========================  ===============

Only the first three are safe to retry (``loader.client`` raises
``TransientError``); everything else becomes ``NoAnswerError``, and the row
``uncertain``. aiohttp itself never resends a POST on a broken keep-alive
connection (it only does that for idempotent methods).

A keep-alive connection the server closed while it sat idle (servers and load
balancers do after a few seconds, some after 0.2 s) is the one case where a
"sent" request may provably not have left. aiohttp drops such a connection
from its pool once the event loop has read the server's FIN; but a loop busy
elsewhere (committing the state) has not read it yet, and aiohttp then writes
the request onto the dead connection. The server never reads it, yet all the
client sees is ``ServerDisconnectedError``, which is also what a server that
read the request and then died looks like: the error alone proves nothing, so
it stays ``uncertain``. What can be proven is the state of the socket before
anything is written: ``_FreshConnector`` looks at a pooled connection's socket
(a non-blocking ``MSG_PEEK``) right before handing it out, and a connection on
which the server has already said anything (its FIN, a reset, an unasked-for
byte) is closed and another one used. Only a close that arrives in the
instant between that look and the write is left, and it stays ``uncertain``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

_NOT_SENT: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError,)
_BAD_URL: tuple[type[BaseException], ...] = (
    aiohttp.InvalidURL,
    *(
        cls
        for name in ("NonHttpUrlClientError", "InvalidUrlClientError")
        if (cls := getattr(aiohttp.client_exceptions, name, None)) is not None
    ),
)
#: What aiohttp may raise past httpx-aiohttp's own map (which re-raises what it does not know).
_RAW = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


def map_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx error that says truthfully whether ``request`` may have reached the server.

    ``exc`` is what the transport raised: an aiohttp error, or httpx-aiohttp's
    translation of one (whose ``__cause__`` is the aiohttp error). When the
    cause cannot be found, the request counts as sent.
    """
    cause: BaseException = exc
    if isinstance(exc, httpx.HTTPError) and exc.__cause__ is not None:
        cause = exc.__cause__
    text = str(cause).strip() or type(cause).__name__
    if isinstance(cause, _NOT_SENT):
        return httpx.ConnectError(text, request=request)
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(text, request=request)
    if isinstance(cause, _BAD_URL) or isinstance(exc, httpx.UnsupportedProtocol):
        return httpx.UnsupportedProtocol(text, request=request)
    if isinstance(cause, asyncio.TimeoutError):  # SocketTimeoutError, ServerTimeoutError
        return httpx.ReadTimeout(text, request=request)
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        # Worded as httpx's own pool (and the in-process sandbox) words it, so logs read the same.
        return httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
    return httpx.ReadError(text, request=request)


def closed_by_server(protocol: Any) -> bool:
    """Whether an idle pooled connection's socket shows that the server is done with it.

    An idle HTTP/1.1 connection receives nothing until the next request: any byte waiting
    in the socket (TLS's close_notify, a 408 page) or its end (FIN) or a reset means the
    server closed it. Looking does not consume anything (``MSG_PEEK``) and never waits.
    """
    transport = getattr(protocol, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    try:
        # A duplicate descriptor: asyncio's own socket object does not offer recv().
        with socket.fromfd(sock.fileno(), sock.family, sock.type) as probe:
            probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False  # nothing from the server: still open
    except OSError:
        return True  # reset, or not a socket any more
    return True  # its FIN, or bytes nobody asked for


class _FreshConnector(aiohttp.TCPConnector):
    """aiohttp's connector, never handing out a pooled connection the server already closed."""

    async def _get(self, key: Any, traces: Any) -> Any:
        while (conn := await super()._get(key, traces)) is not None:
            if not closed_by_server(conn.protocol):
                return conn
            conn.close()  # nothing was written to it: the request goes out on another connection
        return None


class _SafeStream(httpx.AsyncByteStream):
    """The response body, with errors while reading it mapped the same way (it was sent)."""

    def __init__(self, stream: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except (httpx.TransportError, *_RAW) as exc:
            raise map_error(exc, self._request) from None

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except (httpx.TransportError, *_RAW) as exc:
            raise map_error(exc, self._request) from None


class SafeAiohttpTransport(AiohttpTransport):
    """``httpx_aiohttp.AiohttpTransport`` that never calls a sent request "not sent", and never
    sends one on a pooled connection the server has already closed."""

    def get_client(self) -> aiohttp.ClientSession:
        if self.client is not None:
            return super().get_client()
        limit = self.limits.max_connections
        connector = _FreshConnector(
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
            local_addr=(self.local_address, 0) if self.local_address else None,
            limit=0 if limit is None else limit,  # aiohttp's 0 is httpx's None: no limit
        )
        return aiohttp.ClientSession(connector=connector)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except (httpx.TransportError, *_RAW) as exc:
            raise map_error(exc, request) from None
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _SafeStream(response.stream, request)
        return response


def network_transport(*, max_connections: int, keepalive_expiry: float = 5.0) -> httpx.AsyncBaseTransport:
    """The transport for the real network: aiohttp's pool, sized for the requests in flight."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
    )
    return SafeAiohttpTransport(limits=limits)
