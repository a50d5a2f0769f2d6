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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

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
    """``httpx_aiohttp.AiohttpTransport`` that never calls a sent request "not sent"."""

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
