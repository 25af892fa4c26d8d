"""HTTP load generator, run as its own process: closed loop at a concurrency, or open loop at a rate.

`python -m bench.load --url URL --concurrency 8 --requests 200 --batch 1` prints one JSON line:
messages/s, requests/s, latency p50/p99 (ms) and status counts. Every loop is bounded in count
and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import numpy as np

from bench.texts import message_mix


async def _one(client: httpx.AsyncClient, url: str, body: dict, latencies: list, statuses: dict) -> None:
    started = time.perf_counter()
    try:
        response = await client.post(url, json=body)
        status = response.status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    latencies.append(time.perf_counter() - started)
    statuses[str(status)] = statuses.get(str(status), 0) + 1


async def run(url: str, concurrency: int, requests: int, batch: int, rate: float | None, max_seconds: float) -> dict:
    texts = message_mix(2048)
    bodies = [
        {"messages": [{"id": str(i * batch + j), "text": texts[(i * batch + j) % len(texts)]} for j in range(batch)]}
        for i in range(requests)
    ]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        started = time.perf_counter()
        deadline = started + max_seconds
        if rate:  # open loop: requests start on a fixed schedule, whatever the answers
            tasks = []
            for i, body in enumerate(bodies):
                wait = started + i / rate - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                if time.perf_counter() > deadline:
                    break
                tasks.append(asyncio.create_task(_one(client, url, body, latencies, statuses)))
            await asyncio.gather(*tasks)
        else:  # closed loop: `concurrency` workers, each sends its next request when answered
            queue = iter(bodies)

            async def worker() -> None:
                for body in queue:
                    if time.perf_counter() > deadline:
                        return
                    await _one(client, url, body, latencies, statuses)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ok = statuses.get("200", 0)
    lat = np.array(latencies) * 1000
    return {
        "concurrency": concurrency,
        "batch": batch,
        "rate": rate,
        "requests": len(latencies),
        "seconds": elapsed,
        "requests_per_s": ok / elapsed,
        "messages_per_s": ok * batch / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1, help="messages per request")
    parser.add_argument("--rate", type=float, default=None, help="open loop: requests started per second")
    parser.add_argument("--max-seconds", type=float, default=60)
    args = parser.parse_args()
    result = asyncio.run(run(args.url, args.concurrency, args.requests, args.batch, args.rate, args.max_seconds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
