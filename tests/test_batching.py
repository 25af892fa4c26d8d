"""How the batcher cuts batches from the queue: oldest first, similar lengths, bounded by tokens."""

from __future__ import annotations

import asyncio

from service.core.infer import Infer, _Item
from service.metrics import ServiceMetrics
from service.model.batching import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS
from service.settings import Settings


class _Backend:
    """Only identity and device matter here: batches never mix backends."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device


def _queue(infer: Infer, lengths: list[int], backend: object) -> list[_Item]:
    loop = asyncio.new_event_loop()
    items = [_Item(list(range(n)), backend, loop.create_future()) for n in lengths]
    infer._queue.extend(items)
    return items


def _infer(device: str = "cpu", **kwargs) -> Infer:
    return Infer(_Backend(device), ServiceMetrics(), **kwargs)


def test_token_budget_defaults_by_device_unless_configured() -> None:
    # CPUs want batches whose activations stay in cache, GPUs wide ones: one default cannot serve both.
    assert _infer("cpu").max_batch_tokens == CPU_BATCH_TOKENS == 512
    assert _infer("cuda:0").max_batch_tokens == GPU_BATCH_TOKENS == 16384
    assert _infer("cuda:0", max_batch_tokens=2048).max_batch_tokens == 2048
    assert Settings().max_batch_tokens is None  # unset: the device decides


def test_oldest_first_then_closest_lengths() -> None:
    infer = _infer(max_batch_size=3, max_batch_tokens=10_000)
    backend = infer.backend
    items = _queue(infer, [10, 120, 11, 118, 9, 121], backend)
    first = infer._next_batch()
    assert first[0] is items[0]  # the oldest always goes first: nothing starves
    assert sorted(len(i.ids) for i in first) == [9, 10, 11]
    second = infer._next_batch()
    assert second[0] is items[1] and sorted(len(i.ids) for i in second) == [118, 120, 121]
    assert not infer._queue


def test_padding_is_lower_than_first_come_batches() -> None:
    lengths = [12, 128, 15, 20, 128, 9, 14, 30, 128, 11, 16, 10] * 8
    infer = _infer(max_batch_size=8, max_batch_tokens=100_000)
    _queue(infer, lengths, infer.backend)
    padded = 0
    while batch := infer._next_batch():
        padded += max(len(i.ids) for i in batch) * len(batch)
    fifo = sum(max(lengths[i : i + 8]) * len(lengths[i : i + 8]) for i in range(0, len(lengths), 8))
    assert padded < 0.6 * fifo


def test_no_batch_pads_more_than_the_cap_however_the_queue_mixes_lengths() -> None:
    """Concurrent single messages of mixed lengths: each batch's padded tokens stay within MAX_PADDING of
    its real tokens (a lone message is never padded), and every message is still batched exactly once."""
    import random

    rng = random.Random(3)
    lengths = [rng.randint(5, 128) for _ in range(200)]
    infer = _infer(max_batch_size=32, max_batch_tokens=100_000)
    items = _queue(infer, lengths, infer.backend)
    seen = []
    while batch := infer._next_batch():
        real = [len(i.ids) for i in batch]
        assert max(real) * len(real) <= Infer.MAX_PADDING * sum(real)
        seen += batch
    assert sorted(map(id, seen)) == sorted(map(id, items))


def test_token_budget_and_backend_boundaries_hold() -> None:
    infer = _infer(max_batch_size=32, max_batch_tokens=100)
    old_backend, new_backend = infer.backend, _Backend()
    _queue(infer, [20, 20, 20], old_backend)
    _queue(infer, [20, 20], new_backend)
    batch = infer._next_batch()
    assert all(i.backend is old_backend for i in batch) and len(batch) == 3  # 3 x 20 <= 100
    batch = infer._next_batch()
    assert all(i.backend is new_backend for i in batch) and len(batch) == 2
    _queue(infer, [60, 50, 40], old_backend)
    batch = infer._next_batch()
    assert max(len(i.ids) for i in batch) * len(batch) <= 100


def test_cancelled_items_are_skipped() -> None:
    infer = _infer(max_batch_size=4)
    items = _queue(infer, [5, 6, 7, 8], infer.backend)
    items[0].future.cancel()
    items[2].future.cancel()
    batch = infer._next_batch()
    assert [len(i.ids) for i in batch] == [6, 8]


class _TimedBackend:
    """Records when each forward runs; a forward takes `seconds`."""

    device = "cpu"

    def __init__(self, seconds: float) -> None:
        import time

        self.seconds, self.clock, self.spans = seconds, time.perf_counter, []

    def encode(self, texts):
        from service.model.encoding import Encoded

        return Encoded(ids=[[1, 2, 3] for _ in texts], truncated=[False] * len(texts))

    def forward(self, batch):
        import time

        import numpy as np

        started = self.clock()
        time.sleep(self.seconds)
        self.spans.append((started, self.clock(), len(batch)))
        return np.full((len(batch), 4), 0.25)


def test_the_next_forward_starts_without_waiting_for_hand_back_or_the_join_pause() -> None:
    """Under steady load the model thread goes straight from one batch to the next.

    The join pause (`max_wait_ms`, 50 ms here) is for an idle model; with messages waiting when a
    forward ends, the next forward starts at once and its answers go back while it runs.
    """
    backend = _TimedBackend(seconds=0.02)

    async def run() -> None:
        infer = Infer(backend, ServiceMetrics(), max_batch_size=8, max_wait_ms=50)
        infer.start()

        async def caller() -> None:
            for _ in range(6):
                scored = await infer.score(["lampu jalan mati"])
                assert scored.probs.shape == (1, 4)

        await asyncio.gather(*(caller() for _ in range(12)))
        await infer.stop()

    asyncio.run(run())
    assert sum(n for _, _, n in backend.spans) == 72
    gaps = [nxt[0] - prev[1] for prev, nxt in zip(backend.spans, backend.spans[1:], strict=False)]
    # Only the very first batch may wait for company; every later one follows its predecessor at once.
    assert max(gaps) < 0.025, [round(g, 4) for g in gaps]  # the old loop paused 50 ms here
