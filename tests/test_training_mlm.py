"""Masked-LM pre-training of a scratch base before fine-tuning (the offline path with more signal)."""

from __future__ import annotations

import json

from service.model.folder import read_sidecar
from training.train import main


def test_scratch_base_with_mlm_pretraining_writes_a_complete_folder(tmp_path, tiny_data) -> None:
    out = tmp_path / "mlm"
    main(
        [
            "--model_name_or_path", "scratch:tiny",
            "--mlm_pretrain_epochs", "1",
            "--train_file", str(tiny_data["train"]),
            "--output_dir", str(out),
            "--num_train_epochs", "2",
            "--learning_rate", "5e-3",
            "--use_cpu", "true",
            "--early_stopping_patience", "0",
            "--save_strategy", "no",
            "--load_best_model_at_end", "false",
            "--disable_tqdm", "true",
            "--allow_weak_model", "true",  # 2 epochs after 1 of MLM may stay near chance
        ]
    )  # fmt: skip
    sidecar = read_sidecar(out)
    assert sidecar.base_model == "scratch:tiny"
    assert json.loads((out / "metrics.json").read_text())["validation"]["n"] > 0
    assert not (tmp_path / ".mlm.work").exists()  # the MLM checkpoints went with the work folder
