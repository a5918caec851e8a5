# zarrport: `make demo` and `make test` each set up everything on a fresh machine
# (Python >= 3.11, pip and npm), then run.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.zarrport-installed
NPM_STAMP := node_modules/.zarrport-installed

.PHONY: install demo test test-fast bench bench-batch bench-grib conformance lint clean

install: $(STAMP) $(NPM_STAMP)

# (re)create the virtualenv and install the project whenever pyproject.toml changes
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	@touch $(STAMP)

# Azurite (Azure Blob emulator) for the storage tests, from package.json
$(NPM_STAMP): package.json
	npm install --no-audit --no-fund --loglevel=error
	@touch $(NPM_STAMP)

demo: install
	$(PY) -m zarrport.demo

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

conformance: install
	$(PY) scripts/conformance.py --out docs/conformance.md

bench: install
	$(PY) bench/bench_virtualize.py --out docs/benchmarks.md
	$(PY) bench/bench_batch.py --write-docs
	$(PY) bench/bench_grib_decode.py --out docs/benchmarks.md
	$(PY) bench/bench_grib.py --out docs/benchmarks.md

# GRIB only: decoders per packing, manifests from indexes vs scan_grib, regional reads vs cfgrib
bench-grib: install
	$(PY) bench/bench_grib_decode.py --out docs/benchmarks.md
	$(PY) bench/bench_grib.py --out docs/benchmarks.md

bench-batch: install
	$(PY) bench/bench_batch.py --write-docs

lint: install
	$(PY) -m ruff check src tests scripts bench

clean:
	rm -rf $(VENV) node_modules demo-output .pytest_cache
