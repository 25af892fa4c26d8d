"""How many tokens a batch costs and how to cut similar-length batches: shared by Infer and `predict`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

# Most padded tokens per forward when SARING_MAX_BATCH_TOKENS is not set, by device. On a CPU a batch's
# activations should stay in cache (e5-small ONNX int8: 113 msg/s at 512, 94 at 4096; bench.onnx_graph);
# a GPU needs wide batches to fill its cores.
CPU_BATCH_TOKENS = 512
GPU_BATCH_TOKENS = 16384


def batch_tokens_for(device: str, configured: int | None = None) -> int:
    """The padded-token budget of one forward: the configured one, else the device's default."""
    if configured is not None:
        return configured
    return GPU_BATCH_TOKENS if device.startswith("cuda") else CPU_BATCH_TOKENS


def padded_tokens(lengths: Sequence[int]) -> int:
    """What a batch costs the model: every row is padded to the longest one."""
    return max(lengths, default=0) * len(lengths)


def length_sorted_batches(lengths: Sequence[int], max_batch_size: int, max_batch_tokens: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length, bounded by count and padded tokens."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batch: list[int] = []
    for i in order:
        candidate = [*batch, i]
        too_big = padded_tokens([lengths[j] for j in candidate]) > max_batch_tokens
        if batch and (len(candidate) > max_batch_size or too_big):
            yield batch
            batch = [i]
        else:
            batch = candidate
    if batch:
        yield batch
