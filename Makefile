# The course in two commands:  `make lab`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: lab test lint release doctor clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## Set up the environment if needed and open the course in JupyterLab.
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

## Set up the environment if needed and run the whole test suite (CI runs exactly this).
test: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout=300 -p no:randomly

lint: $(STAMP)
	$(BIN)/ruff check .

doctor: $(STAMP)
	$(BIN)/dropout-course doctor

clean-venv:
	rm -rf $(VENV)
