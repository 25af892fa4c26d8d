"""HTTP load generator, run as its own process: closed loop at a concurrency, or open loop at a rate.

`python -m bench.load --url URL --concurrency 8 --requests 200 --batch 1` prints one JSON line:
messages/s, requests/s, latency p50/p99 (ms) and status counts. Every loop is bounded in count
and time.

The client is aiohttp with request bodies encoded before the clock starts: on the same two cores as
the server, httpx cost the machine 4.2-4.6 ms of CPU per call (more than the server itself) and
aiohttp 0.25-0.3 ms (measured on one server, 400 single-message calls at concurrency 32), so the
figures measure the server, not the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
import numpy as np

from bench.texts import message_mix

JSON = {"content-type": "application/json"}


async def _one(client: aiohttp.ClientSession, url: str, body: bytes, latencies: list, statuses: dict) -> None:
    started = time.perf_counter()
    try:
        async with client.post(url, data=body, headers=JSON) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        status = type(exc).__name__
    latencies.append(time.perf_counter() - started)
    statuses[str(status)] = statuses.get(str(status), 0) + 1


async def run(
    url: str,
    concurrency: int,
    requests: int,
    batch: int,
    rate: float | None,
    max_seconds: float,
    explain: bool = False,
    seed: int = 0,
) -> dict:
    texts = message_mix(2048, seed=seed)
    bodies = [
        {"messages": [{"id": str(i * batch + j), "text": texts[(i * batch + j) % len(texts)]} for j in range(batch)]}
        for i in range(requests)
    ]
    if explain:
        for body in bodies:
            body["explain"] = True
    encoded = [json.dumps(body).encode("utf-8") for body in bodies]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        started = time.perf_counter()
        deadline = started + max_seconds
        if rate:  # open loop: requests start on a fixed schedule, whatever the answers
            tasks = []
            for i, body in enumerate(encoded):
                wait = started + i / rate - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                if time.perf_counter() > deadline:
                    break
                tasks.append(asyncio.create_task(_one(client, url, body, latencies, statuses)))
            await asyncio.gather(*tasks)
        else:  # closed loop: `concurrency` workers, each sends its next request when answered
            queue = iter(encoded)

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
        "max_ms": float(lat.max()) if len(lat) else None,
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
    parser.add_argument("--explain", action="store_true", help="send explain=true")
    parser.add_argument("--seed", type=int, default=0, help="shuffle of the text mix")
    args = parser.parse_args()
    result = asyncio.run(
        run(args.url, args.concurrency, args.requests, args.batch, args.rate, args.max_seconds, args.explain, args.seed)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
