"""Why a message got its scores: occlusion on words (`explain: true` on /v1/score).

For each distinct word (up to `max_words` per message), the message is scored again without it;
a word's weight is score(full) - score(without the word), for validity and for spam, measured in
log-odds (the "weight of evidence" of Robnik-Sikonja and Kononenko's prediction difference). Not in
probability: a confident model answers 0.99999 with or without any single word, so probability
differences would all be ~0 and rank nothing, while log-odds still tell the words apart. Positive:
the word pushed that score up. The cost is one extra forward row per word, which is why the words
per message, the messages per request and the explained requests at once are all capped.

"Without it" means the word's sub-word tokens replaced by as many unknown tokens ([UNK]), not the
word deleted: deleting shifts every later token's position, and a transformer then reacts to the
shift (on the test suite's tiny model, deleting a leading "selamat" moved spam more than any spam
word did). A backend without a tokenizer to ask falls back to deleting.

The rows run through the served backend on Infer's model thread at low priority (`run_when_idle`):
a batch of rows runs only when no message waits to be scored, and the batches are small
(SARING_EXPLAIN_BATCH_TOKENS), so a plain score waits behind at most one of them. Explanations also
obey the request timeout: one that cannot finish in time is a 503 `timeout`, not a late 200.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from service.core.infer import Infer
from service.errors import ModelFailed, Overloaded, TimedOut
from service.model.backend import Backend
from service.model.batching import length_sorted_batches
from service.model.folder import Sidecar
from service.settings import default_of

_WORD = re.compile(r"\S+")

logger = logging.getLogger("saring")


@dataclass(frozen=True)
class WordWeight:
    """How much removing `word` lowers validity and spam, in log-odds (positive: it pushed that score up)."""

    word: str
    validity: float
    spam: float


_EDGE_PUNCTUATION = re.compile(r"^\W+|\W+$")


def log_odds(scores: np.ndarray, sidecar: Sidecar, are_logits: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Log-odds of validity and of spam per row, from logits (exact) or class probabilities.

    Logits when the backend gives them: a model with its temperature folded in is often so sure
    that float64 probabilities round to exactly 1 and 0, and then no word would seem to matter.
    From probabilities, each side is summed from its own classes rather than taken as 1 - p
    (float64 keeps 1e-30, but 1 - 1e-30 is 1.0).
    """
    index = {label: i for i, label in enumerate(sidecar.labels)}
    log_p = scores if are_logits else np.log(np.maximum(scores, np.finfo(np.float64).tiny))
    out = []
    for score in ("validity", "spam"):
        members = np.zeros(len(sidecar.labels), dtype=bool)
        members[[index[label] for label in sidecar.scores[score]]] = True
        out.append(_logsumexp(log_p[:, members]) - _logsumexp(log_p[:, ~members]))
    return out[0], out[1]


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=1)
    return top + np.log(np.exp(x - top[:, None]).sum(axis=1))


def words_of(text: str) -> list[str]:
    """The text's whitespace-separated tokens."""
    return _WORD.findall(text)


def word_key(token: str) -> str:
    """'Gacor!!' and 'gacor' are one word; a token of only punctuation or emoji is its own."""
    return _EDGE_PUNCTUATION.sub("", token).casefold() or token


def occlusions(text: str, max_words: int, stand_in: Callable[[str], str] | None = None) -> tuple[list[str], list[str]]:
    """Distinct words (first `max_words`, in order of appearance) and the text without each of them:
    every occurrence replaced by `stand_in(token)`, or dropped when there is none."""
    tokens = words_of(text)
    keys = [word_key(t) for t in tokens]
    distinct = list(dict.fromkeys(keys))[:max_words]
    variants = []
    for word in distinct:
        kept = [(stand_in(t) if stand_in else None) if k == word else t for t, k in zip(tokens, keys, strict=True)]
        variants.append(" ".join(t for t in kept if t is not None))
    return distinct, variants


def unknown_token(backend: Backend) -> str | None:
    """The tokenizer's unknown token (saring's torch and ONNX backends both have one), else None."""
    tokenizer = getattr(getattr(backend, "encoder", None), "tokenizer", None)
    return getattr(tokenizer, "unk_token", None)


def unknown_stand_in(backend: Backend, texts: Sequence[str], max_words: int) -> Callable[[str], str] | None:
    """token -> as many unknown tokens as the token has sub-word pieces, so positions do not move."""
    unk = unknown_token(backend)
    if not unk:
        return None
    tokens: set[str] = set()
    for text in texts:  # only the tokens that will be occluded: bounded by max_words per text
        occluded = set(list(dict.fromkeys(word_key(t) for t in words_of(text)))[:max_words])
        tokens.update(t for t in words_of(text) if word_key(t) in occluded)
    tokens = sorted(tokens)
    encoded = backend.encode(["", *tokens]).ids
    specials = len(encoded[0])  # [CLS] [SEP] or whatever the tokenizer adds around any text
    pieces = {t: max(1, len(ids) - specials) for t, ids in zip(tokens, encoded[1:], strict=True)}
    return lambda token: " ".join([unk] * pieces[token])


class Explainer:
    def __init__(
        self,
        max_words: int = default_of("explain_max_words"),
        top_k: int = default_of("explain_top_k"),
        max_inflight: int = default_of("explain_max_inflight"),
        max_batch_size: int = default_of("max_batch_size"),
        max_batch_tokens: int = default_of("explain_batch_tokens"),
    ) -> None:
        self.max_words = max_words
        self.top_k = top_k
        self.max_inflight = max_inflight
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.inflight = 0

    async def explain(
        self, infer: Infer, backend: Backend, texts: Sequence[str], deadline: float | None = None
    ) -> list[list[WordWeight]]:
        """Top-k words by |weight| per text, scored by `backend` (the one that scored the request).

        `deadline` (time.monotonic()): past it, TimedOut; the batches not yet run are dropped.
        """
        if self.inflight >= self.max_inflight:
            raise Overloaded(
                f"too many explanations running (limit {self.max_inflight}, SARING_EXPLAIN_MAX_INFLIGHT); "
                "retry later or score without explain",
                retry_after=infer.retry_after(),
            )
        self.inflight += 1
        try:
            remaining = None if deadline is None else deadline - time.monotonic()
            return await asyncio.wait_for(self._explain(infer, backend, texts), timeout=remaining)
        except TimeoutError:
            raise TimedOut(
                "explanation not finished within the request timeout (SARING_REQUEST_TIMEOUT_S); "
                "send fewer messages with explain=true or score without it",
                retry_after=infer.retry_after(),
            ) from None
        finally:
            self.inflight -= 1

    async def _explain(self, infer: Infer, backend: Backend, texts: Sequence[str]) -> list[list[WordWeight]]:
        rows: list[str] = []
        spans: list[tuple[list[str], int]] = []  # per text: its words and where its full text sits in rows
        stand_in = await asyncio.to_thread(unknown_stand_in, backend, texts, self.max_words)
        for text in texts:
            words, variants = occlusions(text, self.max_words, stand_in)
            spans.append((words, len(rows)))
            rows += [text, *variants]
        encoded = await asyncio.to_thread(backend.encode, rows)  # tokenising does not touch the weights
        lengths = [len(ids) for ids in encoded.ids]
        logits = getattr(backend, "logits", None)  # both saring backends have it; forward gives probabilities
        run = logits or backend.forward
        scores = np.zeros((len(rows), len(backend.sidecar.labels)), dtype=np.float64)
        for batch in length_sorted_batches(lengths, self.max_batch_size, self.max_batch_tokens):
            try:  # low priority: only while no message waits to be scored
                scores[batch] = await infer.run_when_idle(run, [encoded.ids[i] for i in batch])
            except Exception as exc:
                logger.exception("explanation forward failed for a batch of %d", len(batch))
                raise ModelFailed(f"model error: {type(exc).__name__}") from exc
        if not np.isfinite(scores).all():  # would be NaN weights in the answer
            logger.error("explanation refused: the model answered non-finite numbers")
            raise ModelFailed("model error: its output for the explanation is not finite")
        validity, spam = log_odds(scores, backend.sidecar, are_logits=logits is not None)
        answers = []
        for words, start in spans:
            base, rest = start, slice(start + 1, start + 1 + len(words))
            d_validity = validity[base] - validity[rest]
            d_spam = spam[base] - spam[rest]
            strength = np.maximum(np.abs(d_validity), np.abs(d_spam))
            order = sorted(range(len(words)), key=lambda i: -strength[i])[: self.top_k]  # stable: ties keep text order
            answers.append(
                [WordWeight(word=words[i], validity=float(d_validity[i]), spam=float(d_spam[i])) for i in order]
            )
        return answers
