"""A run's clock that stops while the run only waits in our own client's queue.

When many features share one slow LLM server, calls past the endpoint's in-flight
limit wait in the backend before they are sent (:mod:`sagex.llm.endpoint`). That
wait is ours, not the feature's: charging it to the feature's wall-clock budget
would fail features for being scheduled late. A run installs a ``RunClock`` with
``use_clock``; the backend marks its calls ``queued()`` and ``sent()``; the clock
is paused while the run has calls queued and none sent, and a bound
``asyncio.Timeout`` is pushed back by exactly the paused time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class RunClock:
    def __init__(self, started: float | None = None) -> None:
        self.started = time.monotonic() if started is None else started
        self.paused_s = 0.0
        self._queued = 0
        self._sent = 0
        self._paused_at: float | None = None
        self._deadline: asyncio.Timeout | None = None
        self._remaining: float | None = None

    @property
    def elapsed(self) -> float:
        """Seconds that count: wall time since ``started`` less the paused time."""
        now = time.monotonic()
        paused = self.paused_s + (now - self._paused_at if self._paused_at is not None else 0.0)
        return now - self.started - paused

    def bind(self, deadline: asyncio.Timeout) -> None:
        """Push ``deadline`` back by every pause from now on."""
        self._deadline = deadline

    def _update(self) -> None:
        should_pause = self._queued > 0 and self._sent == 0
        now = time.monotonic()
        if should_pause and self._paused_at is None:
            self._paused_at = now
            if self._deadline is not None and self._deadline.when() is not None:
                loop = asyncio.get_running_loop()
                self._remaining = max(0.0, self._deadline.when() - loop.time())  # type: ignore[operator]
                self._deadline.reschedule(None)
        elif not should_pause and self._paused_at is not None:
            self.paused_s += now - self._paused_at
            self._paused_at = None
            if self._deadline is not None and self._remaining is not None and not self._deadline.expired():
                self._deadline.reschedule(asyncio.get_running_loop().time() + self._remaining)
            self._remaining = None

    @contextmanager
    def _count(self, attr: str) -> Iterator[None]:
        setattr(self, attr, getattr(self, attr) + 1)
        self._update()
        try:
            yield
        finally:
            setattr(self, attr, getattr(self, attr) - 1)
            self._update()


_current: ContextVar[RunClock | None] = ContextVar("sagex_llm_run_clock", default=None)


@contextmanager
def use_clock(clock: RunClock) -> Iterator[RunClock]:
    """Make ``clock`` the clock of everything run in this context (and tasks it starts)."""
    token = _current.set(clock)
    try:
        yield clock
    finally:
        _current.reset(token)


@contextmanager
def queued() -> Iterator[None]:
    """Mark the current run as waiting in our own queue (no-op without a clock)."""
    clock = _current.get()
    if clock is None:
        yield
        return
    with clock._count("_queued"):
        yield


@contextmanager
def sent() -> Iterator[None]:
    """Mark a call of the current run as sent to the server (no-op without a clock)."""
    clock = _current.get()
    if clock is None:
        yield
        return
    with clock._count("_sent"):
        yield
