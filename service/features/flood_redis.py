"""Flood detection shared by every replica: the band buckets of `flood.py` kept in Redis.

Same signatures, band keys, sampling and estimate as the in-process detector; only where the buckets
live differs. Per scope (prefix `saring:flood:<scope>:`):
  - `b:<band>:<key>`  a sorted set per band bucket: message ids scored by arrival time (seconds since
                      the epoch); reads skip members older than the window; expires with it (TTL);
  - `m:<id>`          the message's signature (256 bytes) and its 21 bucket keys, expiring with the window;
  - `all`             every remembered id by time: what leaves the window or passes the cap
                      (SARING_FLOOD_MAX_TRACKED, per scope) is removed from its buckets;
  - `seq`             the id counter.
A call costs one read script per 16 messages (sizes in the window, the SAMPLE_PER_BUCKET newest ids
of each bucket and their signatures) and one write script with every write of the call (and the
removal of what left the window or passed the cap). Signatures
are compared in the replica, never in Redis, whose one thread every replica shares.
Two replicas observing copies at the same instant may each miss the other's copy (reads and writes
are two steps); copies a few milliseconds apart are counted.

When Redis fails or answers slower than the timeout, observe() returns None (near_duplicates null):
scoring never waits on or fails because of Redis. After a failure, Redis is not asked again for a
second; one log line marks the start of an outage and one its end.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.features.flood import (
    BANDS,
    NUM_PERM,
    SAMPLE_PER_BUCKET,
    band_key_array,
    near_duplicate_count,
    signatures,
)
from service.metrics import ServiceMetrics

logger = logging.getLogger("saring")

SIG_BYTES = NUM_PERM * 4
KEY_HEX = 16  # one band key as 16 hex digits
MESSAGES_PER_ROUND_TRIP = 16  # bounds one reply: at most 16 x 21 x 32 signatures
RETRY_AFTER_FAILURE_S = 1.0
_EXPIRED_PER_CALL = 1000  # ids forgotten by time per write call; the rest go on the next calls

# ARGV: prefix, '(' horizon, sample size, then BANDS hex keys per message. Reads only: a bucket's
# members older than the window are skipped by score here and removed by the write script. The reply is
# four strings (parsing thousands of small values cost more than the rest of the call): per bucket
# its size in the window and how many of its newest members were read; the position of each member
# read among the signatures (numbers as 8 hex digits each); the signatures, end to end.
_READ = f"""
local prefix, horizon, k = ARGV[1], ARGV[2], tonumber(ARGV[3])
local sizes, counts, positions, sigs, seen = {{}}, {{}}, {{}}, {{}}, {{}}
for i = 4, #ARGV do
  local bucket = prefix .. 'b:' .. ((i - 4) % {BANDS}) .. ':' .. ARGV[i]
  local newest = redis.call('ZRANGE', bucket, '+inf', horizon, 'BYSCORE', 'REV', 'LIMIT', 0, k)
  local size = #newest
  if size == k then size = redis.call('ZCOUNT', bucket, horizon, '+inf') end  -- only a full sample hides more
  sizes[#sizes + 1] = string.format('%08x', size)
  local read = 0
  for _, id in ipairs(newest) do
    local at = seen[id]
    if at == nil then
      local value = redis.call('GET', prefix .. 'm:' .. id)
      at = false
      if value then
        at = #sigs
        sigs[#sigs + 1] = string.sub(value, 1, {SIG_BYTES})
      end
      seen[id] = at
    end
    if at then
      positions[#positions + 1] = string.format('%08x', at)
      read = read + 1
    end
  end
  counts[#counts + 1] = string.format('%08x', read)
end
return {{table.concat(sizes), table.concat(counts), table.concat(positions), table.concat(sigs)}}
"""

# ARGV: prefix, now, '(' horizon, cap, ttl, then one value per message (signature .. hex keys).
_WRITE = f"""
local prefix, now, horizon, cap, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local all = prefix .. 'all'
local function bucket(value, band)
  local at = {SIG_BYTES} + band * {KEY_HEX}
  return prefix .. 'b:' .. band .. ':' .. string.sub(value, at + 1, at + {KEY_HEX})
end
local function forget(id)
  local value = redis.call('GET', prefix .. 'm:' .. id)
  if value then
    for band = 0, {BANDS - 1} do redis.call('ZREM', bucket(value, band), id) end
    redis.call('DEL', prefix .. 'm:' .. id)
  end
  redis.call('ZREM', all, id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', all, '-inf', horizon, 'LIMIT', 0, {_EXPIRED_PER_CALL})) do
  forget(id)
end
for i = 6, #ARGV do
  local over = redis.call('ZCARD', all) - cap + 1
  if over > 0 then
    for _, id in ipairs(redis.call('ZRANGE', all, 0, over - 1)) do forget(id) end
  end
  local id = tostring(redis.call('INCR', prefix .. 'seq'))
  redis.call('SET', prefix .. 'm:' .. id, ARGV[i], 'EX', ttl)
  redis.call('ZADD', all, now, id)
  for band = 0, {BANDS - 1} do
    local key = bucket(ARGV[i], band)
    redis.call('ZADD', key, now, id)
    redis.call('EXPIRE', key, ttl)
  end
end
redis.call('EXPIRE', all, ttl)
return #ARGV - 5
"""


def _numbers(hex_digits: bytes) -> np.ndarray:
    """Numbers written by the read script as 8 hex digits each."""
    return np.frombuffer(bytes.fromhex(hex_digits.decode("ascii")), dtype=">u4").astype(np.int64)


class RedisFloodDetector:
    """Near-duplicate counts over every replica's messages, in Redis; None while Redis is unavailable."""

    def __init__(
        self,
        url: str,
        window_s: float = 600.0,
        max_tracked: int = 20_000,
        similarity: float = 0.5,
        timeout_s: float = 0.25,
        metrics: ServiceMetrics | None = None,
        clock: Callable[[], float] = time.time,
        prefix: str = "saring:flood:",
        client=None,
    ) -> None:
        import redis  # the optional extra `redis`: imported only when a URL is configured
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.window_s = window_s
        self.max_tracked = max_tracked
        self.min_agree = int(np.ceil(similarity * NUM_PERM))
        self.metrics = metrics
        self.clock = clock  # wall time: every replica's clock, comparable across machines
        self.prefix = prefix
        self._errors = (redis.RedisError, OSError)
        # No retries: a failed call answers null at once; the next call (after RETRY_AFTER_FAILURE_S) tries again.
        self.client = client or redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
        self._read = self.client.register_script(_READ)
        self._write = self.client.register_script(_WRITE)
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._state_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        if metrics is not None:
            metrics.flood_store_up.set(1)

    async def observe_async(self, texts: Sequence[str], scope: str = "") -> list[int] | None:
        """observe() off the event loop. A few threads, not one: they mostly wait on Redis."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="saring-flood")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.observe, texts, None, scope)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.client.close()

    def observe(self, texts: Sequence[str], now: float | None = None, scope: str = "") -> list[int] | None:
        """Near-duplicate counts for texts arriving now (later texts of the call count earlier ones), or
        None when Redis cannot answer."""
        if not texts:
            return []
        if time.monotonic() < self._retry_at:
            self._unavailable()
            return None
        sigs = signatures(texts)
        keys = band_key_array(sigs)
        now = self.clock() if now is None else now
        prefix = f"{self.prefix}{scope or 'shared'}:"
        horizon = f"({now - self.window_s:.6f}"
        hex_keys = [[f"{k:016x}" for k in row] for row in keys.tolist()]
        counts: list[int] = []
        try:
            for start in range(0, len(texts), MESSAGES_PER_ROUND_TRIP):
                stop = start + MESSAGES_PER_ROUND_TRIP
                remote = self._remote_counts(sigs[start:stop], keys[start:stop], hex_keys[start:stop], horizon, prefix)
                for m, count in enumerate(remote, start):
                    # Earlier messages of this call are not in Redis yet: compared here, with an LSH band shared.
                    earlier = (sigs[:m] == sigs[m]).sum(axis=1) >= self.min_agree
                    earlier &= (keys[:m] == keys[m]).any(axis=1)
                    counts.append(count + int(earlier.sum()))
            # Every write of the call in one script: the messages, their buckets, what leaves.
            pairs = zip(sigs, hex_keys, strict=True)
            values = [sig.astype("<u4").tobytes() + "".join(row).encode("ascii") for sig, row in pairs]
            ttl = int(np.ceil(self.window_s)) + 60  # a little past the window: the cap can still find what it removes
            self._write(args=[prefix, f"{now:.6f}", horizon, self.max_tracked, ttl, *values])
        except self._errors as exc:
            self._failed(exc)
            return None
        self._succeeded()
        return counts

    def _remote_counts(
        self, sigs: np.ndarray, keys: np.ndarray, hex_keys: list[list[str]], horizon: str, prefix: str
    ) -> list[int]:
        """Near-duplicate counts among what Redis remembers, for up to MESSAGES_PER_ROUND_TRIP messages."""
        flat = [k for row in hex_keys for k in row]
        blobs = self._read(args=[prefix, horizon, SAMPLE_PER_BUCKET, *flat])
        sizes = _numbers(blobs[0]).reshape(len(sigs), BANDS)
        read = _numbers(blobs[1])  # per bucket, message after message
        positions = _numbers(blobs[2])
        cand_sigs = np.frombuffer(blobs[3], dtype="<u4").reshape(-1, NUM_PERM)
        cand_keys = band_key_array(cand_sigs)
        ends = np.cumsum(read)
        band_of_entry = np.repeat(np.tile(np.arange(BANDS), len(sigs)), read)
        counts = []
        for m, (sig, sig_keys) in enumerate(zip(sigs, keys, strict=True)):
            first, last = int(ends[m * BANDS] - read[m * BANDS]), int(ends[(m + 1) * BANDS - 1])
            count, _ = near_duplicate_count(
                sig,
                sig_keys,
                sizes[m],
                positions[first:last],
                band_of_entry[first:last],
                cand_sigs,
                cand_keys,
                self.min_agree,
            )
            counts.append(count)
        return counts

    # -- outage bookkeeping: one log line when an outage starts, one when it ends ----------------
    def _unavailable(self) -> None:
        if self.metrics is not None:
            self.metrics.flood_unavailable.inc()

    def _failed(self, exc: BaseException) -> None:
        self._unavailable()
        with self._state_lock:
            self._retry_at = time.monotonic() + RETRY_AFTER_FAILURE_S
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        if self.metrics is not None:
            self.metrics.flood_store_up.set(0)
        logger.error(
            "flood store unavailable: near_duplicates is null until Redis answers again",
            extra={"fields": {"error": type(exc).__name__}},
        )

    def _succeeded(self) -> None:
        if self._down_since is None:
            return
        with self._state_lock:
            down_since, self._down_since = self._down_since, None
        if down_since is None:
            return
        if self.metrics is not None:
            self.metrics.flood_store_up.set(1)
        logger.info("flood store back", extra={"fields": {"down_s": round(time.monotonic() - down_since, 1)}})
