# All set-up lives here: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export OMP_NUM_THREADS ?= 1

.PHONY: setup demo test lint benchmarks clean

setup: $(VENV)/.installed

# torch-scatter/torch-sparse (declared by PGT 0.56.2, imported at package import) have no wheels
# for torch 2.13: they compile against the installed torch, hence --no-build-isolation, before
# the project (and PGT) are installed. pip's wheel cache makes later set-ups fast.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0
	MAX_JOBS=2 $(PIP) install -q --no-build-isolation torch_scatter==2.1.2 torch_sparse==0.6.18
	$(PIP) install -q -e '.[dev]'
	touch $@

demo: setup
	$(PY) examples/demo.py

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) demo-output .pytest_cache .hypothesis
