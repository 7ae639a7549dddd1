# mage_nb — every step a fresh machine needs lives here (README tells the same commands).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit labtest lab bench clean

$(STAMP): pyproject.toml scripts/system-deps.sh
	bash scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	SKIP_JUPYTER_BUILDER=1 $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The JupyterLab extension is built (or reused) by labextension/build.py: a no-op when
# labextension/ is unchanged, a copy from ~/.cache/mage_nb when another clone built it.
install: $(STAMP)
	$(BIN)/python labextension/build.py

## make demo: run the example notebook headless and print its run tree
demo: install
	$(BIN)/mage-nb run notebooks/dynamic_users.ipynb --tree

## make test: lint, type-check and run every test
test: lint typecheck labtest unit

lint: install
	$(BIN)/ruff check mage_nb tests bench
	$(BIN)/ruff format --check mage_nb tests bench

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

## make labtest: the JupyterLab extension's TypeScript unit tests (header parser, badges, DAG)
labtest: install
	$(BIN)/python labextension/build.py test

## make lab: open JupyterLab on the example notebooks
lab: install
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root,)

## make bench: the speed and memory benchmarks (prints ratios against baselines)
bench: install
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/kernel.py
	$(BIN)/python bench/sql.py
	$(BIN)/python bench/stream.py
	$(BIN)/python bench/executors.py
	$(BIN)/python bench/store.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
