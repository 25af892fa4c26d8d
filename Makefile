# Two commands on a fresh machine: `make run` (serve the default model) and `make test`.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
DATASETS ?= ../shared/datasets
MODEL    := models/default
SEED     ?= 42
# One intra-op thread: on a 2-core machine with anything else running, two threads ran many
# times slower than one (see bench/); raise it on a quiet, larger machine.
TRAIN_THREADS ?= 1

.PHONY: setup run test lint model bench clean-model

# torch is installed first and pinned, so pip takes the CPU wheel instead of a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,onnx,minilm,dev]'
	touch $@

setup: $(VENV)/.installed

# The default model: seed data -> augmented training file + written validation file -> fine-tune.
# The public data sets are used only to measure (model card), and only when they are present.
$(MODEL)/saring.json: data/seed/train.jsonl data/seed/test.jsonl | $(VENV)/.installed
	$(BIN)/python -m training augment --input data/seed/train.jsonl --output build/seed/train_aug.jsonl \
		--validation_output build/seed/validation.jsonl --per_message 1 --seed $(SEED)
	@if [ -d "$(DATASETS)" ]; then $(BIN)/python -m training real-eval-set --datasets $(DATASETS) \
		--output build/real_mixed.jsonl; fi
	OMP_NUM_THREADS=$(TRAIN_THREADS) $(BIN)/python -m training train configs/default.json \
		$(if $(wildcard $(DATASETS)),--extra_eval_file real=build/real_mixed.jsonl,)

model: $(MODEL)/saring.json

run: $(MODEL)/saring.json
	$(BIN)/python -m service

test: $(VENV)/.installed
	$(BIN)/pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(MODEL)/saring.json
	$(BIN)/python -m bench

clean-model:
	rm -rf $(MODEL) build/seed
