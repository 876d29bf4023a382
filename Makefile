# `make run` executes the notebook headless; `make test` runs the tests (`make test-fast`: the
# quick tier). All create the virtual environment in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# papermill options for `make run`, e.g. PARAMS="-p EPOCHS 3 -p SEED 2".
PARAMS ?=
# Where `make run` keeps the executed notebooks: a new file for every run, never overwritten, however
# many runs start at once (mktemp picks a name no other run has).
NOTEBOOKS ?= outputs/notebooks
# The kernel warns on every start that its loopback TCP channel is unencrypted; the kernel is
# local and the channel never leaves the machine, so `make run` leaves that warning out.
KERNEL_NOISE := Kernel is running over TCP without encryption

SHELL := /bin/bash
.PHONY: run record test test-fast lint format bench bench-quick clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

# Executes the notebook, printing its progress and one line per epoch as it goes. Each run saves
# into a new folder under the notebook's OUTPUT_DIR (outputs/ unless PARAMS sets it); the executed
# notebook goes to a new file in $(NOTEBOOKS), with each progress bar merged into its final state.
run: $(BIN)/.installed
	@mkdir -p $(NOTEBOOKS)
	set -o pipefail; \
	executed=$$(mktemp $(NOTEBOOKS)/S5-$$(date +%Y%m%d-%H%M%S)-XXXXXX.ipynb) && \
	$(BIN)/python -m papermill S5.ipynb "$$executed" $(PARAMS) \
		--no-progress-bar --stdout-file /dev/stdout --stderr-file /dev/stderr \
		2> >(grep -v --line-buffered "$(KERNEL_NOISE)" >&2) && \
	$(BIN)/jupyter nbconvert --to notebook --coalesce-streams --inplace --log-level WARN "$$executed" && \
	echo "$$executed" > $(NOTEBOOKS)/.latest && \
	echo "Executed notebook: $$executed"

# Makes the committed S5.ipynb and docs/ plots the record of a fresh `make run`.
record: run
	cp "$$(cat $(NOTEBOOKS)/.latest)" S5.ipynb
	mkdir -p docs
	run_dir=$$($(BIN)/python -c 'from workbench import runs; print(runs.latest_run("outputs"))') && \
		cp $$run_dir/curves.png $$run_dir/confusion_matrix.png $$run_dir/misclassified.png docs/

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.benchmark

bench-quick: $(BIN)/.installed
	$(BIN)/python -m benchmarks.benchmark --quick --out outputs/benchmark-quick.json

# Every test; the slow ones run the notebook, a browser or one epoch on the real data. The tests
# are spread over one worker process per CPU core (pytest-xdist), each training in one thread.
test: $(BIN)/.installed
	$(BIN)/python -m pytest -n auto

# The edit-test loop: every test that runs no notebook or browser and trains nothing on real data.
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -n auto -m "not slow"

# ruff, configured in pyproject.toml, over the .py files and the notebook.
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf .pytest_cache
	@echo "outputs/ holds every run's results and is left alone: delete it yourself if you mean to."
