# All set-up lives here: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export OMP_NUM_THREADS ?= 1

.PHONY: setup demo test lint benchmarks clean

setup: $(VENV)/.installed

# Nothing compiles: PGT 0.56.2 declares torch-sparse and torch-scatter, which have no wheels for
# torch 2.13 and take ~13 minutes to build, yet stzarr's models need neither. PGT is installed
# with --no-deps (its run-time needs are in pyproject.toml) and stzarr.training.pgt_compat stands PyG's
# SparseTensor placeholder in for torch_sparse. `pip install 'stzarr[sparse]'` adds them back.
# The fresh venv's own pip does the editable install (no pip upgrade); the local torch 2.13.0 CPU
# wheel (find-links) is picked in the same call. pip does not byte-compile (--no-compile: ~12,500
# files, most never imported); the last step writes .pyc for the ~3,500 modules stzarr's commands
# and DDP ranks import, even where PYTHONDONTWRITEBYTECODE is set (else every process recompiles
# torch: import ~16 s instead of ~6 s).
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --no-compile torch==2.13.0 -e '.[dev]'
	$(PIP) install -q --no-compile --no-deps torch_geometric_temporal==0.56.2
	PYTHONDONTWRITEBYTECODE= $(PY) -c 'import distributed, stzarr.cli, stzarr.converters, \
	  stzarr.training.launch, stzarr.training.models, stzarr.plot, stzarr.converters.synth, stzarr.training.train; \
	  from stzarr.training.pgt_compat import import_pgt; import_pgt("torch_geometric_temporal.nn.recurrent")'
	touch $@

demo: setup
	$(PY) examples/demo.py

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The data-layer benchmarks (peak memory, loader throughput: a few minutes each), one at a time
# under a shared lock; every script runs as `python -m benchmarks.<stage>.<name>` (docs/benchmarks.md).
BENCH_LOCK ?= /tmp/stzarr-bench.lock
benchmarks: setup
	flock $(BENCH_LOCK) nice -n 10 $(PY) -m benchmarks.data.memory
	flock $(BENCH_LOCK) nice -n 10 $(PY) -m benchmarks.data.loader --rounds 7 --bytes-per-round 2000000000

clean:
	rm -rf $(VENV) demo-output .pytest_cache .hypothesis
