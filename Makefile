# `make run` executes the notebook headless; `make test` runs the tests.
# Both create the virtual environment in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUTPUT_DIR ?= outputs

.PHONY: run test bench bench-quick clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

run: $(BIN)/.installed
	mkdir -p $(OUTPUT_DIR)
	$(BIN)/python -m papermill S5.ipynb $(OUTPUT_DIR)/S5.ipynb -p OUTPUT_DIR $(OUTPUT_DIR)

test: $(BIN)/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf $(OUTPUT_DIR) .pytest_cache
