# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
DEMO_CUSTOMERS ?= 50000

.PHONY: install demo test lint docs bench clean

install: $(VENV)/.kernels

# uv installs the same ranges in about a third of pip's time (docs/performance.md, "Session 14"); it does
# not read pip's configuration, so where it cannot install (a machine that reaches only a mirror set
# in pip.conf, say) pip installs instead. INSTALLER=pip uses pip alone. Byte code is compiled at
# install time, as pip does: without it every process of the suite would compile what it imports.
INSTALLER ?= uv
PIP_INSTALL = $(BIN)/pip install --quiet --upgrade pip && $(BIN)/pip install --quiet -e '.[dev,dask]'
UV_INSTALL = $(BIN)/pip install --quiet 'uv>=0.9,<1' && \
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -e '.[dev,dask]'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	$(UV_INSTALL) || { echo "uv could not install; installing with pip"; $(PIP_INSTALL); }
else
	$(PIP_INSTALL)
endif
	$(BIN)/python -m compileall -q features training serving  # this project's own byte code (an editable install)
	touch $@

# The numba kernels, compiled into numba's cache beside their modules: the reasons (TreeSHAP), the
# predictions, id hashing, id numbering, id reading and PageRank's products. Their own stamp, so an
# existing .venv compiles a kernel that is new or changed without reinstalling the packages.
KERNELS := training.tree_shap training.tree_predict features.ingest.id_hashes \
	features.first_appearance features.digit_ids features.families.column_blocks \
	features.families.line_sums features.families.orders features.families.profiles \
	features.families.interaction_sums

$(VENV)/.kernels: $(VENV)/.installed $(addsuffix .py,$(subst .,/,$(KERNELS)))
	for module in $(KERNELS); do $(BIN)/python -m $$module || exit 1; done
	touch $@

MARKET_TOPICS ?= --market-topic outdoor --market-topic hiking

# The whole job on a generated world: generate, validate, train (baselines, ablation, promotion), score, report.
demo: install
	@start=$$(date +%s); \
	$(BIN)/clv generate --out $(DEMO_DIR)/world --customers $(DEMO_CUSTOMERS) --seed 42 && \
	$(BIN)/clv validate --data $(DEMO_DIR)/world --rejects $(DEMO_DIR)/rejects && \
	$(BIN)/clv train --data $(DEMO_DIR)/world $(MARKET_TOPICS) --promote auto && \
	$(BIN)/clv score --data $(DEMO_DIR)/world --out $(DEMO_DIR)/predictions.parquet --currency EUR \
	    --export-top 100 --export $(DEMO_DIR)/contacts.csv --export-attributes region && \
	$(BIN)/clv report --out $(DEMO_DIR)/report --scores $(DEMO_DIR)/predictions.parquet && \
	echo && echo "demo finished in $$(( $$(date +%s) - start ))s" && \
	echo "  predictions: $(DEMO_DIR)/predictions.parquet (manifest: $(DEMO_DIR)/predictions.manifest.json)" && \
	echo "  contacts:    $(DEMO_DIR)/contacts.csv (the 100 most valuable customers)" && \
	echo "  report:      $(DEMO_DIR)/report/report.html" && \
	echo "  MLflow UI:   $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db"

# Two processes (pytest-xdist); a module's tests stay in one process, so its module fixtures are
# built once, and the modules go out in collection order, slow ones first (tests/conftest.py).
# TEST_WORKERS=0 runs the suite in this process only. (Three on these two cores were no faster:
# docs/performance.md, "Session 14".)
TEST_WORKERS ?= 2
# Two test processes, each training with LightGBM's OpenMP threads, share the cores: threads spinning
# at a barrier take the CPU the other process needs. Passive waiting: 170 s for the training-heavy
# modules against 177 s with libgomp's default (docs/performance.md, "Tests"). tests/conftest.py sets
# the same default for a plain `pytest`.
OMP_WAIT_POLICY ?= PASSIVE
# Byte code is written even where the environment says not to (PYTHONDONTWRITEBYTECODE=1, as on
# some images): otherwise pytest rewrites the asserts of every test module again in each of its
# processes (10 s of CPU each), and every `clv`, worker and kernel process the tests start compiles
# this project's modules again. __pycache__ folders are ignored by git.
test: install
	PYTHONDONTWRITEBYTECODE= OMP_WAIT_POLICY=$(OMP_WAIT_POLICY) $(BIN)/pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder)

lint: install
	$(BIN)/ruff check features training serving tests benchmarks

docs: install
	$(BIN)/python -m features.docs

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
