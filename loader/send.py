"""Stage 5b: send every body, a bounded number at a time, and record each outcome.

For each row: mark it ``sending`` (committed), post it, record the answer
(committed). Those commits are grouped (``loader.state.GroupCommit``): the
rows leaving, and the answers arriving, in one turn of the event loop share
one transaction, so bookkeeping costs little however many are in flight.

Requests that never reached the server and answers that prove nothing was
scheduled (429, 503, the API's own 5xx error: see ``loader.client``) are
retried with exponential back-off and full jitter, honouring ``Retry-After``,
for ``RetryPolicy.attempts`` tries or, with ``--retry-for``, that long;
anything that may have reached the server without an answer becomes
``uncertain`` and is never resent here. A refusal of the run itself (401/403,
unknown agent or campaign) stops new requests, lets those in flight finish,
and is raised once the workers are done.

An outage is its own outcome: when a row gives up retrying and no request of
the run was answered by the API since that row's first try, or when
``GATEWAY_STREAK`` requests in a row were answered by a gateway, the API is
unavailable. Sending stops, and every row not scheduled stays ``pending``
with ``UNAVAILABLE`` as its message (exit 4: run the same command later).

A row whose ``schedule_at`` has passed by the moment its request would leave
is not sent (``invalid``, ``EXPIRED``): the API dials a past time at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from loader.client import CallKaroClient
from loader.errors import (
    ApiRefusedError,
    KeyEchoedError,
    NoAnswerError,
    NotFoundError,
    RejectedError,
    StateError,
    TransientError,
)
from loader.pacing import Pacer
from loader.state import GroupCommit, RowWrite, RunState

Sleep = Callable[[float], Awaitable[None]]
#: Asked, a few rows at a time and right before they are sent, which rows may go: returns the
#: refused ones, each with why (they become ``suppressed``). The call ledger claims numbers this way.
Admit = Callable[[list[int]], Mapping[int, str]]
T = TypeVar("T")
#: A 404 naming the run's agent or campaign is about the run, not the row.
_RUN_NOT_FOUND = re.compile(r"\b(agent|campaign|batch)\b", re.IGNORECASE)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a request that is safe to retry."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    #: ``--retry-for``: retry for this many seconds from the first try instead of ``attempts`` times
    #: (a retry whose back-off would end past it is not made).
    retry_for: float | None = None

    def give_up(self) -> stop_base:
        if self.retry_for is not None:
            return stop_before_delay(self.retry_for)
        return stop_after_attempt(self.attempts)


#: Answers in a row from a gateway (502, 504, a 5xx not from the API) after which the API counts as
#: unavailable: each may have scheduled its call, so sending on would only make more rows uncertain.
GATEWAY_STREAK = 5

#: A row whose request never left because the API was unavailable (``{reason}``: the last error).
UNAVAILABLE = "the API was unavailable ({reason}); run the same command again later"


class Progress(Protocol):
    def advance(self, status: str) -> None: ...


class Events(Protocol):
    """Where row outcomes and retries are reported (the ``--log-file``, or nothing)."""

    def outcome(
        self, source_row: int, status: str, *, call_id: str | None, message: str | None, attempts: int
    ) -> None: ...

    def retry(self, source_row: int, *, attempt: int, delay: float, reason: str) -> None: ...


class _NoEvents:
    def outcome(
        self, source_row: int, status: str, *, call_id: str | None, message: str | None, attempts: int
    ) -> None:
        pass

    def retry(self, source_row: int, *, attempt: int, delay: float, reason: str) -> None:
        pass


@dataclass
class SendReport:
    """What the send stage did; the row outcomes themselves are in the state."""

    sent: int = 0
    retries: int = 0
    slowdowns: int = 0
    peak_in_flight: int = 0
    refused: ApiRefusedError | None = None
    #: Why the API counts as unavailable (the last error), when it did: rows not sent are ``pending``.
    unavailable: str | None = None
    stopped: bool = False
    statuses: dict[str, int] = field(default_factory=dict)
    #: CPU time this process spent in the send loop (all threads), and state transactions committed.
    cpu_seconds: float = 0.0
    transactions: int = 0

    @property
    def cpu_ms_per_request(self) -> float | None:
        return 1000 * self.cpu_seconds / self.sent if self.sent else None


class _WaitWithRetryAfter:
    """Full-jitter exponential back-off, but never shorter than the server's ``Retry-After``."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._jitter = wait_random_exponential(multiplier=policy.base_delay, max=policy.max_delay)

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = float(self._jitter(retry_state))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return delay


class _StopWhenSet(stop_base):
    """Give up retrying once the run is stopping."""

    def __init__(self, event: asyncio.Event) -> None:
        self._event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._event.is_set()


def is_transient(exc: BaseException) -> bool:
    """Safe to send again: it never reached the server, or the server said it did nothing."""
    return isinstance(exc, TransientError)


def retrying(
    policy: RetryPolicy,
    *,
    stop: asyncio.Event,
    sleep: Sleep,
    before_sleep: Callable[[RetryCallState], None] | None = None,
    retry_on: Callable[[BaseException], bool] = is_transient,
) -> AsyncRetrying:
    """Retry what ``retry_on`` allows (``TransientError``), with back-off, until the policy gives up
    or the run stops."""
    return AsyncRetrying(
        retry=retry_if_exception(retry_on),
        stop=stop_any(policy.give_up(), _StopWhenSet(stop)),
        wait=_WaitWithRetryAfter(policy),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


class Stopped(Exception):
    """The run was stopping before this request could be sent."""


class Expired(Exception):
    """The row's ``schedule_at`` passed before its request could leave; the message says so."""


#: What an expired row's ``callkaro_message`` says.
EXPIRED = (
    "schedule_at {at} passed during the run, before this row could be sent; "
    "not sent (give it a later time and run again)"
)
#: Asked right before each request leaves: why the body must not be sent any more, or None.
Expiry = Callable[[Mapping[str, Any]], "str | None"]


def expiry_check(timezone: dt.tzinfo, clock: Callable[[], dt.datetime]) -> Expiry:
    """Refuse a body whose ``schedule_at`` (wall time in ``timezone``, the API's frame) is before
    ``clock()``'s now: the API would dial it at once, not when the row asked."""

    def expired(body: Mapping[str, Any]) -> str | None:
        at = body.get("schedule_at")
        if not isinstance(at, str):
            return None
        now = clock().astimezone(timezone).replace(tzinfo=None)
        return EXPIRED.format(at=at) if dt.datetime.fromisoformat(at) < now else None

    return expired


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    stop: asyncio.Event,
    sleep: Sleep,
    before_sleep: Callable[[RetryCallState], None] | None = None,
    retry_on: Callable[[BaseException], bool] = is_transient,
) -> T:
    """``await call()``, retrying ``TransientError`` (or what ``retry_on`` allows) per ``policy``.

    A stop request during a back-off ends the wait and re-raises the last
    error instead of sending once more: a stopping run starts no request.
    """
    last: BaseException | None = None

    def remember(retry_state: RetryCallState) -> None:
        nonlocal last
        outcome = retry_state.outcome
        last = outcome.exception() if outcome is not None else None
        if before_sleep is not None:
            before_sleep(retry_state)

    async for attempt in retrying(policy, stop=stop, sleep=sleep, before_sleep=remember, retry_on=retry_on):
        if stop.is_set():
            raise last if last is not None else Stopped()
        with attempt:
            result = await call()
    return result


def _leave_pending(
    state: RunState, bodies: Mapping[int, Any], gave_up: list[int], message: str, events: Events
) -> None:
    """After an outage: every row not sent, and every row that gave up retrying before the outage
    was known (none of them was scheduled), is ``pending`` with ``message``."""
    recorded = state.rows()
    rows = [
        row for row in bodies if row in gave_up or (row in recorded and recorded[row].status == "pending")
    ]
    state.apply([RowWrite(row, "pending", None, message) for row in rows])
    for row in rows:
        events.outcome(row, "pending", call_id=None, message=message, attempts=0)


def stoppable_sleep(stop: asyncio.Event) -> Sleep:
    """A sleep that a stop request cuts short instead of waiting it out."""

    async def pause(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)

    return pause


async def send_calls(
    client: CallKaroClient,
    bodies: dict[int, dict[str, Any]],
    state: RunState,
    *,
    concurrency: int = 8,
    retry: RetryPolicy | None = None,
    progress: Progress | None = None,
    events: Events | None = None,
    stop: asyncio.Event | None = None,
    sleep: Sleep | None = None,
    grace: float = 5.0,
    rate_limit: float | None = None,
    pacer: Pacer | None = None,
    admit: Admit | None = None,
    expiry: Expiry | None = None,
) -> SendReport:
    """Send ``bodies`` (row -> body); every outcome is committed to ``state`` as it arrives.

    At most ``concurrency`` requests are in flight, fewer after 429s (see
    ``loader.pacing``), and at most ``rate_limit`` start per second. ``admit``,
    when given, is asked about the next rows just before they are sent, in
    chunks of twice ``concurrency`` (at least 16); rows it refuses become ``suppressed``.
    If it raises, or a row's outcome cannot be committed to ``state``, sending
    stops as on a stop request and the error is raised once the requests in
    flight are done (a ``sqlite3`` error as ``StateError``). ``expiry``, when
    given, is asked right before each request leaves; a body it refuses is not
    sent and its row becomes ``invalid`` with the reason.
    """
    cpu_started = time.process_time()
    retry = retry or RetryPolicy()
    pacer = pacer or Pacer(concurrency, rate_limit=rate_limit)
    writer = GroupCommit(state)
    stop = stop or asyncio.Event()
    events = events or _NoEvents()
    report = SendReport()
    queue: Iterator[tuple[int, dict[str, Any], str | None]] = (
        (row, body, None) for row, body in bodies.items()
    )
    admit_failed: list[BaseException] = []
    #: A worker that could not record a row (the state cannot be written): the run stops, then says so.
    worker_failed: list[BaseException] = []
    #: Answers from the API itself (not "try later"), gateway answers since the last of them, and
    #: rows that gave up retrying: how an outage is told from a bad moment.
    answers = 0
    gateway_streak = 0
    gave_up: list[int] = []

    pause = sleep or stoppable_sleep(stop)

    async def record(
        row: int, status: str, *, call_id: str | None = None, message: str | None = None, attempts: int
    ) -> None:
        await writer.write(RowWrite(row, status, call_id, message))
        report.statuses[status] = report.statuses.get(status, 0) + 1
        events.outcome(row, status, call_id=call_id, message=message, attempts=attempts)
        if progress is not None:
            progress.advance(status)

    def unavailable(reason: str) -> None:
        """No answer from the API for as long as a row kept retrying: stop, leave the rest pending."""
        if report.unavailable is None:
            report.unavailable = reason
        stop.set()

    async def send_one(row: int, body: dict[str, Any]) -> None:
        nonlocal answers
        attempts = 0
        answers_before = answers

        async def attempt() -> str:
            nonlocal attempts, answers, gateway_streak
            async with pacer.slot():
                if stop.is_set():
                    raise Stopped()
                why = expiry(body) if expiry is not None else None
                if why is not None:
                    raise Expired(why)
                attempts += 1
                # Committed (with the other requests leaving now) before this one leaves.
                await writer.write(RowWrite(row, "sending"))
                report.sent += 1
                try:
                    call_id = await client.schedule_call(body)
                except TransientError as exc:
                    if exc.status_code == 429:
                        await pacer.slow_down()
                    raise
                except (RejectedError, NoAnswerError) as exc:
                    if isinstance(exc, RejectedError) or (exc.status_code or 500) < 500:
                        answers, gateway_streak = answers + 1, 0  # the API itself answered
                    elif exc.status_code is not None:
                        gateway_streak += 1
                        if gateway_streak >= GATEWAY_STREAK:
                            streak = f"{gateway_streak} requests in a row answered by a gateway"
                            unavailable(f"{streak}, not the API: {exc}")
                    raise
                answers, gateway_streak = answers + 1, 0
                await pacer.succeeded()
                return call_id

        def before_sleep(retry_state: RetryCallState) -> None:
            outcome = retry_state.outcome
            exc = outcome.exception() if outcome is not None else None
            reason = str(exc) if exc else "retry"
            delay = retry_state.upcoming_sleep
            # Known not scheduled (the server said so, or never saw it): back to pending, at once
            # (this runs before the back-off sleep; the row's own writes are all committed by now).
            state.mark(row, "pending", message=f"retrying after: {reason}")
            report.retries += 1
            events.retry(row, attempt=retry_state.attempt_number, delay=delay, reason=reason)

        try:
            call_id = await with_retries(attempt, retry, stop=stop, sleep=pause, before_sleep=before_sleep)
        except Stopped:
            return  # never sent: the row stays pending
        except Expired as exc:
            await record(row, "invalid", message=str(exc), attempts=attempts)
        except TransientError as exc:
            tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
            if report.unavailable is None and not stop.is_set() and answers == answers_before:
                unavailable(str(exc))
            if report.unavailable is not None:
                await record(
                    row, "pending", message=UNAVAILABLE.format(reason=report.unavailable), attempts=attempts
                )
            elif stop.is_set() and (retry.retry_for is not None or attempts < retry.attempts):
                await record(
                    row,
                    "pending",
                    message=f"not retried because the run was stopped: {exc}",
                    attempts=attempts,
                )
            else:
                gave_up.append(row)
                await record(row, "failed", message=f"{exc} (gave up after {tries})", attempts=attempts)
        except NoAnswerError as exc:
            await record(
                row,
                "uncertain",
                message=f"{exc}; not resent, as the call may have been scheduled",
                attempts=attempts,
            )
        except RejectedError as exc:
            await record(row, "failed", message=str(exc), attempts=attempts)
            if exc.status_code == 404 and _RUN_NOT_FOUND.search(str(exc)):
                refuse(
                    NotFoundError(
                        f"the API does not know this run's agent or campaign ({exc})",
                        status_code=404,
                        hint="Check --agent-id (and --batch-id) against your CallKaro dashboard.",
                    )
                )
        except KeyEchoedError as exc:
            # The API said the call is scheduled, but its id is the key: never resent, never stored.
            await record(row, "uncertain", message=str(exc), attempts=attempts)
            refuse(exc)
        except ApiRefusedError as exc:
            # The key was refused: this request scheduled nothing.
            await record(row, "pending", message=str(exc), attempts=attempts)
            refuse(exc)
        else:
            await record(row, "scheduled", call_id=call_id, message=None, attempts=attempts)

    def admitted(
        items: Iterator[tuple[int, dict[str, Any], str | None]], size: int
    ) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        """Rows in chunks past ``admit``; a refused row comes with its reason and is not sent."""
        assert admit is not None
        while not stop.is_set():
            chunk = list(itertools.islice(items, size))
            if not chunk:
                return
            try:
                refused = admit([row for row, _, _ in chunk])
            except Exception as exc:
                admit_failed.append(exc)
                stop.set()
                return
            for row, body, _ in chunk:
                yield row, body, refused.get(row)

    if admit is not None:
        queue = admitted(queue, max(2 * concurrency, 16))

    def refuse(exc: ApiRefusedError) -> None:
        if report.refused is None:
            report.refused = exc
        stop.set()

    async def worker() -> None:
        try:
            for row, body, refused in queue:
                if refused is not None:
                    await record(row, "suppressed", message=refused, attempts=0)
                    continue
                if stop.is_set():
                    return
                await send_one(row, body)
        except Exception as exc:
            # Stop as on Ctrl-C (the others' requests in flight get their grace), and say why at the end.
            worker_failed.append(exc)
            stop.set()

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(concurrency, len(bodies))))]
    all_done: asyncio.Future[Any] = asyncio.gather(*workers)
    stopping: asyncio.Future[Any] = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({all_done, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not all_done.done():
            # Stopped: no new requests start; those in flight get a few seconds to be answered.
            await asyncio.wait({all_done}, timeout=grace)
    finally:
        stopping.cancel()
        for task in workers:
            task.cancel()
        await asyncio.gather(all_done, stopping, return_exceptions=True)
    # Rows still marked ``sending`` were cut off in flight; results report them ``uncertain``.
    report.cpu_seconds = time.process_time() - cpu_started
    report.transactions = writer.transactions
    report.slowdowns = pacer.slowdowns
    report.peak_in_flight = pacer.peak_in_flight
    report.stopped = stop.is_set() and report.refused is None and report.unavailable is None
    if report.unavailable is not None and not worker_failed:
        _leave_pending(state, bodies, gave_up, UNAVAILABLE.format(reason=report.unavailable), events)
    if admit_failed:
        raise admit_failed[0]
    if worker_failed:
        failed = worker_failed[0]
        if isinstance(failed, sqlite3.Error):
            raise StateError(
                f"{state.path} cannot be written ({failed}); sending stopped",
                hint="Another program may hold it locked, or the disk is full; run the same command "
                "again to resume.",
            ) from failed
        raise failed
    return report
