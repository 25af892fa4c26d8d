"""Evaluation figures and plots, computed the same way for training, `evaluate` and `compare`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
)

from service.model.folder import Sidecar
from service.model.scoring import ACCEPT, REJECT, REVIEW, decide, decision_counts, score_columns

# A faster form of a model (ONNX int8, bf16) is accepted when its macro-F1 on each checked set is at
# most this far below the full-precision model's (0.01 = 1 point).
MAX_F1_DROP = 0.01


def within_f1_drop(reference: float, candidate: float, max_drop: float = MAX_F1_DROP) -> bool:
    return bool(reference - candidate <= max_drop + 1e-9)  # 1e-9: 0.85 - 0.84 is a hair above 0.01 in floats


def classification_figures(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    # Macro-F1 over the labels this set contains: a set without pranks (real public data has
    # none) should not score a zero F1 for `iseng` into the average.
    present = [i for i in ids if (y_true == i).any()]
    return {
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "macro_f1_labels": [labels[i] for i in present],
        "accuracy": float((y_true == y_pred).mean()),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {
            "labels": list(labels),
            "matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        },
    }


def decision_band_figures(validity: np.ndarray, is_aduan: np.ndarray, sidecar: Sidecar) -> dict[str, float]:
    decisions = decide(validity, sidecar.accept.value, sidecar.reject.value)
    accept, reject, review = (decisions == ACCEPT), (decisions == REJECT), (decisions == REVIEW)
    return {
        "aduan_rejected_rate": float(reject[is_aduan].mean()) if is_aduan.any() else 0.0,
        "accept_precision": float(is_aduan[accept].mean()) if accept.any() else 0.0,
        "accept_recall": float(accept[is_aduan].mean()) if is_aduan.any() else 0.0,
        "accept_rate": float(accept.mean()),
        "review_rate": float(review.mean()),
        "reject_rate": float(reject.mean()),
    }


def evaluate_probabilities(probs: np.ndarray, labels: Sequence[str], sidecar: Sidecar) -> dict[str, Any]:
    """All figures for one labelled set scored by a model folder."""
    label_ids = {label: i for i, label in enumerate(sidecar.labels)}
    y_true = np.array([label_ids[label] for label in labels])
    y_pred = probs.argmax(axis=1)
    columns = score_columns(probs, sidecar.labels, sidecar.scores)
    validity, spam = columns["validity"], columns["spam"]
    is_aduan = np.isin(y_true, [label_ids[label] for label in sidecar.scores["validity"]])
    is_spam = np.isin(y_true, [label_ids[label] for label in sidecar.scores["spam"]])
    figures = classification_figures(y_true, y_pred, sidecar.labels)
    figures["decision_band"] = decision_band_figures(validity, is_aduan, sidecar)
    figures["decisions"] = decision_counts(decide(validity, sidecar.accept.value, sidecar.reject.value))
    figures["spam_flag"] = {
        "precision": float(is_spam[spam >= sidecar.spam.value].mean()) if (spam >= sidecar.spam.value).any() else 0.0,
        "recall": float((spam >= sidecar.spam.value)[is_spam].mean()) if is_spam.any() else 0.0,
    }
    figures["average_precision"] = {
        "validity": float(average_precision_score(is_aduan, validity)) if is_aduan.any() else 0.0,
        "spam": float(average_precision_score(is_spam, spam)) if is_spam.any() else 0.0,
    }
    figures["n"] = len(labels)
    return figures


def save_plots(
    probs: np.ndarray, labels: Sequence[str], sidecar: Sidecar, out_dir: Path, title: str = ""
) -> list[Path]:
    """confusion_matrix.png and pr_curves.png for one labelled set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label_ids = {label: i for i, label in enumerate(sidecar.labels)}
    y_true = np.array([label_ids[label] for label in labels])
    matrix = confusion_matrix(y_true, probs.argmax(axis=1), labels=list(range(len(sidecar.labels))))

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(sidecar.labels)), sidecar.labels, rotation=30, ha="right")
    ax.set_yticks(range(len(sidecar.labels)), sidecar.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            color="white" if count > matrix.max() / 2 else "black",
        )
    ax.set_title(f"Confusion matrix {title}".strip())
    fig.tight_layout()
    cm_path = out_dir / "confusion_matrix.png"
    fig.savefig(cm_path, dpi=110)
    plt.close(fig)

    columns = score_columns(probs, sidecar.labels, sidecar.scores)
    validity, spam = columns["validity"], columns["spam"]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, score, members in (
        ("validity (" + "+".join(sidecar.scores["validity"]) + ")", validity, sidecar.scores["validity"]),
        ("spam (" + "+".join(sidecar.scores["spam"]) + ")", spam, sidecar.scores["spam"]),
    ):
        positive = np.isin(y_true, [label_ids[m] for m in members])
        if positive.any() and (~positive).any():
            precision, recall, _ = precision_recall_curve(positive, score)
            ax.plot(
                recall,
                precision,
                label=f"{name}, AP={average_precision_score(positive, score):.3f}",
            )
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    ax.set_title(f"Precision-recall {title}".strip())
    fig.tight_layout()
    pr_path = out_dir / "pr_curves.png"
    fig.savefig(pr_path, dpi=110)
    plt.close(fig)
    return [cm_path, pr_path]


def summary_line(name: str, figures: dict[str, Any], validity_labels: Sequence[str]) -> str:
    """One log line per evaluated set; the reject-band share is named with the model's validity labels."""
    band = figures["decision_band"]
    return (
        f"{name:<12} n={figures['n']:<6} macro-F1={figures['macro_f1']:.3f}  "
        f"accept precision={band['accept_precision']:.3f}  "
        f"{'+'.join(validity_labels)} rejected={band['aduan_rejected_rate']:.3%}  "
        f"review={band['review_rate']:.1%}"
    )
