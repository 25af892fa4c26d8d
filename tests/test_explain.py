"""explain=true: occlusion weights that are exactly right on a known model, and that point at the planted
words of crafted messages for the tiny model the test session trains."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from make_messages import PLACES, make_messages, write_jsonl
from service_fixtures import assert_error_shape, make_settings
from training_fixtures import torch_threads, train_argv

from service.features.explain import log_odds, occlusions, word_key
from service.http.app import create_app
from service.model.encoding import Encoded, softmax64
from service.model.folder import read_sidecar

# -- a bag-of-words model whose log-odds are known in closed form ----------------------------------

LABELS = ["aduan", "bukan_aduan", "iseng", "spam"]
# Logit contributions per word; every other word adds nothing.
WEIGHTS = {"pungli": [3.0, 0, 0, 0], "gacor": [0, 0, 0, 4.0], "tolong": [1.0, 0, 0, 0], "wkwk": [0, 0, 2.0, 0]}


class BagOfWordsBackend:
    """encode/forward like a real backend; forward records the thread it runs on and any overlap."""

    device, kind, precision = "cpu", "fake", "fp32"

    def __init__(self, sidecar) -> None:
        self.sidecar = sidecar
        self.vocab: dict[str, int] = {}
        self.words: dict[int, str] = {}
        self.threads: set[str] = set()
        self.active = 0
        self.overlapped = False
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> Encoded:
        ids = []
        for text in texts:
            row = [101]
            for word in text.split():
                key = word.casefold()
                if key not in self.vocab:
                    self.vocab[key] = len(self.vocab) + 1000
                    self.words[self.vocab[key]] = key
                row.append(self.vocab[key])
            ids.append(row)
        return Encoded(ids=ids, truncated=[False] * len(texts))

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        with self._lock:
            self.active += 1
            self.overlapped |= self.active > 1
            self.threads.add(threading.current_thread().name)
        try:
            logits = np.zeros((len(batch), len(LABELS)))
            for r, ids in enumerate(batch):
                for i in ids[1:]:
                    logits[r] += WEIGHTS.get(self.words[i], [0.0] * 4)
            return softmax64(logits)
        finally:
            with self._lock:
                self.active -= 1


def expected_log_odds(words: list[str]) -> tuple[float, float]:
    logits = np.zeros(4)
    for w in words:
        logits += WEIGHTS.get(w, [0.0] * 4)
    e = np.exp(logits)
    return float(np.log(e[0] / e[1:].sum())), float(np.log((e[2] + e[3]) / (e[0] + e[1])))


@pytest.fixture(scope="module")
def fake(tiny_model_dir: Path):
    backend = BagOfWordsBackend(read_sidecar(tiny_model_dir))
    settings = make_settings(tiny_model_dir, explain_top_k=3, explain_max_messages=4, max_batch_size=4)
    with TestClient(create_app(settings, backend_factory=lambda _: backend)) as client:
        yield client, backend


def test_occlusion_words_and_variants() -> None:
    words, variants = occlusions("Ada PUNGLI, pungli lagi! 🙏", max_words=64)
    assert words == ["ada", "pungli", "lagi", "🙏"]  # one entry per word, whatever its case or punctuation
    assert variants == ["PUNGLI, pungli lagi! 🙏", "Ada lagi! 🙏", "Ada PUNGLI, pungli 🙏", "Ada PUNGLI, pungli lagi!"]
    assert occlusions(" ".join(f"w{i}" for i in range(100)), max_words=8)[0] == [f"w{i}" for i in range(8)]
    assert word_key("...") == "..."


def test_log_odds_stay_finite_when_the_model_is_certain(tiny_model_dir: Path) -> None:
    sidecar = read_sidecar(tiny_model_dir)
    probs = np.array([[1.0 - 1e-30, 1e-30, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    validity, spam = log_odds(probs, sidecar)
    assert validity[0] == pytest.approx(np.log(1 / 1e-30))
    assert np.isfinite(spam[0]) and spam[0] < -600
    assert validity[1] == pytest.approx(np.log(1 / 3)) and spam[1] == pytest.approx(0.0)
    # From logits nothing rounds away, however sure the model: here P(not aduan) is below float64's range.
    logits = np.array([[900.0, 0.0, -5.0, 1.0]])
    validity, spam = log_odds(logits, sidecar, are_logits=True)
    assert validity[0] == pytest.approx(900.0 - np.log(1 + np.exp(-5.0) + np.exp(1.0)))
    assert spam[0] == pytest.approx(np.log(np.exp(-5.0) + np.exp(1.0)) - 900.0)


def test_weights_are_the_log_odds_differences(fake) -> None:
    client, backend = fake
    text = "tolong ada pungli gacor wkwk di sini"
    response = client.post("/v1/score", json={"explain": True, "messages": [{"id": "x", "text": text}]})
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    full = expected_log_odds(text.split())
    expected = {}
    for word in text.split():
        without = expected_log_odds([w for w in text.split() if w != word])
        expected[word] = (full[0] - without[0], full[1] - without[1])
    explanation = result["explanation"]
    assert len(explanation) == 3  # explain_top_k
    ranked = sorted(expected, key=lambda w: -max(abs(expected[w][0]), abs(expected[w][1])))
    assert [e["word"] for e in explanation] == ranked[:3] == ["pungli", "gacor", "tolong"]
    for entry in explanation:
        assert entry["validity"] == pytest.approx(expected[entry["word"]][0], abs=1e-9)
        assert entry["spam"] == pytest.approx(expected[entry["word"]][1], abs=1e-9)
    assert explanation[0]["validity"] > 0 > explanation[1]["validity"]  # pungli argues genuine, gacor against
    # Every forward ran on Infer's one model thread, never two at once.
    assert backend.threads == {n for n in backend.threads if n.startswith("saring-model")}
    assert not backend.overlapped


def test_no_explanation_unless_asked(fake) -> None:
    client, _ = fake
    response = client.post("/v1/score", json={"messages": [{"text": "ada pungli"}]})
    assert "explanation" not in response.json()["results"][0]


def test_explain_refuses_more_messages_than_its_limit(fake) -> None:
    client, _ = fake
    body = {"explain": True, "messages": [{"text": f"pesan {i}"} for i in range(5)]}
    error = assert_error_shape(client.post("/v1/score", json=body), 422)
    assert "SARING_EXPLAIN_MAX_MESSAGES" in error["message"] and "4" in error["message"]
    body["explain"] = False
    assert client.post("/v1/score", json=body).status_code == 200  # the same call without explain is fine


# -- a tiny model whose class evidence is known -------------------------------------------------------
#
# What did the session's tiny model (tests/fixtures/make_messages.py templates only) learn? Whole
# templates as token sequences: every word of "slot gacor hari ini maxwin ..." predicts spam equally
# well, always together and at the same positions, so which words (and positions) a run leans on is
# up to the run; and training here is not bit-reproducible (two runs of one seed on one thread differ).
# Planted in a greeting, "slot gacor" or "pungli" carried the class in most runs but not all: in 2 of
# 10 test runs a planted phrase weighed ~0 or the model leaned on "ada"/"di" rather than "pungli". An
# explanation cannot point at words the model does not use, so that model cannot test explanations.
#
# The model here learns the same templates plus rows in which ONE class keyword is planted among
# filler words that every class shares, in random order: by construction the keyword is the only
# class evidence of such a row. A crafted message (filler words in a new order, one keyword) must
# then be explained by its keyword. Checked on nine training runs (seeds 1-8) first. One keyword per
# message, because occlusion removes one word at a time: two words that each suffice ("slot gacor")
# back each other up, and removing either changes little.

FILLER = ["selamat", "pagi", "admin", "salam", "hangat", "dari", "mas", "min", "ya", "mohon", "info", "tolong"]
KEYWORDS = {
    "aduan": ["pungli", "rusak", "banjir", "bansos"],
    "bukan_aduan": ["semangat", "terimakasih", "sehat"],
    "iseng": ["tuyul", "jodoh", "wkwk"],
    "spam": ["gacor", "maxwin", "pinjol", "promo"],
}
CRAFTED = [
    ("salam hangat admin pungli dari medan selamat pagi", "validity", "pungli"),
    ("selamat pagi gacor salam dari medan admin", "spam", "gacor"),
]


def planted_rows(per_class: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for label, keywords in KEYWORDS.items():
        for i in range(per_class):
            words = [*rng.sample(FILLER, rng.randint(2, 6)), rng.choice(PLACES[:14])]
            rng.shuffle(words)
            words.insert(rng.randint(0, len(words)), keywords[i % len(keywords)])
            rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    from training.train import main

    root = tmp_path_factory.mktemp("planted")
    data = write_jsonl(make_messages(20, places=PLACES[:14]) + planted_rows(30, seed=1), root / "train.jsonl")
    argv = train_argv(data, root / "model", "--per_device_train_batch_size", "16", "--save_strategy", "no",
                      "--load_best_model_at_end", "false", epochs=40)  # fmt: skip
    with torch_threads(1):
        assert main(argv) == 0
    with TestClient(create_app(make_settings(root / "model", explain_top_k=64))) as client:
        yield client


@pytest.mark.parametrize(("text", "score", "keyword"), CRAFTED, ids=["pungli", "gacor"])
def test_explanations_point_at_the_planted_word(planted: TestClient, text: str, score: str, keyword: str) -> None:
    response = planted.post("/v1/score", json={"explain": True, "messages": [{"text": text}]})
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    weights = {e["word"]: e[score] for e in result["explanation"]}
    assert set(weights) == set(text.split())  # top_k=64: every word is there
    ranked = sorted(weights, key=lambda w: -weights[w])
    assert ranked[0] == keyword, f"{score} weights: {weights}"
    # Clearly ahead: the filler words, evidence for no class, weigh at least 1 (log-odds) less.
    assert weights[keyword] > max(weights[w] for w in ranked[1:]) + 1, weights
    # And it is the ranking the API returns by default: the keyword first.
    default = planted.post("/v1/score", json={"explain": True, "messages": [{"text": text}]})
    assert default.json()["results"][0]["explanation"][0]["word"] == keyword


def test_explanations_beyond_the_inflight_limit_get_429() -> None:
    import asyncio

    from service.errors import SaringError
    from service.features.explain import Explainer
    from service.http.errors import status_of

    class Queue:
        def retry_after(self) -> float:
            return 2.0

    explainer = Explainer(max_inflight=1)
    explainer.inflight = 1  # one explanation is running
    with pytest.raises(SaringError) as refused:
        asyncio.run(explainer.explain(Queue(), None, ["ada pungli"]))
    assert status_of(refused.value)[0] == 429 and refused.value.retry_after == 2.0
    assert "SARING_EXPLAIN_MAX_INFLIGHT" in refused.value.message
