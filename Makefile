# `make run` executes the notebook headless; `make test` runs the tests.
# Both create the virtual environment in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run record test bench bench-quick clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

# Executes the notebook with its defaults into outputs/ (the notebook's OUTPUT_DIR), then merges
# each progress bar's updates into its final state so the executed notebook reads cleanly.
run: $(BIN)/.installed
	mkdir -p outputs
	$(BIN)/python -m papermill S5.ipynb outputs/S5.ipynb
	$(BIN)/jupyter nbconvert --to notebook --coalesce-streams --inplace --log-level WARN outputs/S5.ipynb

# Makes the committed S5.ipynb and docs/ plots the record of a fresh `make run`.
record: run
	cp outputs/S5.ipynb S5.ipynb
	mkdir -p docs
	cp outputs/curves.png outputs/confusion_matrix.png outputs/misclassified.png docs/

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/benchmark.py

bench-quick: $(BIN)/.installed
	$(BIN)/python benchmarks/benchmark.py --quick --out outputs/benchmark-quick.json

test: $(BIN)/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf outputs .pytest_cache
