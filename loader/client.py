"""Stage 5a: talk to the CallKaro API: one method per endpoint, answers mapped to errors.

Every answer that is not a success becomes an exception from
``loader.errors``, chosen by what the caller may safely do next:

===============================================  ===================  ==========================
what happened                                    raised               the row becomes
===============================================  ===================  ==========================
200 with an id                                   (returns the id)     ``scheduled``
2xx saying ``error``                             ``RejectedError``    ``failed``
2xx without an id, or another status             ``NoAnswerError``    ``uncertain``
400, 404, other 4xx                              ``RejectedError``    ``failed``
401, 403                                         ``AuthError``        the run stops (exit 3)
429; 503 (any body)                              ``TransientError``   retried, then ``failed``
other 5xx with the API's own JSON error          ``TransientError``   retried, then ``failed``
502, 504; other 5xx without it                   ``NoAnswerError``    ``uncertain``
connection refused, DNS, connect timeout         ``TransientError``   retried, then ``failed``
sent, then timeout / reset / disconnect          ``NoAnswerError``    ``uncertain``
===============================================  ===================  ==========================

The API has no idempotency key, so a request that may have reached the
server is never classed as safe to retry (``loader.transport`` keeps the
network's errors honest about that). An answer is safe to retry only when it
proves nothing was scheduled: 429 and 503 say "not now" without doing the
work (a load balancer answers 503 when no server is there to take the
request), and the API's own error (:func:`is_api_error`) says the API itself
failed. A 502 or 504, or any other 5xx, comes from a gateway in front of the
API, which may have passed the request on before giving up on the answer: the
call may exist, exactly as when the connection drops.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from types import TracebackType
from typing import Any

import httpx

from loader.errors import (
    AuthError,
    KeyEchoedError,
    NoAnswerError,
    RejectedError,
    TransientError,
)
from loader.options import DEFAULT_BASE_URL, check_base_url
from loader.secrets import ApiKey, mask
from loader.transport import network_transport

#: Answers that say "not now" without doing the work, whoever gives them.
RETRYABLE_STATUS = frozenset({429, 503})
#: A gateway's answers: it may have passed the request on before it gave up on the answer.
GATEWAY_STATUS = frozenset({502, 504})
#: ``Retry-After`` beyond this is treated as this: a run should not sleep for an hour.
MAX_RETRY_AFTER = 60.0

# Errors raised before any byte of the request could reach the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


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

    def _id_from(self, answer: dict[str, Any], field: str) -> str:
        value = answer.get(field)
        if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
            # The API said yes but gave no id: the call may exist, so it must not be resent.
            raise NoAnswerError(f"the API accepted the request but sent no {field}", status_code=200)
        if self._api_key is not None and self._api_key.found_in(str(value)):
            # An id is stored and printed everywhere: one holding the key is never kept.
            raise KeyEchoedError(
                f"the API sent the API key back as the {field}; the id was not stored and nothing "
                "more is sent",
                field=field,
                hint="Report this to CallKaro, and replace the key if others may have seen their answers.",
            )
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


def _describe(exc: Exception, api_key: ApiKey | None = None) -> str:
    text = mask(str(exc).strip(), api_key)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_answer(response: httpx.Response, api_key: ApiKey | None = None) -> dict[str, Any]:
    status = response.status_code
    try:
        payload = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    answer = payload if isinstance(payload, dict) else {}
    message = mask(_clip(str(answer.get("message") or "")) or _short_text(response), api_key)
    if 200 <= status < 300:
        said = answer.get("status", "success")
        if said == "success":
            return answer  # the id is checked by the caller: none means the call may exist
        if said == "error":
            raise RejectedError(f"the API refused the call: {message}", status_code=status)
        # Neither the documented success nor an error ("queued"?): the call may exist, so it
        # must not be sent again by itself, as a failed row would be.
        told = mask(_clip(str(answer.get("message") or "")), api_key)
        detail = mask(_clip(f"status {said!r}"), api_key) + (f": {told}" if told else "")
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
    if status in RETRYABLE_STATUS or (
        status >= 500 and status not in GATEWAY_STATUS and is_api_error(response)
    ):
        raise TransientError(
            text, status_code=status, retry_after=parse_retry_after(response.headers.get("Retry-After"))
        )
    if status >= 500:
        # Not the API speaking: the request may have reached it, so it must not be sent again.
        raise NoAnswerError(
            f"the API answered {text} (a gateway's answer, not the API's own error)", status_code=status
        )
    raise RejectedError(text, status_code=status)


def is_api_error(response: httpx.Response) -> bool:
    """Whether ``response`` is the API's own documented error: declared JSON, and a JSON object
    ``{"status": "error", "message": "..."}`` (callkaro-api.md, "Errors").

    Load balancers and proxies answer HTML or plain text, or JSON of another shape (``{"message":
    "Internal server error"}``); only the API's own error says the API itself failed the request.
    """
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not (media_type == "application/json" or media_type.endswith("+json")):
        return False
    try:
        payload = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return (
        isinstance(payload, dict)
        and payload.get("status") == "error"
        and isinstance(payload.get("message"), str)
    )


#: The most of an API's message kept: a line a person reads. A broken or hostile server's
#: megabyte would otherwise be copied, for every row, into the results, state, log and summary.
MAX_MESSAGE = 1000


def _clip(text: str) -> str:
    """``text`` stripped, and cut to ``MAX_MESSAGE`` characters with an ellipsis if longer."""
    text = text.strip()
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE].rstrip() + " …"


def _short_text(response: httpx.Response) -> str:
    try:
        text = response.text.strip()
    except UnicodeDecodeError:
        return ""
    return text[:200] if text and not text.startswith("<") else ""
