"""Flood detection on a synthetic flood: throughput, memory, and how right the near-duplicate counts are.

`python -m bench.flood [--messages 50000] [--campaigns 20] [--copies 500]` builds a stream of
unique messages with campaigns of paraphrased copies mixed in (new numbers, casing, emoji, links,
greetings, a swapped or dropped word, typos), spread over simulated time, and feeds it to
service.features.flood.FloodDetector with the service's default window and cap. It reports:
  - throughput (messages/s) of one-message calls and of 32-message calls;
  - memory: traced allocations of the detector when full, and per remembered message;
  - pair precision and recall of the reported near-duplicates against two truths: "same campaign"
    (what a desk wants) and "5-gram Jaccard >= threshold" (what the LSH estimates), with both truths
    limited to what the detector may remember (the window and the cap);
  - the repeated-text case: one text repeated until the cap is full, against a detector full of
    unique texts: the cost of one single-message observe in each, and their ratio, in one run (each
    message compares at most SAMPLE_PER_BUCKET members per band bucket, so a flood costs about what
    unique traffic costs; before that bound a copy was compared with every remembered copy).
Counts past a bucket's sample are estimated (service/features/flood.py): the count error below is
that of the estimate; pair precision/recall count only the pairs that were actually compared.
It prints a summary and writes bench/results/flood.json.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from bench.report import write_results

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.features.flood import SHINGLE_CHARS, FloodDetector, normalise  # noqa: E402
from service.settings import Settings  # noqa: E402

WORDS = [
    "saya",
    "kami",
    "mohon",
    "tolong",
    "jalan",
    "rusak",
    "desa",
    "kelurahan",
    "kecamatan",
    "bansos",
    "bantuan",
    "listrik",
    "air",
    "banjir",
    "sekolah",
    "guru",
    "puskesmas",
    "rumah",
    "sakit",
    "pasien",
    "bpjs",
    "pungli",
    "pejabat",
    "kantor",
    "sampah",
    "lampu",
    "jembatan",
    "pupuk",
    "petani",
    "harga",
    "beras",
    "minyak",
    "gas",
    "elpiji",
    "antrean",
    "warga",
    "rt",
    "rw",
    "lurah",
    "camat",
    "bupati",
    "walikota",
    "gubernur",
    "polisi",
    "preman",
    "parkir",
    "liar",
    "izin",
    "usaha",
    "pasar",
    "pedagang",
    "ojek",
    "angkot",
    "terminal",
    "tanah",
    "sertifikat",
    "sengketa",
    "gaji",
    "honorer",
    "tunjangan",
    "dana",
    "desa",
    "proyek",
    "mangkrak",
    "selokan",
    "got",
    "macet",
    "lubang",
    "tiang",
    "kabel",
    "sinyal",
    "internet",
    "vaksin",
    "obat",
    "dokter",
    "bidan",
    "posyandu",
    "stunting",
    "beasiswa",
    "kip",
    "ktp",
    "kk",
    "akta",
    "nikah",
    "cerai",
    "tilang",
    "pajak",
    "retribusi",
    "kebakaran",
    "longsor",
    "gempa",
    "hari",
    "ini",
    "kemarin",
    "sudah",
    "belum",
    "tidak",
    "ada",
    "juga",
    "sangat",
    "parah",
    "lama",
    "minggu",
    "bulan",
    "tahun",
    "pagi",
    "malam",
    "siang",
    "sore",
]
SYLLABLES = [c + v for c in "bcdgjklmnprstw" for v in "aiueo"]
GREETINGS = ["assalamualaikum", "selamat pagi min", "permisi pak", "halo admin", "mas wapres", "tolong dibaca"]
EMOJI = ["😂", "🙏", "🔥", "👉", "‼️", "😡", "💯"]


def pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))


def random_message(rng: random.Random) -> str:
    words = [rng.choice(WORDS) if rng.random() < 0.6 else pseudo_word(rng) for _ in range(rng.randint(6, 20))]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), str(rng.randint(1, 99999)))
    return " ".join(words)


def paraphrase(base: str, rng: random.Random) -> str:
    """One to three small edits a prankster or a forwarded chain makes."""
    words = base.split()
    for _ in range(rng.randint(1, 3)):
        edit = rng.randrange(8)
        i = rng.randrange(len(words))
        if edit == 0:  # a new number (phone, amount, code)
            words.insert(i, f"08{rng.randint(10**8, 10**9 - 1)}")
        elif edit == 1:
            words = [w.upper() if rng.random() < 0.5 else w.capitalize() for w in words]
        elif edit == 2:
            words.append(rng.choice(EMOJI) * rng.randint(1, 3))
        elif edit == 3:
            words.insert(0, rng.choice(GREETINGS))
        elif edit == 4 and len(words) > 6:
            words[i] = rng.choice(WORDS)  # a swapped word
        elif edit == 5 and len(words) > 6:
            del words[i]  # a dropped word
        elif edit == 6 and len(words[i]) > 3:
            j = rng.randrange(len(words[i]) - 1)  # a typo: two letters swapped
            w = words[i]
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        else:
            words.append(f"https://bit.ly/{pseudo_word(rng)}{rng.randint(1, 999)}")
    return " ".join(words) + rng.choice(["", "!", "!!", "..", " ?"])


def build_stream(n: int, campaigns: int, copies: int, seed: int) -> tuple[list[str], list[int]]:
    """Texts in arrival order and each one's campaign (-1: a unique message)."""
    rng = random.Random(seed)
    bases = [random_message(rng) for _ in range(campaigns)]
    items = [(paraphrase(bases[c], rng), c) for c in range(campaigns) for _ in range(copies)]
    items += [(random_message(rng), -1) for _ in range(n - len(items))]
    rng.shuffle(items)
    return [t for t, _ in items], [c for _, c in items]


def shingle_set(text: str) -> frozenset[str]:
    norm = normalise(text)
    if len(norm) <= SHINGLE_CHARS:
        return frozenset([norm])
    return frozenset(norm[i : i + SHINGLE_CHARS] for i in range(len(norm) - SHINGLE_CHARS + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def remembered(i: int, times: np.ndarray, window_s: float, max_tracked: int) -> int:
    """Index of the oldest message still remembered when message i arrives (same rule as the detector:
    the window, and at most max_tracked - 1 earlier messages once full)."""
    first_in_window = int(np.searchsorted(times, times[i] - window_s, side="left"))
    return max(first_in_window, i - (max_tracked - 1))


def precision_recall(predicted: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, float]:
    hits = len(predicted & truth)
    return {
        "precision": hits / len(predicted) if predicted else 1.0,
        "recall": hits / len(truth) if truth else 1.0,
        "pairs_predicted": len(predicted),
        "pairs_true": len(truth),
    }


def measure(args: argparse.Namespace) -> dict:
    settings = Settings(_env_file=None)
    window, cap, similarity = settings.flood_window_s, settings.flood_max_tracked, settings.flood_similarity
    texts, campaign = build_stream(args.messages, args.campaigns, args.copies, args.seed)
    times = np.arange(len(texts)) / args.rate  # simulated arrival times

    # Accuracy pass: one message at a time, recording which messages each one matched.
    detector = FloodDetector(window, cap, similarity)
    slot_owner = np.full(cap, -1, dtype=np.int64)
    predicted: set[tuple[int, int]] = set()
    counts = np.zeros(len(texts), dtype=np.int64)
    started = time.perf_counter()
    for i, text in enumerate(texts):
        slot, count, matches = detector.observe_matches(text, float(times[i]))
        counts[i] = count
        predicted.update((i, int(slot_owner[s])) for s in matches)
        slot_owner[slot] = i
    single_s = time.perf_counter() - started

    # Truths over what the detector may remember.
    members: dict[int, list[int]] = {}
    for i, c in enumerate(campaign):
        if c >= 0:
            members.setdefault(c, []).append(i)
    shingles = [shingle_set(t) for t in texts]
    truth_campaign: set[tuple[int, int]] = set()
    truth_jaccard: set[tuple[int, int]] = set()
    for idx in members.values():
        for a_pos, i in enumerate(idx):
            oldest = remembered(i, times, window, cap)
            for j in idx[:a_pos]:
                if j >= oldest:
                    truth_campaign.add((i, j))
                    if jaccard(shingles[i], shingles[j]) >= similarity:
                        truth_jaccard.add((i, j))
    cross = [(i, j) for i, j in predicted if campaign[i] < 0 or campaign[i] != campaign[j]]
    truth_jaccard.update((i, j) for i, j in cross if jaccard(shingles[i], shingles[j]) >= similarity)
    true_counts = np.zeros(len(texts), dtype=np.int64)
    for i, _ in truth_campaign:
        true_counts[i] += 1

    # Throughput of 32-message calls, as a /v1/score call observes them.
    batched = FloodDetector(window, cap, similarity)
    started = time.perf_counter()
    for k in range(0, len(texts), 32):
        batched.observe(texts[k : k + 32], now=float(times[k]))
    batch_s = time.perf_counter() - started

    # Memory: everything the detector allocates (numpy arrays included), held once the stream is through.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    traced = FloodDetector(window, cap, similarity)
    empty_bytes = tracemalloc.get_traced_memory()[0] - before
    for k in range(0, len(texts), 32):
        traced.observe(texts[k : k + 32], now=float(times[k]))
    gc.collect()
    full_bytes, peak = tracemalloc.get_traced_memory()
    full_bytes -= before
    tracemalloc.stop()

    # The repeated-text case: one text until the cap is full (every band bucket holds cap - 1 copies),
    # against a detector full of unique texts; single-message observes, alternated so both see the same load.
    repeated, unique_full = FloodDetector(window, cap, similarity), FloodDetector(window, cap, similarity)
    text = texts[0]
    for k in range(0, cap, 256):
        repeated.observe([text] * min(256, cap - k), now=k * 1e-3)
    uniques = [t for t, c in zip(texts, campaign, strict=True) if c < 0]
    for k in range(0, cap, 256):
        unique_full.observe(uniques[k : k + 256], now=k * 1e-3)
    fresh = uniques[cap : cap + 400] or uniques[:400]
    spent = {"repeated": 0.0, "unique": 0.0}
    last_repeated = 0
    for k in range(len(fresh)):
        now = cap * 1e-3 + k * 1e-3
        started = time.perf_counter()
        last_repeated = repeated.observe([text], now=now)[0]
        spent["repeated"] += time.perf_counter() - started
        started = time.perf_counter()
        unique_full.observe([fresh[k]], now=now)
        spent["unique"] += time.perf_counter() - started
    repeated_ms = spent["repeated"] / len(fresh) * 1000
    unique_ms = spent["unique"] / len(fresh) * 1000

    flood_msgs = int(sum(c >= 0 for c in campaign))
    return {
        "messages": len(texts),
        "campaigns": args.campaigns,
        "copies_per_campaign": args.copies,
        "unique_messages": len(texts) - flood_msgs,
        "simulated_rate_per_s": args.rate,
        "settings": {"window_s": window, "max_tracked": cap, "similarity": similarity},
        "throughput_msgs_per_s": {"one_per_call": len(texts) / single_s, "32_per_call": len(texts) / batch_s},
        "memory": {
            "traced_bytes_empty": empty_bytes,
            "traced_bytes_full": full_bytes,
            "traced_bytes_peak": peak - before,
            "bytes_per_remembered_message": full_bytes / len(traced),
            "remembered": len(traced),
        },
        "pairs_vs_campaign_truth": precision_recall(predicted, truth_campaign),
        "pairs_vs_jaccard_truth": precision_recall(predicted, truth_jaccard),
        "counts": {
            "exact_share_flood_messages": float(
                np.mean([counts[i] == true_counts[i] for i in range(len(texts)) if campaign[i] >= 0])
            ),
            "unique_messages_with_nonzero_count": int(
                sum(1 for i in range(len(texts)) if campaign[i] < 0 and counts[i] > 0)
            ),
            "mean_abs_error_flood_messages": float(
                np.mean([abs(counts[i] - true_counts[i]) for i in range(len(texts)) if campaign[i] >= 0])
            ),
            "max_reported": int(counts.max()),
        },
        "repeated_text": {
            "remembered_copies": len(repeated),
            "count_reported": last_repeated,
            "ms_per_single_message_observe": repeated_ms,
            "unique_texts_ms_per_single_message_observe": unique_ms,
            "ratio_repeated_over_unique": repeated_ms / unique_ms,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--copies", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="simulated messages per second")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "flood.json")
    args = parser.parse_args(argv)
    result = measure(args)
    write_results(result, args.output, show=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
