"""Admission, queue and dynamic batching between the HTTP layer and one model backend.

Like text-embeddings-inference's `Infer` + queue task: a request takes a non-blocking permit (no
permit, immediate 429), is tokenised, and its messages join one FIFO queue, each with its own
future. A single batching task forms batches bounded by count and padded tokens and runs them
one at a time on a single model thread, so forwards never overlap on the same weights. A failed
forward fails only the messages of its batch. Every item remembers the backend that tokenised it,
so a model swapped in mid-flight never receives the old tokenizer's ids. Explanation batches share
the model thread at a lower priority (`run_when_idle`): they run only while no message waits.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import ModelFailed, NotReady, Overloaded, TimedOut
from service.metrics import ServiceMetrics
from service.model.backend import Backend
from service.model.batching import batch_tokens_for, padded_tokens
from service.model.check import output_problem
from service.settings import default_of

logger = logging.getLogger("saring.infer")


@dataclass
class _Item:
    ids: list[int]
    backend: Backend
    future: asyncio.Future[np.ndarray]


@dataclass
class Scored:
    """Probabilities (n, labels) in request order, the backend that produced them, truncation flags."""

    probs: np.ndarray
    backend: Backend
    truncated: list[bool]


class Infer:
    # How far past the oldest message the batcher looks for messages of a similar length.
    BATCH_WINDOW = 256
    # Most padded tokens per real token a batch may carry. The model is the bottleneck under load, and
    # padding is compute spent on nothing: concurrent single messages of mixed lengths were padded
    # 2.4x (bench/), against 1.16x for length-sorted offline batches. A message that would pad the
    # batch more waits for the next one, which starts as soon as this one ends.
    MAX_PADDING = 1.25

    def __init__(
        self,
        backend: Backend,
        metrics: ServiceMetrics,
        max_batch_size: int = default_of("max_batch_size"),
        max_batch_tokens: int | None = None,  # None: the backend device's default (batching.py)
        max_wait_ms: float = default_of("max_wait_ms"),
        max_inflight_requests: int = default_of("max_inflight_requests"),
        max_queued_messages: int = default_of("max_queued_messages"),
        request_timeout_s: float = default_of("request_timeout_s"),
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = batch_tokens_for(backend.device, max_batch_tokens)
        self.max_wait_s = max_wait_ms / 1000
        self.max_inflight = max_inflight_requests
        self.max_queued = max_queued_messages
        self.timeout_s = request_timeout_s
        self.inflight = 0
        self._queue: collections.deque[_Item] = collections.deque()
        # Messages admitted but still being tokenised: they count against max_queued_messages at once,
        # or every admitted call could pass the check during its tokenising await and overfill the queue.
        self._reserved = 0
        # Low-priority work for the model thread (explanation batches): run only when no message waits.
        self._background: collections.deque[tuple[Callable[..., Any], tuple, asyncio.Future]] = collections.deque()
        self._wakeup = asyncio.Event()
        # One thread runs every forward: the model is never entered twice at once.
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saring-model")
        self._task: asyncio.Task | None = None
        # The batch whose forward is on the model thread now (its items, the forward's future, start time).
        self._running: tuple[list[_Item], asyncio.Future, float] | None = None
        self._seconds_per_message = 0.01  # running estimate, for Retry-After

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._batch_loop(), name="saring-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop the batching task and the model thread."""
        deadline = time.monotonic() + self.timeout_s
        while (self._queue or self._reserved or self._running) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        running = self._running[0] if self._running else []
        for future in [item.future for item in [*self._queue, *running]] + [job[2] for job in self._background]:
            if not future.done():
                future.set_exception(NotReady("server is shutting down", retry_after=1))
        self._queue.clear()
        self._background.clear()
        self._model_thread.shutdown(wait=True)

    def swap_backend(self, backend: Backend) -> Backend:
        """Serve new requests with `backend`; items already queued finish on the old one."""
        old, self.backend = self.backend, backend
        return old

    async def run_on_model_thread(self, fn, *args):
        """Run work that touches the weights (warm-up, the check batch) between batches, never during one."""
        return await asyncio.get_running_loop().run_in_executor(self._model_thread, fn, *args)

    async def run_when_idle(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the model thread once no message is waiting to be scored.

        For work that may wait (explanation batches): a scored message waits behind at most one such
        job, however many are queued. Cancelling the caller (its request timed out) drops a job not
        yet started.
        """
        future = asyncio.get_running_loop().create_future()
        self._background.append((fn, args, future))
        self._wakeup.set()
        return await future

    # -- requests --------------------------------------------------------------------------
    def retry_after(self) -> float:
        return max(1.0, (len(self._queue) + self._reserved) * self._seconds_per_message)

    async def score(self, texts: Sequence[str]) -> Scored:
        """Admit, tokenise, queue and await the probabilities of `texts`."""
        if self.inflight >= self.max_inflight:
            self.metrics.refused.labels("inflight_limit").inc()
            raise Overloaded(
                f"too many requests in flight (limit {self.max_inflight}, SARING_MAX_INFLIGHT_REQUESTS); retry later",
                retry_after=self.retry_after(),
            )
        self.inflight += 1
        self.metrics.inflight.inc()
        try:
            return await self._score_admitted(texts)
        finally:
            self.inflight -= 1
            self.metrics.inflight.dec()

    async def _score_admitted(self, texts: Sequence[str]) -> Scored:
        backend = self.backend
        waiting = len(self._queue) + self._reserved
        if waiting + len(texts) > self.max_queued:
            self.metrics.refused.labels("queue_full").inc()
            raise Overloaded(
                f"queue is full ({waiting} messages waiting, limit {self.max_queued}, "
                "SARING_MAX_QUEUED_MESSAGES); retry later",
                retry_after=self.retry_after(),
            )
        self._reserved += len(texts)
        try:
            # Tokenising a large call takes milliseconds: keep it off the event loop.
            encoded = await asyncio.to_thread(backend.encode, texts) if len(texts) > 8 else backend.encode(texts)
        finally:
            self._reserved -= len(texts)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in texts]
        # Shortest first, so the batches cut from a large call hold messages of similar length.
        for i in sorted(range(len(texts)), key=lambda i: len(encoded.ids[i])):
            self._queue.append(_Item(encoded.ids[i], backend, futures[i]))
        self.metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
        try:
            rows = await asyncio.wait_for(asyncio.gather(*futures), timeout=self.timeout_s)
        except TimeoutError:
            self.metrics.refused.labels("timeout").inc()
            raise TimedOut(
                f"not scored within {self.timeout_s:g} s (SARING_REQUEST_TIMEOUT_S); the server is overloaded",
                retry_after=self.retry_after(),
            ) from None
        finally:
            # On a timeout, a failed sibling (model error) or cancellation, the request's other messages
            # are no longer wanted: the batcher drops cancelled items before the forward.
            for f in futures:
                f.cancel()
        return Scored(probs=np.vstack(rows), backend=backend, truncated=encoded.truncated)

    # -- batching task ---------------------------------------------------------------------
    def _next_batch(self) -> list[_Item]:
        """The oldest message, then the queued ones closest to it in length, bounded by count, tokens and padding.

        A FIFO batch is padded to its longest message: one truncated complaint among short chats made
        the model compute 3.4x the real tokens under concurrent single-message load (bench/). Picking
        neighbours by length from a bounded window keeps padding low, and the oldest message always
        goes first, so nothing starves. One backend per batch: a reload never mixes tokenizers.
        """
        while self._queue and self._queue[0].future.done():  # cancelled by a timeout or a failed sibling
            self._queue.popleft()
        if not self._queue:
            return []
        head = self._queue.popleft()
        window = [
            item
            for item in itertools.islice(self._queue, self.BATCH_WINDOW)
            if not item.future.done() and item.backend is head.backend
        ]
        window.sort(key=lambda item: abs(len(item.ids) - len(head.ids)))  # stable: ties stay oldest first
        batch, lengths = [head], [len(head.ids)]
        for item in window:
            if len(batch) == self.max_batch_size:
                break
            grown = [*lengths, len(item.ids)]
            cost = padded_tokens(grown)
            if cost <= self.max_batch_tokens and cost <= self.MAX_PADDING * sum(grown):
                batch.append(item)
                lengths.append(len(item.ids))
        if len(batch) > 1:
            taken = {id(item) for item in batch}
            self._queue = collections.deque(item for item in self._queue if id(item) not in taken)
        return batch

    async def _run_job(self, fn: Callable[..., Any], args: tuple, future: asyncio.Future) -> None:
        if future.done():  # its caller gave up (timeout) before it started
            return
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._model_thread, fn, *args)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)

    @staticmethod
    def _fail(batch: list[_Item], error: ModelFailed) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(error)

    def _launch(self, batch: list[_Item]) -> tuple[list[_Item], asyncio.Future, float]:
        """Start `batch`'s forward on the model thread; the loop goes on while it runs."""
        future = asyncio.get_running_loop().run_in_executor(
            self._model_thread, batch[0].backend.forward, [it.ids for it in batch]
        )
        return batch, future, time.perf_counter()

    async def _batch_loop(self) -> None:
        """Form batches and run them, one forward at a time.

        The next batch's forward starts before the finished batch's answers are handed back, so under
        load the model thread never waits for the event loop (it sat idle 23 % of the time with
        concurrent single-message calls when hand-back and the next batch came one after the other).
        The `max_wait_ms` pause, for concurrent requests to join, is taken only when the model was idle.
        """
        while True:
            running = self._running
            if running is None:
                if not self._queue and not self._background:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                if self._queue and self.max_wait_s and len(self._queue) < self.max_batch_size:
                    await asyncio.sleep(self.max_wait_s)  # let concurrent requests join this batch
                batch = self._next_batch()
                self.metrics.queue_depth.set(len(self._queue))
                if not batch:
                    if self._background:  # nothing to score: one low-priority job, then look again
                        await self._run_job(*self._background.popleft())
                    continue
                running = self._running = self._launch(batch)
            batch, future, started = running
            try:
                probs = await future
            except Exception as exc:  # the model failed: only this batch's messages fail
                logger.exception("forward failed for a batch of %d", len(batch))
                self._fail(batch, ModelFailed(f"model error: {type(exc).__name__}"))
                probs = None
            elapsed = time.perf_counter() - started
            following = self._next_batch()  # what queued meanwhile runs now, while this batch's answers go back
            self.metrics.queue_depth.set(len(self._queue))
            self._running = self._launch(following) if following else None
            if probs is not None:
                self._hand_back(batch, probs, elapsed)

    def _hand_back(self, batch: list[_Item], probs: np.ndarray, elapsed: float) -> None:
        # NaN or infinity (broken weights, an fp16 overflow) would reach callers as a null score.
        problem = output_problem(probs, rows=len(batch))
        if problem:
            logger.error("model output refused for a batch of %d: %s", len(batch), problem)
            self._fail(batch, ModelFailed(f"model error: its output is not a probability distribution ({problem})"))
            return
        self._seconds_per_message = 0.8 * self._seconds_per_message + 0.2 * elapsed / len(batch)
        lengths = [len(it.ids) for it in batch]
        self.metrics.batch_size.observe(len(batch))
        self.metrics.forward_seconds.observe(elapsed)
        self.metrics.real_tokens.inc(sum(lengths))
        self.metrics.padded_tokens.inc(padded_tokens(lengths))
        for item, row in zip(batch, probs, strict=True):
            if not item.future.done():
                item.future.set_result(row)
