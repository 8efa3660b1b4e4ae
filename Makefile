# Two commands on a fresh machine: `make repro` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
UI_PORT ?= 5000
TEST_WORKERS ?= 2
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5001
SERVER_BACKEND ?= sqlite:///$(CURDIR)/mlflow-server.db
SERVER_ARTIFACTS ?= $(CURDIR)/mlartifacts
export PATH := $(BIN):$(PATH)
export MPLBACKEND := Agg

.PHONY: install repro lint test ui server clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

repro: $(STAMP)  ## run the whole pipeline on the default dataset (dvc repro)
	dvc repro

lint: $(STAMP)  ## ruff (lint and format) and mypy, as configured in pyproject.toml
	ruff check pipeline tests benchmarks
	ruff format --check pipeline tests benchmarks
	mypy

test: lint  ## lint, then the test suite, one test file per worker (TEST_WORKERS=1 runs it serially); lists the 15 slowest
	pytest -n $(TEST_WORKERS) --dist loadfile --durations 15

ui: $(STAMP)  ## browse the runs: MLflow UI on the project's store, bound to 127.0.0.1
	convbench ui --host 127.0.0.1 --port $(UI_PORT)

server: $(STAMP)  ## shared MLflow tracking server: SQL backend + local artifact store, on 127.0.0.1 unless SERVER_HOST says otherwise
	mlflow server --backend-store-uri '$(SERVER_BACKEND)' --artifacts-destination '$(SERVER_ARTIFACTS)' \
		--serve-artifacts --host $(SERVER_HOST) --port $(SERVER_PORT)

clean:  ## remove prepared data, models, results, metrics, reports, tuned recipes and studies, and the local MLflow store (keeps data/raw and .venv)
	rm -rf data/prepared models results metrics reports tuned dvc_plots mlflow.db mlruns mlartifacts
