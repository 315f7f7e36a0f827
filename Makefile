# The two commands a newcomer needs: `make run` and `make test`. Each creates the virtual
# environment it needs (.venv) on first use; CI runs `make test` too (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint check-deploy check-monitoring system-deps bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
		{ echo "Python 3.11 or newer is required (set PYTHON=python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/python -m service

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy

# The Docker files are checked without a Docker engine: compose's own parser and hadolint.
check-deploy: $(VENV)/.dev-installed
	"$$($(BIN)/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')" config --quiet
	$(BIN)/hadolint Dockerfile

# The example Prometheus configuration and its alert rules, checked and unit-tested with
# Debian's promtool (tests/test_prometheus_scrape.py runs them in a real Prometheus too).
check-monitoring: system-deps
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/tests/alerts_test.yml

# Debian's chromium, nginx and prometheus, which the browser, proxy and monitoring tests drive
# for real.
system-deps:
	@scripts/install-system-deps.sh

test: system-deps lint check-deploy check-monitoring
	$(BIN)/pytest

bench: system-deps $(VENV)/.dev-installed
	$(BIN)/python -m bench.parse_cost
	$(BIN)/python -m bench.relay_overhead
	$(BIN)/python -m bench.nginx_latency

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
