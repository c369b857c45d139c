# Two commands reproduce everything: `make all` (the studies' reports) and `make test`.
# Both depend on `make install`, which builds .venv once; a second call is a no-op.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed
DEMO   := data/demo_hematoma
MEDIASTINAL := data/demo_mediastinal
LUNG   := data/demo_lung_involvement
PNEUMO := data/demo_pneumothorax
STUDIES := $(wildcard pipelines/*.yaml)

.PHONY: install all test test-fast lint demo-data check report-check clean

install: $(STAMP)

# PyRadiomics 3.0.1 has no wheel for Python 3.11 and its setup.py imports NumPy, so NumPy
# and the build tools go in first and PyRadiomics is built without build isolation.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install "numpy>=1.26" "setuptools>=68" wheel versioneer
	$(PIP) install --no-build-isolation pyradiomics==3.0.1
	$(PIP) install -e ".[dev]"
	touch $(STAMP)

demo-data: $(DEMO)/manifest.csv $(MEDIASTINAL)/manifest.csv $(LUNG)/manifest.csv \
	$(PNEUMO)/manifest.csv

$(DEMO)/manifest.csv: fusion/demo.py | $(STAMP)
	$(VENV)/bin/fusion demo-data --out $(DEMO)

$(MEDIASTINAL)/manifest.csv: | $(STAMP)
	$(VENV)/bin/fusion demo-data --study mediastinal --out $(MEDIASTINAL)

$(LUNG)/manifest.csv: | $(STAMP)
	$(VENV)/bin/fusion demo-data --study lung --out $(LUNG)

$(PNEUMO)/manifest.csv: | $(STAMP)
	$(VENV)/bin/fusion demo-data --study pneumothorax --out $(PNEUMO)

check: install demo-data
	@for s in $(STUDIES); do $(VENV)/bin/fusion check $$s || exit 1; done

# Every study end to end (QC, segmentation, ROIs, features, models, statistics, report).
all: install demo-data
	@mkdir -p reports && rm -f reports/.make-all.log
	@for s in $(STUDIES); do \
	  $(VENV)/bin/fusion run $$s | tee -a reports/.make-all.log || exit 1; done
	@echo "Reports:"; sed -n 's/^report: /  /p' reports/.make-all.log

# Open each report in headless Chromium: screenshot, no console error, no network request.
report-check: install
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	$(PY) -m fusion.report.check $(wildcard reports/*/index.html)

test: install
	$(PY) -m pytest -q

# the inner loop: everything but the tests marked slow (studies end to end, notebook,
# Dask, real data); `make test` stays the full suite
test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check fusion tests benchmarks
	$(VENV)/bin/ruff format --check fusion tests benchmarks

clean:
	rm -rf reports/*/ .pytest_cache
