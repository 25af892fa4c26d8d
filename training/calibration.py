"""Temperature scaling and the decision-band thresholds (docs/design.md section 3).

All fitted on validation data. The temperature is folded into the classification head so that
plain transformers users get the calibrated probabilities too.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from service.model.folder import Threshold

# A validation set the model separates perfectly drives T towards 0 (ever sharper probabilities);
# below 0.25 the folded model is over-confident on anything new, so T is kept in [0.25, 20].
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.25, 20.0


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    logp = log_softmax(logits / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE of the top-class confidence, equal-width bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The T > 0 minimising validation NLL of softmax(logits / T), with before/after figures."""
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)),
        method="bounded",
    )
    temperature = float(np.exp(result.x))
    return {
        "temperature": temperature,
        "nll_before": nll(logits, labels),
        "nll_after": nll(logits, labels, temperature),
        "ece_before": expected_calibration_error(softmax(logits, axis=1), labels),
        "ece_after": expected_calibration_error(softmax(logits / temperature, axis=1), labels),
    }


def calibrate(logits: np.ndarray, labels: np.ndarray) -> dict[str, float | bool | str]:
    """Fit T on all validation rows, and decide whether to fold it by two-fold cross-fitting.

    Each half's NLL is measured at the T fitted on the other half; T is folded only when that
    held-out NLL is lower than with no scaling (T = 1).
    """
    fitted = fit_temperature(logits, labels)
    halves = [np.arange(len(labels))[i::2] for i in (0, 1)]
    record: dict[str, float | bool | str] = {"method": "temperature", **fitted}
    if min(len(h) for h in halves) < 2:
        return {**record, "folded_into_head": False, "why": "too few validation rows to check it"}
    held_out = np.empty(len(labels))
    plain = np.empty(len(labels))
    for fit_rows, judge_rows in ((halves[0], halves[1]), (halves[1], halves[0])):
        t = fit_temperature(logits[fit_rows], labels[fit_rows])["temperature"]
        rows = np.arange(len(judge_rows))
        held_out[judge_rows] = -log_softmax(logits[judge_rows] / t, axis=1)[rows, labels[judge_rows]]
        plain[judge_rows] = -log_softmax(logits[judge_rows], axis=1)[rows, labels[judge_rows]]
    before, after = float(plain.mean()), float(held_out.mean())
    folded = after < before
    return {
        **record,
        "held_out_nll_before": before,
        "held_out_nll_after": after,
        "folded_into_head": folded,
        "why": "lowers held-out validation NLL" if folded else "does not lower held-out validation NLL: not folded",
    }


def fold_temperature(model, temperature: float) -> None:
    """Divide the final classification layer's weight and bias by T: logits / T, with no extra op."""
    import torch

    num_labels = model.config.num_labels
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_labels]
    if not linears:
        raise ValueError("no classification head (a Linear layer with num_labels outputs) found")
    head = linears[-1]  # the output projection is the last such layer in every HF classifier
    with torch.no_grad():
        head.weight.div_(temperature)
        if head.bias is not None:
            head.bias.div_(temperature)


def reject_threshold(
    validity: np.ndarray, is_aduan: np.ndarray, max_rate: float, cap: float = 1.0, positive: str = "aduan"
) -> Threshold:
    """Largest t <= cap with share(validity <= t | aduan) <= max_rate: few genuine complaints rejected.

    `cap` is at most the accept threshold (bands never overlap) and the --max_reject_threshold ceiling.
    `positive` names the labels that make validity, in the model's own words, for the objective.
    """
    genuine = np.sort(validity[is_aduan])
    allowed = int(np.floor(max_rate * len(genuine)))  # how many genuine complaints may fall at or below t
    value = float(np.nextafter(genuine[allowed], -np.inf)) if allowed < len(genuine) else 1.0
    capped = value > cap
    value = min(max(value, 0.0), cap)
    rate = float((genuine <= value).mean())
    # Genuine complaints tied at validity 0.0 (an over-confident model underflows) are rejected even at t = 0.
    unreachable = " (not reachable on validation data: too many at validity 0)" if rate > max_rate else ""
    return Threshold(
        value=value,
        objective=f"at most {max_rate:.1%} of genuine complaints ({positive}) rejected{unreachable}"
        + (f" (capped at {cap:g})" if capped else ""),
        target=max_rate,
        achieved={
            "aduan_rejected_rate": rate,
            "rejected_rate": float((validity <= value).mean()),
            "non_aduan_rejected_share": float((validity[~is_aduan] <= value).mean()) if (~is_aduan).any() else 0.0,
            "support": int(len(genuine)),
        },
    )


def precision_threshold(
    score: np.ndarray, positive: np.ndarray, precision_target: float, what: str, floor: float = 0.0
) -> Threshold:
    """Lowest t >= floor whose `score >= t` rule reaches the target precision (most recall at it).

    The floor keeps a rule from firing on scores the model itself calls unlikely: on validation
    data the model separates well, the lowest such t can sit near 0, and then new traffic with
    any hint of the class would pass. Falls back to 1.0 (the rule never fires) when no threshold
    reaches the target, and says so.
    """
    candidates = np.unique(score[score >= floor])
    chosen = 1.0
    for t in candidates:  # ascending: the first that reaches the target keeps the most recall
        fired = score >= t
        if positive[fired].mean() >= precision_target:
            chosen = float(t)
            break
    fired = score >= chosen
    reached = bool(fired.any() and positive[fired].mean() >= precision_target)
    return Threshold(
        value=chosen,
        objective=f"{what} precision >= {precision_target:.2f}"
        + (f", at least {floor:g}" if floor else "")
        + ("" if reached else " (not reachable on validation data: rule disabled)"),
        target=precision_target,
        achieved={
            "precision": float(positive[fired].mean()) if fired.any() else 0.0,
            "recall": float(fired[positive].mean()) if positive.any() else 0.0,
            "fired_rate": float(fired.mean()),
            "support": int(positive.sum()),
        },
    )
