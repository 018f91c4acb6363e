"""The activation service's output side: logit lens for every server, steered
generation for servers started with ``steering = true``.

Generation does not go through the activation batcher (whose unit is one text's
forward pass to the hook); it has its own single worker thread, so the full model
is only ever touched from there. Each request's prompts run as one batch. A bounded
number of requests may wait; a cancelled or expired request stops at the next
forward pass and frees its slot.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog
import torch

from sagex.activation.config import ActivationConfig
from sagex.activation.effects import DecoderRows, OutputHead
from sagex.activation.steering import SteerableLM, Stopped, Watch
from sagex.server.errors import DeadlineExceeded, ResourceExhausted, Unavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass
class RunnerStats:
    completed: int = 0
    stopped: int = 0  # cancelled or past their deadline, stopped mid-generation


class GenerationRunner:
    """One worker thread; at most ``max_pending`` requests waiting or running."""

    def __init__(self, max_pending: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sagex-steer")
        self._max = max_pending
        self._lock = threading.Lock()
        self.pending = 0
        self.stats = RunnerStats()
        self._closed = False

    async def run(self, fn: Callable[[Watch], T], timeout: float) -> T:
        with self._lock:
            if self._closed:
                raise Unavailable("server is shutting down; retry on another replica")
            if self.pending >= self._max:
                raise ResourceExhausted(
                    f"{self.pending} steered generations are queued (limit {self._max}); retry after a short backoff",
                    retry_after_s=1.0,
                )
            self.pending += 1
        watch = Watch(threading.Event(), time.monotonic() + timeout)

        def job() -> T:
            try:
                result = fn(watch)
                self.stats.completed += 1
                return result
            except Stopped:
                self.stats.stopped += 1
                raise
            finally:
                with self._lock:
                    self.pending -= 1

        future = asyncio.get_running_loop().run_in_executor(self._executor, job)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even if nobody waits
        try:
            return await asyncio.shield(future)
        except Stopped:
            raise DeadlineExceeded("the deadline passed during steered generation; allow more time or "
                                   "ask for fewer prompts or tokens") from None
        finally:
            # Cancelled (client gone) or failed: the worker stops at its next forward pass.
            watch.cancel.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class OutputSide:
    head: OutputHead
    decoder: DecoderRows
    steerable: SteerableLM | None
    runner: GenerationRunner | None

    @classmethod
    def build(cls, config: ActivationConfig, model_dir: Path, device: torch.device, dtype: torch.dtype,
              pad_id: int, eos_ids: list[int]) -> OutputSide:
        decoder = DecoderRows(config.served_saes())
        if not config.steering:
            return cls(OutputHead.load(model_dir, device), decoder, None, None)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        head = OutputHead.from_model(model, device)
        steerable = SteerableLM(model, pad_id, eos_ids, device)
        log.info("steering_enabled", model=model_dir.name, device=str(device))
        return cls(head, decoder, steerable, GenerationRunner(config.max_steer_queue))

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
