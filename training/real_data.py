"""A labelled evaluation set drawn from the public data sets in ../shared/datasets (by path).

None of those sets is complaint-channel traffic, and none has pranks (`iseng`), so this set
measures how a model copes with the registers real people write in: city complaints (aduan),
personal SMS, tweets and reviews (bukan_aduan), fraud and promo SMS (spam). It is built on the
fly and never stored in the repository: the sources are not redistributable.
"""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

# Messages in the city complaint file that thank or ask rather than complain (checked by hand):
NOT_A_COMPLAINT = re.compile(r"^\W*(terima ?kasih|terimakasih|makasih|mohon info|apakah|bagaimana cara)", re.I)


def _clean(text: str) -> str:
    text = text.replace("\\n", " ").replace("\r", " ").replace("\n", " ")
    return re.sub(r"\s+", " ", text).strip()


def _sample(rows: list[str], n: int, rng: random.Random) -> list[str]:
    unique = sorted({_clean(r) for r in rows if r and len(_clean(r)) >= 3})
    return rng.sample(unique, min(n, len(unique)))


def build_real_set(datasets_dir: str | Path, per_source: int = 150, seed: int = 7) -> list[dict[str, str]]:
    """Rows {text, label, source} balanced over sources; deterministic for a seed."""
    root = Path(datasets_dir)
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []

    def add(texts: list[str], label: str, source: str, n: int) -> None:
        rows.extend({"text": t, "label": label, "source": source} for t in _sample(texts, n, rng))

    with (root / "city_complaints_sby" / "complaints.csv").open(encoding="utf-8") as fh:
        complaints = [r["text"] for r in csv.DictReader(fh) if not NOT_A_COMPLAINT.match(r["text"] or "")]
    add(complaints, "aduan", "city_complaints_sby", 2 * per_source)

    with (root / "sms_spam_id" / "dataset_sms_spam_v1.csv").open(encoding="utf-8") as fh:
        sms = list(csv.DictReader(fh))
    add([r["Teks"] for r in sms if r["label"] == "0"], "bukan_aduan", "sms_spam_id:normal", per_source)
    add([r["Teks"] for r in sms if r["label"] == "1"], "spam", "sms_spam_id:fraud", per_source)
    add([r["Teks"] for r in sms if r["label"] == "2"], "spam", "sms_spam_id:promo", per_source)

    with (root / "indonlu_emot" / "valid_preprocess.csv").open(encoding="utf-8") as fh:
        add([r["tweet"] for r in csv.DictReader(fh)], "bukan_aduan", "indonlu_emot", per_source // 2)
    with (root / "indonlu_smsa" / "valid_preprocess.tsv").open(encoding="utf-8") as fh:
        reviews = [line.split("\t")[0] for line in fh if "\t" in line]
    add(reviews, "bukan_aduan", "indonlu_smsa", per_source // 2)
    rng.shuffle(rows)
    return rows


def write_real_set(datasets_dir: str | Path, out: str | Path, per_source: int = 150, seed: int = 7) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = build_real_set(datasets_dir, per_source, seed)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return out
