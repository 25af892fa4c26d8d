"""A realistic length mix: the written seed test split plus real public texts (by path, if present)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def message_mix(n: int = 512, datasets: Path = ROOT.parent / "shared" / "datasets", seed: int = 0) -> list[str]:
    texts = [json.loads(line)["text"] for line in (ROOT / "data/seed/test.jsonl").open(encoding="utf-8")]
    if datasets.is_dir():
        with (datasets / "sms_spam_id" / "dataset_sms_spam_v1.csv").open(encoding="utf-8") as fh:
            texts += [r["Teks"] for r in csv.DictReader(fh)][:300]
        with (datasets / "city_complaints_sby" / "complaints.csv").open(encoding="utf-8") as fh:
            texts += [r["text"] for r in csv.DictReader(fh) if r["text"]][:300]
        with (datasets / "indonlu_emot" / "valid_preprocess.csv").open(encoding="utf-8") as fh:
            texts += [r["tweet"] for r in csv.DictReader(fh)][:150]
    rng = random.Random(seed)
    rng.shuffle(texts)
    return (texts * (n // len(texts) + 1))[:n]
