# The two commands a newcomer needs: `make run` and `make test`. Each creates the virtual
# environment it needs (.venv) on first use; CI runs `make test` too (.ci/run).
# Dependencies install from the lock files (requirements.lock, requirements-dev.lock: exact
# versions with hashes); pyproject.toml keeps the ranges, and `make lock` compiles one from
# the other.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The platform the locks are resolved for: the Docker image's and CI's.
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-unknown-linux-gnu
LOCK_OPTIONS := $(LOCK_TARGET) --generate-hashes --custom-compile-command "make lock" --quiet

.PHONY: run test check lint check-deploy check-monitoring system-deps frontend node-tests bench bench-compare lock clean
.PHONY: docs docs-serve docs-config

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
		{ echo "Python 3.11 or newer is required (set PYTHON=python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(VENV)/.dev-installed: requirements-dev.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@ $(VENV)/.run-installed

# Re-resolve the locks after a change to pyproject.toml's dependencies, keeping every pin that
# still fits; `make lock LOCK_FLAGS=--upgrade` moves everything to the newest allowed versions.
# The dev lock is resolved first and the runtime lock takes the same versions from it.
lock: $(VENV)/.dev-installed
	$(BIN)/uv pip compile pyproject.toml --extra dev $(LOCK_OPTIONS) $(LOCK_FLAGS) \
		-o requirements-dev.lock
	$(BIN)/uv pip compile pyproject.toml -c requirements-dev.lock $(LOCK_OPTIONS) $(LOCK_FLAGS) \
		-o requirements.lock

run: $(VENV)/.run-installed
	$(BIN)/python -m service

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check service testkit tests bench docsite
	$(BIN)/ruff format --check service testkit tests bench docsite
	$(BIN)/mypy

# Before each commit, well under a minute: lint, types, and the tests that start no server
# (pytest marks the others `server`, see tests/conftest.py). `make test` runs everything.
check: lint
	$(BIN)/pytest -q -m "not server"

# The deploy files are checked offline: compose's own parser (the default services and the
# `scale` profile), hadolint, and the Kubernetes manifests against the API's schemas, which
# kubernetes-validate bundles (the oldest and the newest Kubernetes it knows).
K8S_MANIFESTS := $(filter-out deploy/k8s/kustomization.yaml,$(wildcard deploy/k8s/*.yaml))
check-deploy: $(VENV)/.dev-installed
	"$$($(BIN)/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')" config --quiet
	"$$($(BIN)/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')" --profile scale config --quiet
	$(BIN)/hadolint Dockerfile web/Dockerfile
	$(BIN)/kubernetes-validate --strict --quiet -k 1.29.0 $(K8S_MANIFESTS)
	$(BIN)/kubernetes-validate --strict --quiet $(K8S_MANIFESTS)

# The example Prometheus configuration and its alert rules, checked and unit-tested with
# Debian's promtool (tests/test_prometheus_scrape.py runs them in a real Prometheus too).
check-monitoring: system-deps
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/tests/alerts_test.yml

# Debian's chromium, nginx, redis-server and prometheus, which the browser, proxy, resume and
# monitoring tests drive.
system-deps:
	@scripts/install-system-deps.sh

# The React app in frontend/: installed from its lock file (npm ci, npm registry only), type
# checked and built into frontend/dist, and its vitest suite run. Needs node 20.19+ and npm.
frontend/node_modules/.installed: frontend/package.json frontend/package-lock.json
	@node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a == 20 && b >= 19) ? 0 : 1)' \
		&& command -v npm >/dev/null || { echo "node 20.19 or newer and npm are needed for frontend/ (vite 8)"; exit 1; }
	cd frontend && npm ci --no-audit --no-fund
	@touch $@

frontend: frontend/node_modules/.installed
	cd frontend && npm run build
	cd frontend && npm test

# The openai npm package that tests/test_openai_node.py drives, from its lock file.
tests/node/node_modules/.installed: tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund
	@touch $@

node-tests: tests/node/node_modules/.installed

test: system-deps lint check-deploy check-monitoring frontend node-tests docs
	$(BIN)/pytest

# The documentation site (issue #18; mkdocs.yml, docs/): built offline into site/ with --strict,
# so a broken link, anchor or include fails it. `make docs-serve` serves it on 127.0.0.1 while
# you edit (not on 8000, the service's port); `make docs-config` regenerates the configuration
# table from service/settings.py (tests/test_docs_configuration.py fails while it is stale).
# Material prints a banner about its end of life (May 2027) at every build; it is known here.
DOCS_PORT ?= 8001
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs
docs: $(VENV)/.dev-installed
	$(MKDOCS) build --strict --quiet --site-dir site

docs-serve: $(VENV)/.dev-installed
	$(MKDOCS) serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

docs-config: $(VENV)/.dev-installed
	$(BIN)/python -m docsite.settings_table

bench: system-deps $(VENV)/.dev-installed
	$(BIN)/python -m bench.parse_cost
	$(BIN)/python -m bench.relay_overhead
	$(BIN)/python -m bench.relay_overhead --redis
	$(BIN)/python -m bench.resume_overhead
	$(BIN)/python -m bench.nginx_latency
	$(BIN)/python -m bench.routing_cost

# Side by side with LiteLLM, a tutorial relay and a raw relay (bench/compare); docs/performance.md.
# LiteLLM pins an older openai, so it gets a virtual environment of its own.
# BENCH_ARGS=--quick for a 2-3 minute run.
LITELLM := .bench-venvs/litellm/bin/litellm
$(LITELLM): bench/litellm-requirements.txt
	$(PYTHON) -m venv .bench-venvs/litellm
	.bench-venvs/litellm/bin/pip install --quiet -r bench/litellm-requirements.txt
	@touch $@

bench-compare: $(VENV)/.dev-installed $(LITELLM)
	$(BIN)/python -m bench.compare --litellm $(LITELLM) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .bench-venvs .mypy_cache .pytest_cache .ruff_cache .hypothesis \
		frontend/node_modules frontend/dist tests/node/node_modules site
