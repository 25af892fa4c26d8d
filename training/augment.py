"""Label-preserving noise on top of written messages: slang, typos, casing, emoji, greetings.

Channel traffic is written every way at once ("tidak" / "tdk" / "gak", ALL CAPS, no punctuation,
stretched letters), so each written training message gets a few seeded variants. Only training
data is augmented; the written test split is never touched.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from training.data import normalise_for_dedup

# formal -> informal spellings seen in WhatsApp/SMS Indonesian (and the way back).
SLANG: dict[str, list[str]] = {
    "yang": ["yg"],
    "tidak": ["tdk", "gak", "ga", "nggak", "ngga"],
    "saya": ["sy", "aku", "gue"],
    "dengan": ["dgn", "dg"],
    "sudah": ["sdh", "udah", "udh"],
    "belum": ["blm", "blum"],
    "tolong": ["tlg", "tlong"],
    "mohon": ["mhn"],
    "bagaimana": ["gmn", "gimana"],
    "kenapa": ["knp", "napa"],
    "untuk": ["utk", "buat"],
    "karena": ["krn", "karna"],
    "terima kasih": ["makasih", "trims", "tq", "thx"],
    "sangat": ["bgt", "banget"],
    "juga": ["jg"],
    "sama": ["sm"],
    "dari": ["dr"],
    "pada": ["pd"],
    "bisa": ["bs"],
    "kami": ["kmi"],
    "sekarang": ["skrg", "skrng"],
    "tetapi": ["tp", "tapi"],
    "jalan": ["jln", "jl"],
    "desa": ["ds"],
    "kabupaten": ["kab"],
    "kecamatan": ["kec"],
    "bapak": ["pak", "bpk"],
    "ibu": ["bu"],
    "tahun": ["thn"],
    "hari": ["hr"],
    "nomor": ["no"],
    "apa": ["ap"],
    "aja": ["aj"],
    "lagi": ["lg"],
}
GREETINGS = [
    "Assalamualaikum", "Assalamualaikum wr wb", "Selamat pagi", "Selamat siang", "Selamat malam", "Halo min",
    "Permisi", "Punten", "Sugeng enjing", "Horas", "Salam sejahtera", "mas wapres", "Pak", "P",
]  # fmt: skip
EMOJI = ["🙏", "🙏🙏", "😭", "😡", "😂", "🤣", "👍", "‼️", "🔥", "😢", "🥺", "💯"]
WORD = re.compile(r"\b\w+\b")


def slangify(text: str, rng: random.Random) -> str:
    for formal, informal in SLANG.items():
        if rng.random() < 0.7:
            text = re.sub(rf"\b{formal}\b", lambda m, choices=informal: rng.choice(choices), text, flags=re.IGNORECASE)
    return text


def formalise(text: str, rng: random.Random) -> str:
    for formal, informal in SLANG.items():
        for short in informal:
            if rng.random() < 0.7:
                text = re.sub(rf"\b{re.escape(short)}\b", formal, text, flags=re.IGNORECASE)
    return text


def typos(text: str, rng: random.Random, rate: float = 0.03) -> str:
    chars = list(text)
    out: list[str] = []
    i = 0
    while i < len(chars):
        c = chars[i]
        r = rng.random()
        if c.isalpha() and r < rate:  # drop
            i += 1
            continue
        if c.isalpha() and r < 2 * rate and i + 1 < len(chars) and chars[i + 1].isalpha():  # swap
            out += [chars[i + 1], c]
            i += 2
            continue
        out.append(c)
        if c.isalpha() and r < 3 * rate:  # double
            out.append(c)
        i += 1
    return "".join(out)


def casing(text: str, rng: random.Random) -> str:
    return rng.choice([text.lower(), text.upper(), text.capitalize()])


def strip_punctuation(text: str, rng: random.Random) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[.,;:!?\"'()]", " ", text)).strip()


def stretch(text: str, rng: random.Random) -> str:
    words = WORD.findall(text)
    if not words:
        return text
    word = rng.choice(words)
    return text.replace(word, word + word[-1] * rng.randint(2, 4), 1)


def emoji(text: str, rng: random.Random) -> str:
    return f"{text} {rng.choice(EMOJI)}" if rng.random() < 0.7 else f"{rng.choice(EMOJI)} {text}"


def greet(text: str, rng: random.Random) -> str:
    return f"{rng.choice(GREETINGS)} {text[:1].lower() + text[1:]}" if text else text


TRANSFORMS: list[Callable[[str, random.Random], str]] = [
    slangify, formalise, typos, casing, strip_punctuation, stretch, emoji, greet,
]  # fmt: skip


def variants(text: str, n: int, rng: random.Random) -> list[str]:
    """Up to `n` distinct variants, each from 1-3 random transforms."""
    out: list[str] = []
    for _ in range(n * 3):
        if len(out) == n:
            break
        candidate = text
        for transform in rng.sample(TRANSFORMS, rng.randint(1, 3)):
            candidate = transform(candidate, rng)
        candidate = candidate.strip()
        if candidate and candidate != text and candidate not in out:
            out.append(candidate)
    return out


def augment_file(
    source: Path,
    out: Path,
    per_message: int = 1,
    seed: int = 13,
    validation_out: Path | None = None,
    validation_share: float = 0.15,
) -> dict[str, int]:
    """Write `source` rows plus `per_message` variants each (marked origin=augmented) to `out`.

    With `validation_out`, a stratified share of the written rows is held out first, unaugmented,
    so no variant of a validation message is trained on (thresholds are fitted on validation).
    """
    rng = random.Random(seed)
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    held_out: list[dict] = []
    if validation_out is not None:
        by_label: dict[str, list[dict]] = {}
        for row in rows:
            by_label.setdefault(row["label"], []).append(row)
        rows = []
        for label in sorted(by_label):
            group = by_label[label]
            rng.shuffle(group)
            k = round(len(group) * validation_share)
            held_out += group[:k]
            rows += group[k:]
        _write(validation_out, held_out)
    # A variant may coincide with another message ("tes" -> "TES"): never with a held-out one,
    # and never twice.
    seen = {normalise_for_dedup(r["text"]) for r in held_out}
    written = augmented = 0
    out_rows = []
    for row in rows:
        for text in [row["text"], *variants(row["text"], per_message, rng)]:
            key = normalise_for_dedup(text)
            if key in seen:
                continue
            seen.add(key)
            origin = "written" if text is row["text"] else "augmented"
            out_rows.append({**row, "text": text, "origin": origin})
            written += origin == "written"
            augmented += origin == "augmented"
    _write(out, out_rows)
    return {"written": written, "augmented": augmented, "validation": len(held_out)}


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
