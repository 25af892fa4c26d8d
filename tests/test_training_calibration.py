"""Calibration and thresholds: the properties docs/design.md section 3 promises, on random and real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax
from training_fixtures import (
    CATEGORIES,
    read_jsonl,
    train_argv,
)

from service.model.folder import read_sidecar
from service.model.loading import predict
from service.model.torch_backend import TorchBackend
from training.calibration import (
    fit_temperature,
    fold_temperature,
    nll,
    precision_threshold,
    reject_threshold,
)
from training.train import weighted_loss

TARGETS = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 0.9]


def random_validity(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    if kind == "continuous":
        return rng.random(n)
    if kind == "ties":  # few distinct values: many ties, as a saturated or quantised model gives
        return rng.choice(np.linspace(0.0, 1.0, 6)[1:], size=n)
    # saturated: exact 0.0 and 1.0, as softmax gives once a folded temperature makes logits huge
    return rng.choice([0.0, 1e-12, 0.3, 0.7, 1.0], size=n, p=[0.05, 0.1, 0.25, 0.25, 0.35])


@pytest.mark.parametrize("kind", ["continuous", "ties", "saturated"])
def test_reject_threshold_keeps_rejected_aduan_at_or_under_target(kind):
    rng = np.random.default_rng(0)
    checked = unreachable = 0
    for _ in range(150):
        n = int(rng.integers(5, 400))
        validity = random_validity(rng, n, kind)
        is_aduan = rng.random(n) < rng.uniform(0.1, 0.9)
        is_aduan[0] = True
        genuine = validity[is_aduan]
        for target in TARGETS:
            t = reject_threshold(validity, is_aduan, target)
            rate = (genuine <= t.value).mean()
            assert 0.0 <= t.value <= 1.0
            assert t.achieved["aduan_rejected_rate"] == pytest.approx(rate)
            assert t.achieved["rejected_rate"] == pytest.approx((validity <= t.value).mean())
            assert t.achieved["support"] == len(genuine)
            if rate > target:
                # Only possible when genuine complaints sit at validity 0.0 (no t >= 0 spares them),
                # and then the threshold says so instead of claiming its objective.
                assert t.value == 0.0 and (genuine == 0.0).mean() > target
                assert "not reachable" in t.objective
                unreachable += 1
                continue
            assert "not reachable" not in t.objective
            checked += 1
            # The largest such threshold: the next genuine value up would reject too many.
            above = genuine[genuine > t.value]
            if above.size:
                assert (genuine <= above.min()).mean() > target
            else:
                assert t.value == 1.0 or (genuine <= 1.0).mean() > target
    assert checked > 500
    if kind == "saturated":
        assert unreachable > 0  # the tie-at-zero case really was exercised


def test_reject_threshold_with_ties_at_the_boundary():
    validity = np.array([0.2, 0.2, 0.2, 0.2, 0.6, 0.6, 0.9, 0.9, 0.9, 0.9, 0.1])
    is_aduan = np.array([True] * 10 + [False])
    # 10 % may be rejected, but the lowest genuine value is shared by 4: none can be rejected.
    t = reject_threshold(validity, is_aduan, 0.1)
    assert t.value < 0.2 and (validity[is_aduan] <= t.value).sum() == 0
    assert (validity[~is_aduan] <= t.value).all()  # the non-complaint at 0.1 is still rejected
    # 40 % may be rejected: the four tied values go together.
    t = reject_threshold(validity, is_aduan, 0.4)
    assert 0.2 <= t.value < 0.6 and (validity[is_aduan] <= t.value).sum() == 4


def best_threshold_by_brute_force(score: np.ndarray, positive: np.ndarray, target: float) -> float | None:
    reaching = [t for t in np.unique(score) if positive[score >= t].mean() >= target]
    return min(reaching) if reaching else None


@pytest.mark.parametrize("signal", [0.0, 0.5, 2.0])
def test_precision_threshold_reaches_target_or_disables_itself(signal):
    rng = np.random.default_rng(1)
    reached = disabled = 0
    for _ in range(100):
        n = int(rng.integers(5, 300))
        positive = rng.random(n) < rng.uniform(0.05, 0.6)
        score = 1 / (1 + np.exp(-(signal * (2 * positive - 1) + rng.normal(size=n))))
        score = np.round(score, int(rng.integers(1, 4)))  # ties
        score = np.minimum(score, 0.999)  # keep 1.0 free: a rule at 1.0 fires on nothing here
        for target in [0.5, 0.8, 0.9, 0.95, 0.99, 1.0]:
            t = precision_threshold(score, positive, target, "accept")
            fired = score >= t.value
            expected = best_threshold_by_brute_force(score, positive, target)
            if expected is None:
                assert t.value == 1.0 and not fired.any()
                assert "not reachable" in t.objective
                assert t.achieved["precision"] == 0.0 and t.achieved["fired_rate"] == 0.0
                disabled += 1
            else:
                assert t.value == pytest.approx(expected)  # the lowest: most recall at that precision
                assert positive[fired].mean() >= target
                assert "not reachable" not in t.objective
                assert t.achieved["precision"] == pytest.approx(positive[fired].mean())
                assert t.achieved["recall"] == pytest.approx(fired[positive].mean() if positive.any() else 0.0)
                reached += 1
    assert reached > 50 and disabled > 5


def test_precision_threshold_disabled_when_no_positive_at_all():
    t = precision_threshold(np.array([0.1, 0.5, 0.9]), np.array([False, False, False]), 0.95, "is_spam")
    assert t.value == 1.0 and "not reachable" in t.objective and t.achieved["support"] == 0


def tiny_classifier(num_labels: int = 4):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=120,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config).eval()


@pytest.mark.parametrize("temperature", [0.05, 0.7, 2.5])
def test_fold_temperature_divides_logits_exactly(temperature):
    model = tiny_classifier()
    with torch.no_grad():
        model.classifier.bias.normal_()  # a non-zero bias must be divided too
    ids = torch.randint(5, 120, (6, 11), generator=torch.Generator().manual_seed(1))
    encoder_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("classifier")}
    with torch.no_grad():
        before = model(input_ids=ids).logits
    fold_temperature(model, temperature)
    with torch.no_grad():
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before / temperature, rtol=1e-5, atol=1e-6)
    for key, value in model.state_dict().items():
        if not key.startswith("classifier"):
            assert torch.equal(value, encoder_before[key]), f"{key} changed"


def test_fit_temperature_lowers_nll_of_overconfident_logits():
    rng = np.random.default_rng(2)
    true_logits = rng.normal(scale=1.5, size=(3000, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(true_logits, axis=1)])
    overconfident = 4.0 * true_logits
    fitted = fit_temperature(overconfident, labels)
    assert fitted["temperature"] == pytest.approx(4.0, rel=0.15)
    assert fitted["nll_after"] < fitted["nll_before"] - 0.1
    assert fitted["nll_after"] == pytest.approx(nll(overconfident, labels, fitted["temperature"]))
    assert fitted["ece_after"] < fitted["ece_before"]
    # Under-confident logits get T < 1 (sharpened), and already calibrated ones keep T near 1.
    assert fit_temperature(true_logits / 3, labels)["temperature"] == pytest.approx(1 / 3, rel=0.15)
    assert fit_temperature(true_logits, labels)["temperature"] == pytest.approx(1.0, rel=0.1)


def test_weighted_loss_follows_trainers_num_items_contract():
    """Summing ranks (or accumulation steps) must give the loss of the whole batch, not a multiple of it.

    Trainer multiplies a compute_loss_func's loss by the number of processes and skips its own
    gradient-accumulation division when num_items_in_batch is passed; DDP then averages.
    """
    train_labels = ["aduan"] * 50 + ["bukan_aduan"] * 30 + ["iseng"] * 5 + ["spam"] * 15
    loss_fn = weighted_loss(train_labels, CATEGORIES)
    weights = np.array([100 / (4 * c) for c in (50, 30, 5, 15)])
    assert (weights * np.array([50, 30, 5, 15])).sum() / 100 == pytest.approx(1.0)  # mean weight over data is 1

    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(16, 4, generator=generator)
    targets = torch.randint(0, 4, (16,), generator=generator)
    n = torch.tensor(16)
    whole = loss_fn({"logits": logits}, targets, num_items_in_batch=n)
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    expected = (torch.tensor(weights, dtype=torch.float32)[targets] * ce).sum() / 16
    torch.testing.assert_close(whole, expected)
    world = 2
    per_rank = [loss_fn({"logits": logits[i::world]}, targets[i::world], num_items_in_batch=n) for i in range(world)]
    ddp_loss = sum(loss * world for loss in per_rank) / world  # Trainer's scaling, then DDP's mean
    torch.testing.assert_close(ddp_loss, whole)
    # Without a count (plain calls) it stays the weighted mean of the batch.
    plain = loss_fn((logits,), targets)
    w = torch.tensor(weights, dtype=torch.float32)[targets]
    torch.testing.assert_close(plain, (w * ce).sum() / w.sum())


def test_trained_folder_thresholds_hold_on_its_validation_data(trained):
    sidecar = read_sidecar(trained.folder)
    rows = read_jsonl(trained.data.validation)
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    backend = TorchBackend(trained.folder, device="cpu")
    probs, _ = predict(backend, texts)
    index = {label: i for i, label in enumerate(sidecar.labels)}
    validity = probs[:, [index[x] for x in sidecar.scores["validity"]]].sum(axis=1)
    spam = probs[:, [index[x] for x in sidecar.scores["spam"]]].sum(axis=1)
    is_aduan = np.isin(labels, sidecar.scores["validity"])
    is_spam = np.isin(labels, sidecar.scores["spam"])

    assert sidecar.reject.target == 0.01 and sidecar.accept.target == 0.95
    rejected_aduan = (validity[is_aduan] <= sidecar.reject.value).mean()
    assert rejected_aduan <= sidecar.reject.target or "not reachable" in sidecar.reject.objective
    if "capped" not in sidecar.reject.objective:
        assert sidecar.reject.achieved["aduan_rejected_rate"] == pytest.approx(rejected_aduan, abs=1e-12)
    for threshold, score, positive in ((sidecar.accept, validity, is_aduan), (sidecar.spam, spam, is_spam)):
        fired = score >= threshold.value
        if "not reachable" in threshold.objective:
            assert threshold.value == 1.0
        else:
            assert positive[fired].mean() >= threshold.target
            assert threshold.achieved["precision"] == pytest.approx(positive[fired].mean(), abs=1e-12)

    # The fitted temperature is folded into the saved head only when it lowers held-out NLL: then the
    # folder's own logits give nll_after, else they are the unscaled ones (nll_before).
    logits, _ = predict(backend, texts, forward=backend.logits)
    y = np.array([index[label] for label in labels])
    calibration = sidecar.calibration
    assert calibration["method"] == "temperature"
    folded = calibration["folded_into_head"]
    assert folded == (calibration["held_out_nll_after"] < calibration["held_out_nll_before"])
    assert sidecar.temperature == (calibration["temperature"] if folded else 1.0)
    expected = calibration["nll_after"] if folded else calibration["nll_before"]
    assert nll(logits, y) == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_folding_keeps_float32_weights_when_the_backend_runs_in_half_precision(tmp_path, messages, monkeypatch):
    """On GPUs the service backend holds bf16 weights; folding must not save those (a rounded model)."""
    original_init = TorchBackend.__init__

    def bf16_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.model = self.model.to(torch.bfloat16)  # what TorchBackend does on a CUDA device

    monkeypatch.setattr(TorchBackend, "__init__", bf16_init)
    from safetensors.torch import load_file

    from training.train import main

    out = tmp_path / "m"
    argv = train_argv(messages.train, out, "--validation_file", str(messages.validation), "--save_strategy", "no")
    assert main([*argv, "--load_best_model_at_end", "false", "--num_train_epochs", "3"]) == 0
    weights = load_file(out / "model.safetensors")
    encoder = [v for k, v in weights.items() if "encoder" in k and v.dtype == torch.float32 and v.numel() > 100]
    assert encoder
    # A bf16 value stored as float32 has its low 16 mantissa bits at zero; trained fp32 weights do not.
    low_bits = torch.cat([(v.view(torch.int32) & 0xFFFF).flatten() for v in encoder])
    assert (low_bits != 0).float().mean() > 0.9


def test_precision_threshold_never_below_its_floor():
    """A well-separated validation set reaches the precision at a tiny score; the floor holds the line."""
    score = np.array([0.01, 0.02, 0.03, 0.3, 0.6, 0.7, 0.9, 0.95])
    positive = np.array([False, True, True, True, True, True, True, True])
    assert precision_threshold(score, positive, 0.95, "accept").value == pytest.approx(0.02)
    floored = precision_threshold(score, positive, 0.95, "accept", floor=0.5)
    assert floored.value == pytest.approx(0.6)
    assert "at least 0.5" in floored.objective
    assert floored.achieved["recall"] == pytest.approx(4 / 7)
