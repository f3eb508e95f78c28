# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
DEMO_CUSTOMERS ?= 50000

.PHONY: install demo test lint docs bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,dask]'
	touch $@

demo: install
	$(BIN)/clv generate --out $(DEMO_DIR)/world --customers $(DEMO_CUSTOMERS) --seed 42
	$(BIN)/clv validate --data $(DEMO_DIR)/world --rejects $(DEMO_DIR)/rejects

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check features training serving tests benchmarks

docs: install
	$(BIN)/python -m features.docs

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
