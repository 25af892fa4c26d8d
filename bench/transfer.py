"""Which model transfers: candidates judged on writers and registers they never trained on.

    python -m bench.transfer [--e5 DIR] [--candidates tfidf,e5,mean] [--datasets ../shared/datasets]

For every candidate it reports, from one run:
  - cross-writer macro-F1: leave one writer out of data/seed + data/written, train on the rest,
    score the writer left out (mean and worst writer);
  - the independent writers' set (data/independent/, writers used nowhere else), trained on all rows;
  - the seed's own test split (same writers as the seed's training rows: shown, never decisive);
  - real mixed (python -m training real-eval-set), real city complaints (share called aduan, share in
    the reject band), real SMS macro-F1 (normal vs fraud/promo; a predicted prank counts as spam);
  - the reject threshold chosen on held-out writers (<= 1 % of their genuine complaints rejected).
Candidates: TF-IDF word+char n-grams + logistic regression; multilingual-e5-small frozen (mean-pooled,
"query: " prefix; the last layer, or several: e5_L6-9-12) + logistic regression; the weighted mean of
both probability vectors (mean_tfidf0.7, mean_L6-9-12_tfidf0.6).
Results go to bench/results/transfer.json.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench.report import write_results
from bench.texts import ROOT
from training.baseline import train_baseline
from training.calibration import reject_threshold
from training.real_data import NOT_A_COMPLAINT, build_real_set
from training.writers import load_corpus, load_independent, read_jsonl

LABELS = ["aduan", "bukan_aduan", "iseng", "spam"]
REJECT_RATE = 0.01


def real_sets(datasets: Path, n_city: int = 2000, seed: int = 7) -> dict[str, list[dict]]:
    with (datasets / "city_complaints_sby" / "complaints.csv").open(encoding="utf-8") as fh:
        city = sorted({r["text"].replace("\\n", " ").strip() for r in csv.DictReader(fh)} - {""})
    city = [t for t in city if not NOT_A_COMPLAINT.match(t)]
    city = random.Random(seed).sample(city, min(n_city, len(city)))
    with (datasets / "sms_spam_id" / "dataset_sms_spam_v1.csv").open(encoding="utf-8") as fh:
        sms = [{"text": r["Teks"], "label": "bukan_aduan" if r["label"] == "0" else "spam"} for r in csv.DictReader(fh)]
    return {
        "real_mixed": build_real_set(datasets),
        "city": [{"text": t, "label": "aduan"} for t in city],
        "sms": sms,
    }


class TfidfCandidate:
    name = "tfidf"

    def fit(self, texts, labels):
        self.model = train_baseline(texts, labels, LABELS)
        return self

    def proba(self, texts):
        return self.model.predict_proba(list(texts))


class E5Candidate:
    """Frozen e5 embeddings (cached per text) + logistic regression.

    pooling "mean" is how e5 was trained, over the last layer or, with `layers`, over each of those
    hidden states, normalised each and concatenated (what service/model/heads.py serves with the
    sidecar's `pooled_layers`); "cls" (the first token's state, through a dense+tanh head) is what a
    stock `BertForSequenceClassification` folder can carry, so it is measured too.
    """

    name = "e5"

    def __init__(self, folder: Path, threads: int = 1, pooling: str = "mean", cache: dict | None = None) -> None:
        self.pooling, self.layers = pooling, None
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.encoder = AutoModel.from_pretrained(folder).eval()
        self.cache: dict[str, tuple[np.ndarray, np.ndarray]] = {} if cache is None else cache

    def variant(self, pooling: str = "mean", layers: list[int] | None = None) -> E5Candidate:
        """The same encoder and embedding cache, another pooling."""
        twin = object.__new__(E5Candidate)
        twin.__dict__.update(self.__dict__)
        twin.pooling, twin.layers = pooling, layers
        twin.name = f"e5_L{'-'.join(map(str, layers))}" if layers else f"e5_{pooling}"
        return twin

    def embed(self, texts) -> np.ndarray:
        torch = self.torch
        todo = sorted({t for t in texts if t not in self.cache}, key=len)
        for start in range(0, len(todo), 64):
            batch = todo[start : start + 64]
            enc = self.tokenizer(["query: " + t for t in batch], truncation=True, max_length=128, padding=True,
                                 return_tensors="pt")  # fmt: skip
            with torch.inference_mode():
                hidden = self.encoder(**enc, output_hidden_states=True).hidden_states
            mask = enc["attention_mask"].unsqueeze(-1).float()
            # every layer's normalised mean pool, (batch, layers + 1, width): any layer choice reads the cache
            pooled = torch.stack([torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)
                                  for h in hidden], dim=1).numpy()  # fmt: skip
            cls = hidden[-1][:, 0].numpy()
            self.cache.update(zip(batch, zip(pooled, cls, strict=True), strict=True))
        if self.pooling == "cls":
            return np.stack([self.cache[t][1] for t in texts])
        layers = self.layers or [-1]
        return np.stack([np.concatenate([self.cache[t][0][layer] for layer in layers]) for t in texts])

    def fit(self, texts, labels):
        self.lr = LogisticRegression(C=10.0, max_iter=3000, class_weight="balanced")
        if self.pooling == "cls":  # raw hidden states: scale them (unit-norm mean pools need no scaling)
            self.lr = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced"))
        self.lr.fit(self.embed(texts), [LABELS.index(y) for y in labels])
        return self

    def proba(self, texts):
        return self.lr.predict_proba(self.embed(texts))


class MeanCandidate:
    """The weighted mean of the parts' probabilities (`weights`: one per part; equal by default)."""

    name = "mean"

    def __init__(self, parts, weights: list[float] | None = None) -> None:
        self.parts = parts
        self.weights = weights or [1.0 / len(parts)] * len(parts)

    def fit(self, texts, labels):
        for part in self.parts:
            part.fit(texts, labels)
        return self

    def proba(self, texts):
        return np.sum([w * part.proba(texts) for w, part in zip(self.weights, self.parts, strict=True)], axis=0)


def macro_f1(rows: list[dict], probs: np.ndarray, spam_for_iseng: bool = False) -> float:
    pred = np.array(LABELS)[probs.argmax(axis=1)]
    if spam_for_iseng:
        pred = np.where(pred == "iseng", "spam", pred)
    truth = [r["label"] for r in rows]
    present = sorted(set(truth))
    return float(f1_score(truth, pred, labels=present, average="macro", zero_division=0))


def evaluate(candidate, corpus, independent, seed_test, real, always: list[dict]) -> dict:
    """`always`: rows in every training fold but never a held-out writer (public data such as IndoNLU)."""
    started = time.perf_counter()
    result: dict = {"cross_writer": {}}
    # Leave one writer out: out-of-fold probabilities for every training row.
    oof = np.zeros((len(corpus.rows), len(LABELS)))
    for writer in corpus.writers():
        train = corpus.without([writer]) + always
        held = [i for i, r in enumerate(corpus.rows) if r["writer"] == writer]
        model = candidate.fit([r["text"] for r in train], [r["label"] for r in train])
        oof[held] = model.proba([corpus.rows[i]["text"] for i in held])
        result["cross_writer"][writer] = macro_f1([corpus.rows[i] for i in held], oof[held])
    scores = list(result["cross_writer"].values())
    result["cross_writer_mean"], result["cross_writer_min"] = float(np.mean(scores)), float(np.min(scores))
    is_aduan = np.array([r["label"] == "aduan" for r in corpus.rows])
    threshold = reject_threshold(oof[:, 0], is_aduan, REJECT_RATE, cap=0.5).value
    result["reject_threshold_held_out_writers"] = threshold
    # Everything else: trained on every training row.
    everything = corpus.rows + always
    model = candidate.fit([r["text"] for r in everything], [r["label"] for r in everything])
    for name, rows in (("independent", independent), ("seed_test", seed_test), ("real_mixed", real["real_mixed"])):
        probs = model.proba([r["text"] for r in rows])
        result[name] = macro_f1(rows, probs, spam_for_iseng=name == "real_mixed")
        if name == "independent":
            aduan = np.array([r["label"] == "aduan" for r in rows])
            result["independent_aduan_rejected"] = float((probs[aduan, 0] <= threshold).mean())
    city = model.proba([r["text"] for r in real["city"]])
    result["city_called_aduan"] = float((city.argmax(axis=1) == 0).mean())
    result["city_rejected"] = float((city[:, 0] <= threshold).mean())
    result["sms_macro_f1"] = macro_f1(real["sms"], model.proba([r["text"] for r in real["sms"]]), spam_for_iseng=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _layers_candidate(name: str) -> tuple[list[int] | None, float | None]:
    """`e5_L6-9-12` -> ([6, 9, 12], None); `mean_L6-9-12_tfidf0.6` -> ([6, 9, 12], 0.6); else (None, None)."""
    match = re.fullmatch(r"(e5|mean)_L([0-9-]+)(?:_tfidf([0-9.]+))?", name)
    if not match or (match[1] == "mean") != bool(match[3]):
        return None, None
    return [int(layer) for layer in match[2].split("-")], float(match[3]) if match[3] else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--e5", type=Path, help="converted e5 folder (python -m training convert-e5)")
    parser.add_argument(
        "--candidates",
        default="tfidf,e5,e5_cls,mean,mean_cls",
        help="also mean_tfidf0.6, mean_tfidf0.7, mean_tfidf0.8, and pooled layers: e5_L6-9-12, mean_L6-9-12_tfidf0.6",
    )
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "transfer.json")
    parser.add_argument("--extra_train", type=Path, nargs="*", default=[], help="JSONL rows always trained on")
    args = parser.parse_args(argv)
    corpus = load_corpus()
    independent = load_independent()
    seed_test = read_jsonl(ROOT / "data" / "seed" / "test.jsonl")
    real = real_sets(args.datasets)
    always = [row for path in args.extra_train for row in read_jsonl(path)]
    print(f"corpus: {len(corpus.rows)} rows, writers {corpus.writers()}; independent {len(independent)}")
    wanted = args.candidates.split(",")
    e5 = E5Candidate(args.e5) if args.e5 and any(w.startswith(("e5", "mean")) for w in wanted) else None
    candidates = {"tfidf": TfidfCandidate()}
    if e5:
        candidates["e5"] = e5
        candidates["e5_cls"] = e5.variant("cls")
        candidates["mean"] = MeanCandidate([TfidfCandidate(), e5])
        candidates["mean_cls"] = MeanCandidate([TfidfCandidate(), e5.variant("cls")])
        for weight in (0.6, 0.7, 0.8):  # the TF-IDF head's weight in the mix (configs/default.json: text_head_weight)
            candidates[f"mean_tfidf{weight}"] = MeanCandidate([TfidfCandidate(), e5], [weight, 1 - weight])
        for name in wanted:  # e5_L6-9-12, mean_L6-9-12_tfidf0.6: heads on several pooled layers (pooled_layers)
            layers, weight = _layers_candidate(name)
            if layers and weight is None:
                candidates[name] = e5.variant(layers=layers)
            elif layers:
                candidates[name] = MeanCandidate([TfidfCandidate(), e5.variant(layers=layers)], [weight, 1 - weight])
    results = {}
    for name in wanted:
        if name not in candidates:
            print(f"skipping {name}: needs --e5")
            continue
        results[name] = evaluate(candidates[name], corpus, independent, seed_test, real, always)
        r = results[name]
        print(
            f"{name:<6} cross-writer {r['cross_writer_mean']:.3f} (worst {r['cross_writer_min']:.3f})  "
            f"independent {r['independent']:.3f}  seed test {r['seed_test']:.3f}  real mixed {r['real_mixed']:.3f}  "
            f"city aduan {r['city_called_aduan']:.1%} rejected {r['city_rejected']:.1%}  SMS {r['sms_macro_f1']:.3f}  "
            f"reject t={r['reject_threshold_held_out_writers']:.3f} ({r['seconds']} s)",
            flush=True,
        )
    write_results(results, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
