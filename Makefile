# Two commands on a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: venv test lint demo clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	$(PIP) install -q --no-deps imgaug==0.4.0  # for its quokka photo + box, read by path
	touch $@

lint: venv
	$(BIN)/ruff check .

test: venv lint
	$(BIN)/pytest -q

demo: venv
	$(BIN)/python examples/demo.py --out build/demo

clean:
	rm -rf build site .pytest_cache
