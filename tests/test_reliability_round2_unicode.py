"""Issue 14, item 8: styled spam scores like plain spam.

The outside probe scored "SLOT GACOR ... bit.ly/gacor" spam 0.98, its fullwidth form 0.07 and its
mathematical-bold form 0.04. The normaliser inside the tokenizer (service/model/encoding.py: NFKC,
look-alike letters folded, invisible characters dropped) makes every styled variant the same token
ids as the plain text, so the same scores, in training and serving alike.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_fixtures import SPAM, make_settings
from tokenizers import Tokenizer, models, pre_tokenizers

from service.http.app import create_app
from service.model.encoding import LOOKALIKES, add_text_normaliser, saring_normaliser

# Latin letter -> a Cyrillic or Greek letter that looks the same (the reverse of LOOKALIKES).
DISGUISE = {latin: other for other, latin in LOOKALIKES.items() if latin.islower() and other.isalpha()}


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in text)


def math_bold(text: str) -> str:
    def one(c: str) -> str:
        if "a" <= c <= "z":
            return chr(0x1D41A + ord(c) - ord("a"))
        if "A" <= c <= "Z":
            return chr(0x1D400 + ord(c) - ord("A"))
        if "0" <= c <= "9":
            return chr(0x1D7CE + ord(c) - ord("0"))
        return c

    return "".join(map(one, text))


def lookalikes(text: str) -> str:
    return "".join(DISGUISE.get(c, c) for c in text)


def zero_width_split(text: str) -> str:
    marks = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
    return " ".join(w[: len(w) // 2] + marks[i % len(marks)] + w[len(w) // 2 :] for i, w in enumerate(text.split()))


STYLES = {
    "fullwidth": fullwidth,
    "math-bold": math_bold,
    "lookalikes": lookalikes,
    "zero-width": zero_width_split,
    "all-at-once": lambda t: zero_width_split(lookalikes(t)),
}
PROBE = "SLOT GACOR hari ini maxwin daftar di bit.ly/gacor"


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("text", [PROBE, SPAM, "Jalan di Desa Bandung rusak parah, mohon diperbaiki 2024"])
def test_the_normaliser_turns_styled_text_back_into_the_plain_text(style: str, text: str) -> None:
    styled = STYLES[style](text)
    assert styled != text
    normalise = saring_normaliser().normalize_str
    assert normalise(styled) == normalise(text) == text


def test_lookalike_disguise_really_changes_most_letters() -> None:
    changed = sum(a != b for a, b in zip(lookalikes(SPAM), SPAM, strict=True))
    assert changed >= len(SPAM.replace(" ", "")) // 3, lookalikes(SPAM)


def test_the_normaliser_is_added_once_in_front_of_the_tokenizers_own() -> None:
    from transformers import PreTrainedTokenizerFast

    base = Tokenizer(models.WordLevel({"[UNK]": 0, "slot": 1, "gacor": 2}, unk_token="[UNK]"))
    base.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=base, unk_token="[UNK]")
    assert tokenizer(fullwidth("slot gacor"))["input_ids"] == [0, 0]  # two unknown fullwidth words
    add_text_normaliser(tokenizer)
    add_text_normaliser(tokenizer)  # idempotent: one normaliser, not two
    assert tokenizer.backend_tokenizer.to_str().count('"NFKC"') == 1
    for style in STYLES.values():
        assert tokenizer(style("slot gacor"))["input_ids"] == [1, 2]


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path):
    with TestClient(create_app(make_settings(tiny_model_dir, flood_detection=False))) as client:
        yield client


@pytest.mark.parametrize("style", STYLES)
def test_styled_spam_scores_like_the_plain_spam_on_a_trained_model(client: TestClient, style: str) -> None:
    plain_text = SPAM
    styled_text = STYLES[style](SPAM)
    plain, styled = client.post("/v1/score", json={"messages": [{"text": plain_text}, {"text": styled_text}]}).json()[
        "results"
    ]
    assert plain["category"] == "spam"
    assert styled["category"] == plain["category"] and styled["decision"] == plain["decision"]
    assert styled["is_spam"] == plain["is_spam"]
    for label, p in plain["probabilities"].items():
        assert math.isclose(styled["probabilities"][label], p, rel_tol=1e-6, abs_tol=1e-9), (label, styled, plain)
