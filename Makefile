# zarrport: `make demo` and `make test` each set up everything on a fresh machine
# (CPython 3.12 or 3.13, pip and npm), then run.

# the newest CPython 3.12/3.13 on PATH or under pyenv (scripts/find-python); override with
# `make PYTHON=/path/to/python3.13`
PYTHON ?= $(shell scripts/find-python 2>/dev/null)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.zarrport-installed
NPM_STAMP := node_modules/.zarrport-installed
# the web viewer's MapLibre GL, copied from node_modules and committed (a wheel or a clone
# without npm still serves it; tests/serve/test_vendor_maplibre.py checks they match)
MAPLIBRE_VENDOR := src/zarrport/service/static/vendor/maplibre-gl
# Debian's chromium for the browser tests (tests/serve); never a browser download
CHROMIUM ?= /usr/bin/chromium

# a virtualenv left by an older interpreter (zarrport needed 3.11 before) is rebuilt
ifneq ($(wildcard $(PY)),)
ifneq ($(shell $(PY) -c 'import sys; print(sys.version_info >= (3, 12))' 2>/dev/null),True)
$(shell rm -f $(STAMP))
endif
endif

.PHONY: install demo test test-fast bench bench-batch bench-grib bench-convert bench-serve bench-analysis conformance lint clean

install: $(STAMP) $(NPM_STAMP) $(CHROMIUM)

# (re)create the virtualenv and install the project whenever pyproject.toml changes
$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || scripts/find-python >/dev/null
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
		|| { rm -rf $(VENV) && echo "creating $(VENV) with $(PYTHON)" && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	@touch $(STAMP)

# Azurite (Azure Blob emulator) for the storage tests and MapLibre GL for the web viewer,
# from package.json
$(NPM_STAMP): package.json
	npm install --no-audit --no-fund --loglevel=error
	@mkdir -p $(MAPLIBRE_VENDOR)
	cp node_modules/maplibre-gl/dist/maplibre-gl.js node_modules/maplibre-gl/dist/maplibre-gl.css \
		node_modules/maplibre-gl/LICENSE.txt $(MAPLIBRE_VENDOR)/
	@touch $(NPM_STAMP)

# installed once (the file is the stamp): as root, else with `sudo -n`, else one line saying how
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "chromium is missing (browser tests fail): run 'sudo apt-get install -y chromium chromium-driver'"; \
		exit 0; fi; \
	echo "installing Debian's chromium for the browser tests"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
	&& $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

# `make demo DEMO_ARGS=--serve` keeps the viewer running at the end
demo: install
	$(PY) -m zarrport.demo $(DEMO_ARGS)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

conformance: install
	$(PY) scripts/conformance.py --out docs/conformance.md

bench: install
	$(PY) bench/bench_virtualize.py --out docs/benchmarks.md
	$(PY) bench/bench_batch.py --write-docs
	$(PY) bench/bench_icechunk_refs.py --out docs/benchmarks.md
	$(PY) bench/bench_icechunk_read.py --out docs/benchmarks.md
	$(PY) bench/bench_grib_decode.py --out docs/benchmarks.md
	$(PY) bench/bench_grib.py --out docs/benchmarks.md
	$(MAKE) bench-convert
	$(MAKE) bench-serve
	$(MAKE) bench-analysis

# GRIB only: decoders per packing, manifests from indexes vs scan_grib, regional reads vs cfgrib
bench-grib: install
	$(PY) bench/bench_grib_decode.py --out docs/benchmarks.md
	$(PY) bench/bench_grib.py --out docs/benchmarks.md

bench-batch: install
	$(PY) bench/bench_batch.py --write-docs

# zarrport convert vs xarray + Dask and zarr-parallel 0.5.0; zarr-parallel needs Python
# 3.11/3.12, so it gets its own venv under bench/.data (never the project's); without one its
# row says "not available"
bench-convert: install
	-$(PY) bench/bench_convert.py --make-zarr-parallel-env
	$(PY) bench/bench_convert.py --size full --out docs/benchmarks.md --json bench/.work/convert.json

# tiles over loopback: zarrport serve (kerchunk, Icechunk, Zarr, pyramid) vs stock titiler.xarray
# and xpublish-tiles; xpublish-tiles gets its own venv under bench/.data (never the
# project's); without one its row says "not available"
bench-serve: install
	-$(PY) bench/bench_serve.py --make-xpublish-env
	$(PY) bench/bench_serve.py --size full --out docs/benchmarks.md --json bench/.work/serve.json

# normals (virtual / converted / NetCDF vs xarray, 1 and 2 Dask workers) and regional means
# (zarrport vs exactextract, xagg, regionmask); ~15 min on 2 cores, inputs made once
bench-analysis: install
	$(PY) bench/bench_analysis.py --out docs/benchmarks.md --json bench/.work/analysis.json

lint: install
	$(PY) -m ruff check src tests scripts bench

clean:
	rm -rf $(VENV) node_modules demo-output .pytest_cache
