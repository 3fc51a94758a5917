# fedchain: `make demo` runs the main job on the embedded default; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo demo-domains test contracts bench clean

setup: $(STAMP) node_modules/.installed

$(STAMP): pyproject.toml requirements.lock requirements-domains.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -r requirements-domains.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

demo: setup
	$(BIN)/fedchain simulate --peers 4 --rounds 5 --dataset digits

# Healthcare, finance, IoT and image data through the network, next to centralized and
# local-only training (README: "Four domains"); installs the domains extra if it is missing.
demo-domains: setup
	$(BIN)/python -c "import ISLP, river" 2>/dev/null || $(BIN)/python -m pip install --quiet --no-deps -r requirements-domains.txt
	$(BIN)/python -m fedchain.cli.main experiment domains --out runs/domains

# Three workers on two cores: much of a network test is waiting for blocks and peer processes.
test: setup
	$(BIN)/python -m pytest -q -n 3 --dist loadfile

contracts: setup
	$(BIN)/python -m fedchain.contracts.build

bench: setup
	$(BIN)/python benchmarks/aggregation.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache
