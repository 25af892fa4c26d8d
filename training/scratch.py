"""An offline base model: a fresh BERT whose WordPiece vocabulary is learnt from the training texts.

Used when the hub cannot be reached (tests, air-gapped desks, the default model). Optionally
pre-trained with masked-language modelling on the same texts before fine-tuning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from service.model.encoding import saring_normaliser

logger = logging.getLogger(__name__)

# name -> (vocab, hidden, layers, heads, intermediate)
PRESETS: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (2000, 32, 2, 2, 64),
    "small": (12000, 256, 4, 4, 1024),
    "base": (50000, 768, 12, 12, 3072),
}
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _empty_wordpiece(vocab: dict[str, int] | None = None) -> Tokenizer:
    model = models.WordPiece(vocab=vocab, unk_token="[UNK]") if vocab else models.WordPiece(unk_token="[UNK]")
    tokenizer = Tokenizer(model)
    # The vocabulary is learnt from text as the encoding path will see it (service/model/encoding.py).
    tokenizer.normalizer = normalizers.Sequence(
        [saring_normaliser(), normalizers.BertNormalizer(lowercase=True, strip_accents=True)]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def train_wordpiece(texts: Sequence[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """A BERT-style uncased WordPiece tokenizer learnt from `texts`, the same vocabulary on every run.

    The `tokenizers` trainer gives `##x` continuation tokens ids in hash-map order, and those ids break
    ties between equally frequent merges, so two runs on the same texts learnt different vocabularies
    (huggingface/tokenizers#1794; 8,775 vs 8,773 tokens on the seed data). Handing it every `##x` up
    front, in sorted order, as extra tokens leaves nothing to hash order; they are then made ordinary
    vocabulary entries again, so only saring's five special tokens are special.
    """
    tokenizer = _empty_wordpiece()
    chars = sorted({c for text in texts for c in tokenizer.normalizer.normalize_str(text) if not c.isspace()})
    continuations = [f"##{c}" for c in chars]
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS + continuations
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer = _empty_wordpiece(tokenizer.get_vocab())
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def scratch_config(preset: str, vocab_size: int, max_length: int) -> BertConfig:
    _, hidden, layers, heads, intermediate = PRESETS[preset]
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max(512, max_length),
    )


def build_scratch_base(
    preset: str,
    texts: Sequence[str],
    max_length: int,
    out_dir: Path,
    mlm_epochs: float = 0.0,
    seed: int = 42,
    use_cpu: bool = False,
) -> Path:
    """Write a base model folder (tokenizer, config, optionally MLM-trained weights) to `out_dir`."""
    vocab_size = PRESETS[preset][0]
    tokenizer = train_wordpiece(texts, vocab_size, max_length)
    config = scratch_config(preset, len(tokenizer), max_length)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    if mlm_epochs <= 0:
        config.save_pretrained(out_dir)  # classification head and encoder start from random init
        return out_dir

    logger.info("MLM pre-training %s for %.1f epochs on %d texts", preset, mlm_epochs, len(texts))
    model = BertForMaskedLM(config)
    encoded = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(out_dir / "mlm-checkpoints"),
            num_train_epochs=mlm_epochs,
            per_device_train_batch_size=64,
            learning_rate=5e-4,
            warmup_steps=0.06,
            weight_decay=0.01,
            save_strategy="no",
            report_to="none",
            logging_steps=50,
            seed=seed,
            use_cpu=use_cpu,
        ),
        train_dataset=[{"input_ids": ids} for ids in encoded],
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15),
    )
    trainer.train()
    model.save_pretrained(out_dir)
    return out_dir
