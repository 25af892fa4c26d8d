"""TF-IDF + logistic regression: the baseline a transformer has to beat on the same data.

Trained on the same training split and scored with the same figures (training.metrics), so the
comparison in a model card is like for like.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, make_pipeline

from training.metrics import classification_figures


def train_baseline(texts: Sequence[str], labels: Sequence[str], classes: Sequence[str], seed: int = 42):
    features = FeatureUnion(
        [
            ("words", TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, lowercase=True)),
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)),
        ]
    )
    model = make_pipeline(
        features, LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced", random_state=seed)
    )
    label_ids = {label: i for i, label in enumerate(classes)}
    model.fit(list(texts), [label_ids[y] for y in labels])
    return model


def baseline_figures(model, texts: Sequence[str], labels: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    label_ids = {label: i for i, label in enumerate(classes)}
    y_true = np.array([label_ids[y] for y in labels])
    figures = classification_figures(y_true, model.predict(list(texts)), classes)
    figures["n"] = len(labels)
    return figures
