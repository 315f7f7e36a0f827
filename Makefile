# The two commands a newcomer needs: `make run` and `make test`. Each creates the virtual
# environment it needs (.venv) on first use; CI runs `make test` too (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint check-deploy system-deps frontend bench clean

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

# Debian's chromium and nginx, which the browser and proxy tests drive for real.
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

test: system-deps lint check-deploy frontend
	$(BIN)/pytest

bench: system-deps $(VENV)/.dev-installed
	$(BIN)/python -m bench.parse_cost
	$(BIN)/python -m bench.relay_overhead
	$(BIN)/python -m bench.nginx_latency

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis frontend/node_modules frontend/dist
