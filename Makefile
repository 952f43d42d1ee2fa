# Every target builds .venv on first use (or when pyproject.toml changes), so a fresh clone needs nothing by hand.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench zoo pictures clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: venv
	$(BIN)/kinetoscope demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: venv lint
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=15

bench: venv
	$(BIN)/python benchmarks/run_all.py

zoo: venv
	$(BIN)/python scripts/update_readme_zoo.py

pictures: venv
	$(BIN)/python scripts/make_deploy_pictures.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
