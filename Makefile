# The two commands a newcomer needs: `make run` and `make test`. Each creates the virtual
# environment it needs (.venv) on first use; CI runs `make test` too (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint check-deploy system-deps bench clean

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

# The deploy files are checked offline: compose's own parser (the default services and the
# `scale` profile), hadolint, and the Kubernetes manifests against the API's schemas, which
# kubernetes-validate bundles (the oldest and the newest Kubernetes it knows).
K8S_MANIFESTS := $(filter-out deploy/k8s/kustomization.yaml,$(wildcard deploy/k8s/*.yaml))
check-deploy: $(VENV)/.dev-installed
	"$$($(BIN)/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')" config --quiet
	"$$($(BIN)/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')" --profile scale config --quiet
	$(BIN)/hadolint Dockerfile
	$(BIN)/kubernetes-validate --strict --quiet -k 1.29.0 $(K8S_MANIFESTS)
	$(BIN)/kubernetes-validate --strict --quiet $(K8S_MANIFESTS)

# Debian's chromium, nginx and redis-server, which the browser, proxy and resume tests drive.
system-deps:
	@scripts/install-system-deps.sh

test: system-deps lint check-deploy
	$(BIN)/pytest

bench: system-deps $(VENV)/.dev-installed
	$(BIN)/python -m bench.parse_cost
	$(BIN)/python -m bench.relay_overhead
	$(BIN)/python -m bench.nginx_latency

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
