"""Split py-spy samples of the event-loop thread into the parts of a request; the shares add up to 1.

py-spy samples the serving process from outside (no instrumentation, so small Python functions are
not inflated the way cProfile inflates them: 6x on this path) and, without `--idle`, leaves out the
samples where the thread sleeps waiting for sockets or for the model thread. Each sample goes to the
part of the innermost frame of its stack that belongs to one: `re.sub` called from the log formatter is
logging, called from the flood detector it is flood detection; a builtin such as the tokenizer's
`encode_batch` goes to the Python function that called it.
"""

from __future__ import annotations

from collections import Counter

# (part, substrings of a frame "function (file:line)"); the first match from the innermost frame wins.
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("HTTP protocol (uvicorn, h11/httptools)", ("/uvicorn/protocols/", "/uvicorn/middleware/", "/h11/", "httptools")),
    ("JSON parse and dump", ("/json/", "orjson", "service/http/fast_json.py")),
    ("pydantic validation and serialisation", ("/pydantic/", "/pydantic_core/")),
    ("logging (JSON access line)", ("/logging/", "service/logs.py")),
    ("metrics (prometheus_client)", ("/prometheus_client/", "service/metrics.py")),
    ("middleware (RequestGuard: id, key, limits)", ("service/http/middleware.py", "service/http/auth.py")),
    ("flood detection", ("service/features/flood",)),
    ("model forward", ("Backend.forward (", "Backend.logits (", "Backend.inputs (")),
    ("tokenising", ("service/model/encoding.py", "/tokenizers/", "/transformers/", "Backend.encode (")),
    ("queue and batching (Infer)", ("service/core/infer.py", "service/model/batching.py", "service/model/check.py")),
    ("handler (routes, scores, decisions)", ("service/http/", "service/model/scoring.py", "service/core/")),
    ("framework (starlette, fastapi)", ("/starlette/", "/fastapi/", "/anyio/")),
]
# asyncio's own frames (wait_for, gather, futures) belong to the code that called them; a sample with
# nothing but the loop's frames inside it is the loop itself: polling, scheduling callbacks, and with
# uvloop its C code (socket reads and writes). On a busy machine this part also holds the time the
# thread sat runnable, just back from the poll, waiting for a core: py-spy counts that as active.
LOOP = "event loop itself (asyncio/uvloop)"
LOOP_FRAMES = ("/asyncio/", "uvloop")
OTHER = "other"
IDLE_WORKER = "_worker ("  # concurrent.futures' pool thread, innermost: blocked in its queue's get()


def part_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for part, needles in PARTS:
            if any(n in frame for n in needles):
                return part
    return LOOP if any(n in frame for frame in stack for n in LOOP_FRAMES) else OTHER


def split(raw: str, thread_id: int, others: bool = False) -> tuple[dict[str, float], int, list[tuple[str, float]]]:
    """(share per part, samples, the 15 innermost frames with the most samples) of `thread_id`'s
    samples (with `others`: of every other thread's) in py-spy's raw output (`--format raw --threads
    --full-filenames`)."""
    parts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    label = f"thread ({thread_id})"
    for line in raw.splitlines():
        stack_text, _, count = line.rpartition(" ")
        frames = stack_text.split(";")
        if not frames or not count.isdigit() or frames[0].startswith(label) == others:
            continue
        stack = frames[1:]
        if stack and stack[-1].startswith(IDLE_WORKER):
            continue  # a pool thread blocked on its queue: py-spy misses that it waits for work
        parts[part_of(stack)] += int(count)
        if stack:
            leaves[stack[-1]] += int(count)
    samples = sum(parts.values())
    shares = {part: n / samples for part, n in parts.most_common()} if samples else {}
    top = [(frame, n / samples) for frame, n in leaves.most_common(15)] if samples else []
    return shares, samples, top
