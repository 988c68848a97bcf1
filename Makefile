# Thin aliases; every target works on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup test test-fast lint reproduce lab bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# installs torch first (pinned pair), then the package with its dev and notebooks extras (JupyterLab and
# ipywidgets too, so the lab test of make test runs)
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev,notebooks]"
	touch $@

setup: $(VENV)/.installed

# lint and format check (ruff, settings in pyproject.toml), notebooks stripped, unit + integration tests,
# every notebook run with its (smoke) defaults by nbval; TEST_WORKERS pytest-xdist processes (one per core here),
# --dist loadscope keeps a notebook's cells, and a test module's shared fixtures, on one worker
TEST_WORKERS ?= 2
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/nbstripout --verify notebooks/*.ipynb
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadscope tests notebooks --nbval-lax --nbval-current-env

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

# regenerate every table and figure of the quick profile (Fashion-MNIST, CPU)
reproduce: setup
	$(BIN)/dire reproduce --profile quick

# JupyterLab on notebooks/ (kernels start there, as the notebooks' ../data, ../runs expect); registers the
# kernel "Python (dire)" for this user, so other Jupyter front-ends can pick this environment too
lab: setup
	$(BIN)/dire lab

lint: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	$(BIN)/python benchmarks/dire_term.py

clean:
	rm -rf build runs .pytest_cache
