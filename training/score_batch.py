"""Scoring one batch of backlog rows through the service's own inference path.

`load_backend` + `predict` (encode, length-sorted batches, forward) and `score_rows` (scores, decision
band) are exactly what `/v1/score` runs, so a backlog row gets the numbers the API would answer for
the same text. Both engines (local and Ray) call `BacklogScorer`, so they write the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.model.loading import load_backend, predict
from service.model.scoring import score_rows
from service.model.text_rules import unusable_text
from service.settings import default_of

# The columns of every output row, in order; `flood_cluster_size` only with --floods.
RESULT_COLUMNS = ("validity", "spam", "category", "probabilities", "decision", "is_spam", "truncated")
MODEL_COLUMNS = ("model_name", "model_version")
FLOOD_COLUMN = "flood_cluster_size"


def output_columns(floods: bool) -> list[str]:
    return ["id", *RESULT_COLUMNS, *([FLOOD_COLUMN] if floods else []), *MODEL_COLUMNS, "error"]


def text_problem(text: object) -> str | None:
    """Why /v1/score would refuse this text (None: it would score it)."""
    if text is None:
        return "no text"
    if not isinstance(text, str):
        return f"text is not a string ({type(text).__name__})"
    # The API's own rule (empty, invisible-only or lone-surrogate text), so a backlog refuses exactly
    # what the live channel refuses.
    return unusable_text(text)


class BacklogScorer:
    """A model folder loaded once; scores batches of raw texts into output rows (without `id`)."""

    def __init__(
        self,
        model_dir: str,
        backend: str = "torch",
        device: str = "auto",
        batch_size: int = default_of("max_batch_size"),
        max_batch_tokens: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.backend = load_backend(model_dir, kind=backend, device=device, num_threads=num_threads)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.model_name = self.backend.sidecar.name
        self.model_version = self.backend.sidecar.version

    @property
    def labels(self) -> list[str]:
        return list(self.backend.sidecar.labels)

    def score(self, texts: Sequence[object], problems: Sequence[str | None] | None = None) -> list[dict]:
        """One row per text, in order; a text with a problem (given, or found here) gets `error` and no scores."""
        errors = list(problems) if problems is not None else [text_problem(text) for text in texts]
        good = [i for i, error in enumerate(errors) if error is None]
        rows: list[dict] = [
            {**dict.fromkeys(RESULT_COLUMNS), "model_name": self.model_name, "model_version": self.model_version}
            for _ in texts
        ]
        if good:
            probs, truncated = predict(
                self.backend,
                [texts[i] for i in good],
                max_batch_size=self.batch_size,
                max_batch_tokens=self.max_batch_tokens,
            )
            for i, result, cut in zip(good, score_rows(probs, self.backend.sidecar), truncated, strict=True):
                rows[i].update(
                    validity=result.validity,
                    spam=result.spam,
                    category=result.category,
                    probabilities=result.probabilities,
                    decision=result.decision,
                    is_spam=result.is_spam,
                    truncated=bool(cut),
                )
        for row, error in zip(rows, errors, strict=True):
            row["error"] = error
        return rows
