"""The part of a real run that talks to the API: the campaign, the calls, Ctrl-C.

Imported by ``loader.pipeline`` only when a run sends, so that ``validate``,
``--dry-run``, ``status`` and ``--help`` never load the HTTP stack (httpx,
aiohttp, tenacity: about 0.15 s and 14 MB of start-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from loader.client import CallKaroClient
from loader.errors import (
    ApiRefusedError,
    NoAnswerError,
    NotFoundError,
    RejectedError,
    TransientError,
)
from loader.history import Claims
from loader.payload import build_bodies
from loader.read import Sheet
from loader.send import (
    UNAVAILABLE,
    Events,
    Expiry,
    Progress,
    RetryPolicy,
    SendReport,
    Stopped,
    is_transient,
    send_calls,
    stoppable_sleep,
    with_retries,
)
from loader.state import RunState
from loader.validate import Validation


def run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run``, also from code already inside an event loop (a notebook cell)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    running: dict[str, Any] = {}
    started = threading.Event()

    async def in_its_own_loop() -> Any:
        running["loop"], running["task"] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        return await coro

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(asyncio.run, in_its_own_loop())
        try:
            return future.result()
        except KeyboardInterrupt:
            # As asyncio.run does on Ctrl-C (a notebook's "interrupt kernel"): cancel the sending,
            # whose state holds every call made, instead of making every remaining call first.
            started.wait()
            running["loop"].call_soon_threadsafe(running["task"].cancel)
            raise


@dataclass
class SendJob:
    """The part of a run that talks to the API, inside one event loop."""

    state: RunState
    sheet: Sheet
    validation: Validation
    rows: pd.Index
    agent_id: str
    batch_id: str | None
    campaign_name: str
    client: CallKaroClient
    concurrency: int
    rate_limit: float | None
    retry: RetryPolicy
    events: Events | None
    stop: asyncio.Event | None
    handle_signals: bool = False
    claims: Claims | None = None
    #: Asked right before each request leaves (``loader.send.expiry_check``); None with --allow-past.
    expiry: Expiry | None = None

    async def run(self, progress: Progress) -> SendReport:
        stop = self.stop or asyncio.Event()
        with stop_on_signals(stop, enabled=self.handle_signals):
            return await self._run(stop, progress)

    async def _run(self, stop: asyncio.Event, progress: Progress) -> SendReport:
        async with self.client:
            if not len(self.rows):
                return SendReport()
            if self.batch_id is None:
                try:
                    self.batch_id = await self._create_campaign(stop)
                except ApiRefusedError as exc:
                    return SendReport(refused=exc)
                except (TransientError, NoAnswerError, Stopped) as exc:
                    if isinstance(exc, Stopped) or stop.is_set():
                        reason = str(exc) or "the run was stopped"
                        self._leave_pending(f"the campaign could not be created: {reason}")
                        return SendReport(stopped=True)
                    # Nothing was sent, so nothing is lost: an outage, to be run again later (exit 4).
                    reason = f"the campaign could not be created: {exc}"
                    self._leave_pending(UNAVAILABLE.format(reason=reason))
                    return SendReport(unavailable=reason)
            bodies = build_bodies(
                self.sheet, self.validation, agent_id=self.agent_id, batch_id=self.batch_id, rows=self.rows
            )
            if self.claims is not None:
                self.claims.batch_id = self.batch_id
            return await send_calls(
                self.client,
                bodies,
                self.state,
                concurrency=self.concurrency,
                rate_limit=self.rate_limit,
                retry=self.retry,
                progress=progress,
                events=self.events,
                stop=stop,
                admit=self.claims.admit if self.claims is not None else None,
                expiry=self.expiry,
            )

    async def _create_campaign(self, stop: asyncio.Event) -> str:
        """Create the run's campaign; its id is committed before any call is sent."""
        if self.state.get("campaign_requested"):
            # An earlier run asked for a campaign and died before the answer was recorded.
            # A second, empty campaign is harmless; calls are only ever sent into one.
            self.state.set(campaign_note="an earlier attempt to create the campaign got no answer")
        self.state.set(campaign_name=self.campaign_name, campaign_requested="1")
        try:
            batch = await with_retries(
                lambda: self.client.create_campaign(name=self.campaign_name, agent_id=self.agent_id),
                self.retry,
                stop=stop,
                sleep=stoppable_sleep(stop),
                retry_on=_campaign_retryable,
            )
        except RejectedError as exc:
            if exc.status_code == 404:
                raise NotFoundError(
                    f"the API does not know agent {self.agent_id!r} ({exc})",
                    status_code=404,
                    hint="Check --agent-id against your CallKaro dashboard.",
                ) from None
            raise ApiRefusedError(
                f"the API refused to create campaign {self.campaign_name!r} ({exc})",
                status_code=exc.status_code,
            ) from None
        self.state.set(batch_id=batch)
        return batch

    def _leave_pending(self, message: str) -> None:
        for row in self.rows:
            self.state.mark(int(row), "pending", message=message)
            if self.events is not None:
                # --log-file gets its line per row, with why it was not sent.
                self.events.outcome(int(row), "pending", call_id=None, message=message, attempts=0)


def _campaign_retryable(exc: BaseException) -> bool:
    """A campaign request may also be retried after a gateway's 5xx: it calls nobody, and at
    worst leaves an empty campaign beside the one the calls go into."""
    return is_transient(exc) or (isinstance(exc, NoAnswerError) and (exc.status_code or 0) >= 500)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event, *, enabled: bool) -> Iterator[None]:
    """First Ctrl-C or SIGTERM: stop sending and finish cleanly. Second: stop at once.

    Everything acknowledged is already committed to the state, so stopping at
    once loses nothing; the results file is written by the next run.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def first() -> None:
        print(
            "\nstopping: no new calls are sent; waiting a few seconds for those in flight "
            "(press Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        stop.set()
        for sig in signals:
            loop.add_signal_handler(sig, second)

    def second() -> None:
        raise KeyboardInterrupt

    for sig in signals:
        loop.add_signal_handler(sig, first)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
