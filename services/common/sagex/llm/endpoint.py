"""What the process has learned about each LLM endpoint, shared by every backend
and every call that uses it.

* ``structured``/``token_param``: what the endpoint accepts, remembered once it worked.
* ``gate``: a limit on our calls in flight to the endpoint. Calls past it wait in
  our own client (that wait counts against neither the call's timeout nor the
  feature's clock, see :mod:`sagex.llm.clock`). It starts at the configured
  ``max_in_flight`` and is lowered when calls time out while others were in flight:
  the server was queueing them, so sending more at once only makes each one late.
* ``broken``: an endpoint-level failure (bad key, unknown model, server down,
  configuration the server refuses) with the message that says what to fix. Later
  calls within ``cooldown_s`` fail at once with that message instead of sending
  requests that will fail the same way: no retry storms across calls and features.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import structlog

from sagex.llm.clock import queued

log = structlog.get_logger(__name__)

BROKEN_COOLDOWN_S = 30.0  # a fixed or restarted server is tried again after this


class Gate:
    """A counting limit whose size can shrink while calls wait on it.

    Not an asyncio.Semaphore: the limit changes at run time, and waiters are
    plain futures of the running loop, so a process that runs several loops one
    after another (tests) never touches a dead loop's primitives."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        with queued():
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            try:
                await future
            except BaseException:
                if future.done() and not future.cancelled():
                    self._release_slot()  # the slot was handed over just as we were cancelled
                else:
                    self._waiters.remove(future)
                raise

    def release(self) -> None:
        self._release_slot()

    def _release_slot(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            future = self._waiters.popleft()
            if not future.done():
                self.in_flight += 1
                future.set_result(None)

    def lower(self, limit: int) -> bool:
        """Lower the limit (never raise it, never below 1); True if it changed."""
        limit = max(1, limit)
        if limit >= self.limit:
            return False
        self.limit = limit
        return True


@dataclass
class Endpoint:
    """One (base_url, model)'s learned state; the gate is the base URL's, shared by its models
    (one server, one queue)."""

    gate: Gate
    probe: Gate = field(default_factory=lambda: Gate(1))  # one call at a time while structured_known is False
    structured_floor: int = 0  # index into STRUCTURED_MODES of the strongest mode not refused
    structured_known: bool = False  # a structured request has been answered: the floor is final
    token_param: str = "max_tokens"
    broken: str | None = None  # the message of an endpoint-level failure
    broken_until: float = 0.0
    broken_permanent: bool = False  # only a setting can fix it (key, model, refused option)

    def broken_message(self) -> str | None:
        if self.broken is not None and time.monotonic() < self.broken_until:
            return self.broken
        self.broken = None
        return None

    def mark_broken(self, message: str, *, permanent: bool = False, cooldown_s: float = BROKEN_COOLDOWN_S) -> None:
        self.broken, self.broken_until = message, time.monotonic() + cooldown_s
        self.broken_permanent = permanent
        log.warning("llm_endpoint_failing", message=message, cooldown_s=cooldown_s)

    def reject_structured(self, floor: int) -> None:
        self.structured_floor = max(self.structured_floor, floor)

    def mark_working(self) -> None:
        self.broken = None


_endpoints: dict[tuple[str, str], Endpoint] = {}
_gates: dict[str, Gate] = {}


def endpoint(base_url: str, model: str, max_in_flight: int) -> Endpoint:
    """The shared state of (base_url, model); created with ``max_in_flight`` the first time."""
    key = (base_url, model)
    found = _endpoints.get(key)
    if found is None:
        gate = _gates.get(base_url)
        if gate is None:
            gate = _gates[base_url] = Gate(max_in_flight)
        found = _endpoints[key] = Endpoint(gate)
    return found


def forget_all() -> None:
    """Drop everything learned (tests: a later server may get the same port)."""
    _endpoints.clear()
    _gates.clear()
