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

# The GPU kit (see "The GPU kit" in benchmarks/README.md): wheels for a GPU machine without network,
# and the kit's CPU rehearsal (tests/test_gpu_kit.py runs the same in `make test`).
.PHONY: gpu-wheels gpu-wheels-check gpu-rehearsal
GPU_WHEELS ?= .whl
GPU_KIT_OUT ?= $(CURDIR)/gpu-kit-out
GPU_PLATFORMS := $(foreach tag,manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64,--platform $(tag))

gpu-wheels:  ## fetch benchmarks/gpu/wheels.txt for CPython 3.12 manylinux x86-64 into .whl/ (replacing any wheels there)
	mkdir -p $(GPU_WHEELS) && rm -f $(GPU_WHEELS)/*.whl
	$(PYTHON) -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp $(GPU_PLATFORMS) -d $(GPU_WHEELS) -r benchmarks/gpu/wheels.txt
	$(PYTHON) benchmarks/gpu/check_wheels.py --wheels $(GPU_WHEELS)

gpu-wheels-check:  ## the wheels in .whl/: exactly wheels.txt, under 64 MiB with the working tree, installed offline into CPython 3.12
	$(PYTHON) benchmarks/gpu/check_wheels.py --wheels $(GPU_WHEELS)

gpu-rehearsal: $(STAMP)  ## the GPU kit on the CPU at tiny sizes, only the GPU machine's packages importable; into gpu-kit-out/
	PYTHON=$(BIN)/python $(BIN)/python benchmarks/gpu/simulate.py -- \
		bash benchmarks/gpu/run.sh --device cpu --tiny --no-wheels --out $(GPU_KIT_OUT)
