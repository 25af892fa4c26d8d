"""Load generator for tests/test_reliability_load.py, run as its own process against 127.0.0.1 only.

    python tests/reliability_load.py closed --port P --concurrency 8 --seconds 3 --batch 16
    python tests/reliability_load.py burst --port P --rate 500 --seconds 3 --batch 16 --probe-seconds 8

Prints one JSON line. A minimal HTTP/1.1 client on asyncio streams (one connection per request,
`Connection: close`), so that the client process, which shares the CPUs with the server, can offer
many times the server's capacity. Every loop is bounded in count and in time.

- closed: `concurrency` workers, each sends its next call when the last is answered: the capacity.
- burst: open loop, one call every 1/rate s whatever the answers (at most `max_outstanding` unanswered;
  beyond that a call is counted as `skipped`, not sent). As soon as the schedule ends, without
  waiting for the burst's answers, a probe sends one call every 0.1 s for `probe_seconds` and records
  when each was sent (seconds after the burst's last send), its status and its latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time

_WORDS = (
    "jalan desa rusak parah mohon diperbaiki sudah tiga bulan tidak ada perbaikan bansos keluarga saya tidak cair "
    "padahal terdaftar pungli kantor kelurahan ditindak banjir seminggu drainase tersumbat rumah sakit menolak "
    "pasien bpjs listrik padam hari selamat pagi admin salam hangat semoga sehat selalu terima kasih laporan "
    "ditanggapi tolong carikan jodoh pacar selingkuh tuyul pulsa canda slot gacor maxwin link daftar bonus promo "
    "kuota aktifkan pinjaman dana cepat tanpa jaminan hadiah juta hubungi sebarkan grup info penting sekolah guru "
    "sampah menumpuk lampu mati air pdam keruh macet angkot sopir ugal ugalan warga resah puskesmas antre lama"
)
_PLACES = "bandung medan makassar kupang jayapura padang pontianak ambon sleman garut bima palu kendari jambi"
WORDS, PLACES = _WORDS.split(), _PLACES.split()


def text(i: int) -> str:
    """A distinct message per i, like traffic from many citizens (not one text repeated: that is a flood)."""
    rng = random.Random(i)
    return " ".join([*rng.sample(WORDS, 14), "di", rng.choice(PLACES)])


def score_body(batch: int, offset: int = 0) -> bytes:
    messages = [{"id": str(offset + j), "text": text(offset + j)} for j in range(batch)]
    return json.dumps({"messages": messages}).encode()


async def call(port: int, body: bytes, timeout: float = 30.0) -> dict:
    """One POST /v1/score on its own connection: status (or an error name), Retry-After, seconds."""
    started = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            payload = await reader.readexactly(int(headers.get("content-length", "0")))
        result = {"status": status, "retry_after": headers.get("retry-after"), "seconds": time.perf_counter() - started}
        if status == 200:
            result["version"] = json.loads(payload)["model"]["version"]
        return result
    except Exception as exc:  # connection refused, reset, timeout: reported, never raised
        return {"status": type(exc).__name__, "retry_after": None, "seconds": time.perf_counter() - started}
    finally:
        if writer is not None:
            writer.close()


def summary(results: list[dict], elapsed: float) -> dict:
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    ok = [r["seconds"] for r in results if r["status"] == 200]
    refused = [r for r in results if r["status"] == 429]
    return {
        "sent": len(results),
        "seconds": elapsed,
        "statuses": statuses,
        "ok_per_s": len(ok) / elapsed if elapsed else 0.0,
        "ok_p50_s": statistics.median(ok) if ok else None,
        "ok_max_s": max(ok) if ok else None,
        "refused_p50_s": statistics.median([r["seconds"] for r in refused]) if refused else None,
        "refused_max_s": max(r["seconds"] for r in refused) if refused else None,
        "refused_without_retry_after": sum(1 for r in refused if not r["retry_after"]),
    }


async def closed(port: int, concurrency: int, seconds: float, batch: int, max_requests: int) -> dict:
    results: list[dict] = []
    started = time.perf_counter()
    deadline = started + seconds
    counter = iter(range(max_requests))

    async def worker() -> None:
        for i in counter:
            if time.perf_counter() > deadline:
                return
            results.append(await call(port, score_body(batch, i * batch)))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summary(results, time.perf_counter() - started)


async def burst(port: int, rate: float, seconds: float, batch: int, probe_seconds: float, max_outstanding: int) -> dict:
    results: list[dict] = []
    outstanding: set[asyncio.Task] = set()
    skipped = 0
    n = int(rate * seconds)
    bodies = [score_body(batch, (i + 1) * batch) for i in range(n)]  # built before the clock starts
    probe_bodies = [score_body(batch, -(k + 1) * batch) for k in range(int(probe_seconds / 0.1))]
    started = time.perf_counter()
    for i in range(n):
        wait = started + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        if len(outstanding) >= max_outstanding:
            skipped += 1
            continue
        task = asyncio.create_task(call(port, bodies[i]))
        task.add_done_callback(lambda t: (outstanding.discard(t), results.append(t.result())))
        outstanding.add(task)
    burst_end = time.perf_counter()
    offered_per_s = (n - skipped) / (burst_end - started)

    probes: list[dict] = []
    for k, probe_body in enumerate(probe_bodies):
        next_at = burst_end + k * 0.1
        wait = next_at - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        sent_at = time.perf_counter() - burst_end
        probes.append({"at": sent_at, **await call(port, probe_body)})
    if outstanding:
        await asyncio.wait(outstanding, timeout=60)
    report = summary(results, burst_end - started)
    report.update(offered=n - skipped, offered_per_s=offered_per_s, skipped=skipped, probes=probes)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["closed", "burst"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--probe-seconds", type=float, default=8.0)
    parser.add_argument("--max-outstanding", type=int, default=2000)
    args = parser.parse_args()
    if args.mode == "closed":
        report = asyncio.run(closed(args.port, args.concurrency, args.seconds, args.batch, args.max_requests))
    else:
        report = asyncio.run(
            burst(args.port, args.rate, args.seconds, args.batch, args.probe_seconds, args.max_outstanding)
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
