# Two entry points: `make demo` runs the main job (a real local multi-node market
# trading real groth16 proofs, simulations/local-zk.toml, and its report), `make test`
# runs every check.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# Extra pytest options, e.g. -rs (.ci/run: the reason of every skip).
PYTEST_ARGS ?=
# pytest-xdist workers (one per core by default; 0 runs the tests in this process).
# Each test file stays on one worker: module fixtures (a benchmark's run) run once.
TEST_JOBS ?= auto

.PHONY: demo test lint bench clean

# Python (the venv) and Node.js (node_modules/: snarkjs and circom2, pinned by
# package-lock.json, for the groth16 and plonk proof systems).
$(BIN)/.installed: pyproject.toml package-lock.json
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 2; }
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { echo "error: node and npm not found (Node.js 20 is required: snarkjs, for the groth16 and plonk proof systems)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: $(BIN)/.installed
	$(BIN)/p2p-market simulate simulations/local-zk.toml

lint: $(BIN)/.installed
	$(BIN)/ruff check p2p_market tests examples
	$(BIN)/ruff format --check p2p_market tests examples
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/p2p-market bench core --json

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis
