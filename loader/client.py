"""Stage 5a: talk to the CallKaro API: one method per endpoint, answers mapped to errors.

Every answer that is not a success becomes an exception from
``loader.errors``, chosen by what the caller may safely do next:

==========================================  =======================  ==========================
what happened                               raised                   the row becomes
==========================================  =======================  ==========================
200 with an id                              (returns the id)         ``scheduled``
2xx saying ``error``                        ``RejectedError``        ``failed``
2xx without an id, or another status        ``NoAnswerError``        ``uncertain``
400, 404, other 4xx, 501                    ``RejectedError``        ``failed``
401, 403                                    ``AuthError``            the run stops (exit 3)
429, 500, 502, 503, 504                     ``TransientError``       retried, then ``failed``
connection refused, DNS, connect timeout    ``TransientError``       retried, then ``failed``
sent, then timeout / reset / disconnect     ``NoAnswerError``        ``uncertain``
==========================================  =======================  ==========================

The API has no idempotency key, so a request that may have reached the
server is never classed as safe to retry (``loader.transport`` keeps the
network's errors honest about that).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import json
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from loader.errors import (
    AuthError,
    NoAnswerError,
    RejectedError,
    TransientError,
    UsageError,
)
from loader.options import DEFAULT_BASE_URL
from loader.secrets import ApiKey
from loader.transport import network_transport

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
#: ``Retry-After`` beyond this is treated as this: a run should not sleep for an hour.
MAX_RETRY_AFTER = 60.0

# Errors raised before any byte of the request could reach the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def check_base_url(base_url: str) -> str:
    """The base URL without a trailing slash; refuse one the key must not be sent to.

    Plain ``http://`` is allowed only to loopback addresses (the sandbox):
    anywhere else it would send the key across the network in clear text.
    """
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--base-url {base_url!r} is not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise UsageError(
            f"--base-url {base_url!r} uses plain http to a host that is not this machine, "
            "which would send the API key unencrypted",
            hint="Use https://, or http://127.0.0.1:PORT for a local sandbox.",
        )
    return base_url.strip().rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class CallKaroClient:
    """An async client for the two endpoints the loader uses.

    ``transport`` replaces the network: tests pass respx or the sandbox's
    in-process transport. Without one, requests go through aiohttp's pool
    (``loader.transport``), whose errors say truthfully whether a request was
    sent. The key is sent as ``X-API-KEY`` and never shown.
    """

    def __init__(
        self,
        *,
        api_key: ApiKey | None,
        base_url: str = DEFAULT_BASE_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        max_connections: int = 8,
    ) -> None:
        self.base_url = check_base_url(base_url)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self._api_key = api_key
        if api_key is not None:
            headers["X-API-KEY"] = api_key.reveal()
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        if transport is None:
            transport = network_transport(max_connections=max_connections)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=limits,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"CallKaroClient(base_url={self.base_url!r})"

    async def __aenter__(self) -> CallKaroClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def create_campaign(self, *, name: str, agent_id: str) -> str:
        """Create a campaign; return its ``batch_id``."""
        answer = await self._post("/call/campaign", {"name": name, "agent_id": agent_id})
        return self._id_from(answer, "batch_id")

    async def schedule_call(self, body: dict[str, Any]) -> str:
        """Schedule one call; return its ``call_id``."""
        answer = await self._post("/call/outbound", body)
        return self._id_from(answer, "call_id")

    @staticmethod
    def _id_from(answer: dict[str, Any], key: str) -> str:
        value = answer.get(key)
        if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
            # The API said yes but gave no id: the call may exist, so it must not be resent.
            raise NoAnswerError(f"the API accepted the request but sent no {key}", status_code=200)
        return str(value)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        content = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        key = self._api_key
        try:
            response = await self._http.post(path, content=content)
        except _NOT_SENT as exc:
            raise TransientError(f"could not reach the API ({_describe(exc, key)})") from None
        except httpx.TimeoutException as exc:
            raise NoAnswerError(f"no answer from the API ({_describe(exc, key)})") from None
        except httpx.TransportError as exc:
            raise NoAnswerError(
                f"the connection broke before the API answered ({_describe(exc, key)})"
            ) from None
        return _read_answer(response, key)


def _redact(text: str, api_key: ApiKey | None) -> str:
    """``text`` without the key: a server that echoes it back must not make the loader print it."""
    secret = api_key.reveal() if api_key is not None else ""
    return text.replace(secret, "********") if secret else text


def _describe(exc: Exception, api_key: ApiKey | None = None) -> str:
    text = _redact(str(exc).strip(), api_key)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_answer(response: httpx.Response, api_key: ApiKey | None = None) -> dict[str, Any]:
    status = response.status_code
    try:
        payload = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    answer = payload if isinstance(payload, dict) else {}
    message = _redact(str(answer.get("message") or "").strip() or _short_text(response), api_key)
    if 200 <= status < 300:
        said = answer.get("status", "success")
        if said == "success":
            return answer  # the id is checked by the caller: none means the call may exist
        if said == "error":
            raise RejectedError(f"the API refused the call: {message}", status_code=status)
        # Neither the documented success nor an error ("queued"?): the call may exist, so it
        # must not be sent again by itself, as a failed row would be.
        told = _redact(str(answer.get("message") or "").strip(), api_key)
        detail = f"status {said!r}" + (f": {told}" if told else "")
        raise NoAnswerError(
            f"the API answered HTTP {status} ({detail}), not the documented success", status_code=status
        )
    text = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if status in (401, 403):
        raise AuthError(
            f"the API refused the key ({text})",
            status_code=status,
            hint="Check CALLKARO_API_KEY (or .env) holds the key from your CallKaro dashboard.",
        )
    if status in RETRYABLE_STATUS:
        raise TransientError(
            text, status_code=status, retry_after=parse_retry_after(response.headers.get("Retry-After"))
        )
    raise RejectedError(text, status_code=status)


def _short_text(response: httpx.Response) -> str:
    try:
        text = response.text.strip()
    except UnicodeDecodeError:
        return ""
    return text[:200] if text and not text.startswith("<") else ""
