# Two commands from a fresh clone: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test redis chromium lint types pytest bench bench-decisions bench-overload \
	bench-stack bench-ingest bench-memory learning nba train mlflow-ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

HOST ?= 127.0.0.1
PORT ?= 8000

## Generate a demo population, load it into the embedded SQLite store and serve the API on
## $(HOST):$(PORT) (make demo PORT=8080).
demo: $(STAMP)
	$(BIN)/rapport demo --host $(HOST) --port $(PORT)

## Lint, type-check and run the whole test suite (installs redis-server and chromium if missing).
test: $(STAMP) redis chromium lint types pytest

redis:
	bash .ci/ensure-redis

chromium:
	bash .ci/ensure-chromium

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -n 2 -q

## Decisions beside the floor: closed loop (capacity, x floor, CPU per decision), then open loop
## at 25/50/90% of capacity. Each bench prints its tables and writes JSON under var/bench/.
bench: bench-decisions

bench-decisions: $(STAMP) redis
	$(BIN)/python -m bench.decisions --phases closed,open --out var/bench/decisions.json

## Offered at 3x the measured capacity for 20 s: goodput within the deadline, late answers.
bench-overload: $(STAMP) redis
	$(BIN)/python -m bench.decisions --phases closed,overload --rounds 1 --out var/bench/overload.json

## The floor on asyncio + h11 against uvloop + httptools (what `rapport serve` runs).
bench-stack: $(STAMP) redis
	$(BIN)/python -m bench.decisions --phases stack --stores '' --out var/bench/stack.json

## Events/s accepted by one worker: batches of 1,000 over 10,000 customers, Redis and SQLite.
bench-ingest: $(STAMP) redis
	$(BIN)/python -m bench.ingest --out var/bench/ingest.json

## Redis bytes per customer by key type (demo population), and one customer with 10,000 events.
bench-memory: $(STAMP) redis
	$(BIN)/python -m bench.redis_memory --out var/bench/redis_memory.json

## Learning figures on the synthetic population (README "What it learns").
learning: $(STAMP)
	$(BIN)/rapport learning-report --customers 2000 --seed 7

## Next-best-action against random and oracle policies (README "Next-best-action: measured").
nba: $(STAMP)
	$(BIN)/rapport simulate-nba --customers 1000 --decisions 10000 --seed 7

## Log 10,000 decisions on the demo population, export them and train (README "For data scientists").
TRAIN_STORE := sqlite:///var/train-demo.db
train: $(STAMP)
	rm -rf var/train-demo.db var/train-demo.db-wal var/train-demo.db-shm var/offline-demo
	RAPPORT_STORE=$(TRAIN_STORE) $(BIN)/rapport simulate-logs --customers 1000 --decisions 10000 --seed 7
	RAPPORT_STORE=$(TRAIN_STORE) $(BIN)/rapport export --out var/offline-demo
	$(BIN)/rapport train --offline var/offline-demo

## The MLflow UI on the local tracking store (runs, metrics, plots, registered versions) on :5000.
mlflow-ui: $(STAMP)
	mkdir -p var/mlflow/artifacts
	$(BIN)/mlflow ui --backend-store-uri sqlite:///var/mlflow/mlflow.db \
		--artifacts-destination var/mlflow/artifacts --host 127.0.0.1 --port 5000 --workers 1

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .hypothesis
