"""Stage 5b: send every body, a bounded number at a time, and record each outcome.

For each row: mark it ``sending`` (committed), post it, record the answer
(committed). Those commits are grouped (``loader.state.GroupCommit``): the
rows leaving, and the answers arriving, in one turn of the event loop share
one transaction, so bookkeeping costs little however many are in flight.

Requests that never reached the server and answers that mean "try later"
(429, 500, 502, 503, 504) are retried with exponential back-off and full
jitter, honouring ``Retry-After``; anything that may have reached the
server without an answer becomes ``uncertain`` and is never resent here.
A refusal of the run itself (401/403, unknown agent or campaign) stops new
requests, lets those in flight finish, and is raised once the workers are
done.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
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
#: refused ones, each with why (they become ``suppressed``). ``--history`` claims numbers this way.
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


def retrying(
    policy: RetryPolicy,
    *,
    stop: asyncio.Event,
    sleep: Sleep,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """Retry ``TransientError`` only, with back-off, until attempts run out or the run stops."""
    return AsyncRetrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_any(stop_after_attempt(policy.attempts), _StopWhenSet(stop)),
        wait=_WaitWithRetryAfter(policy),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


class Stopped(Exception):
    """The run was stopping before this request could be sent."""


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    stop: asyncio.Event,
    sleep: Sleep,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> T:
    """``await call()``, retrying ``TransientError`` per ``policy``.

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

    async for attempt in retrying(policy, stop=stop, sleep=sleep, before_sleep=remember):
        if stop.is_set():
            raise last if last is not None else Stopped()
        with attempt:
            result = await call()
    return result


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
) -> SendReport:
    """Send ``bodies`` (row -> body); every outcome is committed to ``state`` as it arrives.

    At most ``concurrency`` requests are in flight, fewer after 429s (see
    ``loader.pacing``), and at most ``rate_limit`` start per second. ``admit``,
    when given, is asked about the next rows just before they are sent, in
    chunks of twice ``concurrency`` (at least 16); rows it refuses become ``suppressed``.
    If it raises, or a row's outcome cannot be committed to ``state``, sending
    stops as on a stop request and the error is raised once the requests in
    flight are done (a ``sqlite3`` error as ``StateError``).
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

    pause = sleep or stoppable_sleep(stop)

    async def record(
        row: int, status: str, *, call_id: str | None = None, message: str | None = None, attempts: int
    ) -> None:
        await writer.write(RowWrite(row, status, call_id, message))
        report.statuses[status] = report.statuses.get(status, 0) + 1
        events.outcome(row, status, call_id=call_id, message=message, attempts=attempts)
        if progress is not None:
            progress.advance(status)

    async def send_one(row: int, body: dict[str, Any]) -> None:
        attempts = 0

        async def attempt() -> str:
            nonlocal attempts
            async with pacer.slot():
                if stop.is_set():
                    raise Stopped()
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
        except TransientError as exc:
            tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
            if stop.is_set() and attempts < retry.attempts:
                await record(
                    row,
                    "pending",
                    message=f"not retried because the run was stopped: {exc}",
                    attempts=attempts,
                )
            else:
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
    report.stopped = stop.is_set() and report.refused is None
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
