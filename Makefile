# Everything runs from the repo's own virtualenv (.venv); `make install` creates it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
export MLFLOW_DISABLE_TELEMETRY := true
export PYSPARK_PYTHON := $(abspath $(BIN)/python)

.PHONY: install demo lint test test-fast bench bench-features bench-online bench-training bench-serving bench-batch bench-load bench-decisions bench-simulation bench-realtime lock clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

install: $(VENV)/.installed  ## create .venv with the pinned dependencies and the cvm command

$(VENV)/.installed: requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: install  ## the main job end to end on Complete Journey (embedded DuckDB)
	$(BIN)/cvm demo

lint: install  ## ruff, and the import contract: the layers point one way (pyproject.toml, tool.importlinter)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache --no-logo

test: lint  ## lint, then the test suite (DuckDB, Spark local mode, real servers, CLI)
	$(BIN)/pytest -q

test-fast: lint  ## lint, then the tests: no Spark, no servers, no long runs
	$(BIN)/pytest -q -m "not spark and not server and not slow"

bench: bench-features bench-online bench-training bench-serving bench-batch bench-load bench-decisions bench-simulation bench-realtime  ## every benchmark (prints tables; about two hours); benchmarks/RESULTS.md collects them
	$(BIN)/python benchmarks/summary.py

bench-features: install  ## feature build at 100k / 1M / 3M customers, against pandas and Spark
	$(BIN)/python benchmarks/bench_features.py --write benchmarks/RESULTS-features.md

bench-online: install  ## online store: publish time, lookup latency at 1M customers x 100 features
	$(BIN)/python benchmarks/bench_online_store.py

bench-training: install  ## cvm train all on Complete Journey (30 trials per task): time per task, metrics
	$(BIN)/python benchmarks/bench_training.py --write benchmarks/RESULTS-training.md

bench-serving: install  ## scoring service latency at 200 req/s, 1,000-id requests, vs mlflow models serve (needs make demo first)
	$(BIN)/python benchmarks/bench_serving.py --write benchmarks/RESULTS-serving.md

bench-batch: install  ## cvm score-batch end to end at 100k / 1M / 3M customers, DuckDB vs Spark, inference vs raw Booster.predict
	$(BIN)/python benchmarks/bench_batch.py --write benchmarks/RESULTS-batch.md

bench-load: install  ## load on cvm serve: saturation (wrk, open loop), 10-minute soak, workers, batching (needs make demo, wrk)
	$(BIN)/python benchmarks/bench_load.py --home cvm_home --write benchmarks/RESULTS-load.md

bench-decisions: install  ## /recommend with the decision log, /outcomes, a 10 M-decision log on SQLite and PostgreSQL (needs make demo)
	$(BIN)/python benchmarks/bench_decisions.py --write benchmarks/RESULTS-decisions.md

bench-realtime: install  ## /events ingestion, event -> /score freshness, trigger lateness, Redis lookups at 1M x 100 (needs make demo, redis-server)
	$(BIN)/python benchmarks/bench_realtime.py --write benchmarks/RESULTS-realtime.md

bench-simulation: install  ## cvm simulate over 20 seeds: does the 95 % interval contain the true lift?
	$(BIN)/python benchmarks/bench_simulation.py --salt-per-seed --write benchmarks/RESULTS-simulation.md

lock:  ## re-resolve and pin every dependency into requirements.lock
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install --quiet -e '.[dev]'
	(echo "# Exact versions of every package, tested together on Python 3.11 (regenerate: make lock)."; \
	 .lockenv/bin/pip freeze --exclude-editable | grep -v '^-e') > requirements.lock
	rm -rf .lockenv

clean:  ## remove the virtualenv and the default CVM_HOME
	rm -rf $(VENV) cvm_home
