# The course in two commands:  `make lab`  and  `make test`  (and `make check` before a commit).
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: lab test check lint doctor clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## Set up the environment if needed and open the course in JupyterLab.
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

## Set up the environment if needed and run the whole test suite (CI runs exactly this, after `make check`).
## Two workers; each file (a notebook, an exercise, a test module) runs whole on one worker.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=15 -rs --nbval-lax --nbval-cell-timeout=300

## Lint, formatting, complexity and the package's docstring examples (CI runs this before `make test`).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest --doctest-modules dropout_course -q

lint: $(STAMP)
	$(BIN)/ruff check .

doctor: $(STAMP)
	$(BIN)/dropout-course doctor

clean-venv:
	rm -rf $(VENV)
