# The course in two commands:  `make lab`  and  `make test`  (and `make check` before a commit).
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: lab test check lint doctor clean-venv book

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

## Build the course website into build/book/html: every notebook executed (once per content: the jupyter-cache in
## build/.jupyter_cache is reused), the learner copies of the exercises, the claims tables. Warnings are errors.
## The README's claims tables are then refreshed from the same executed notebooks (and the site rebuilt if they
## changed), so the tables and the site cannot disagree. Needs the `book` extra, installed here on first use.
BOOK_STAMP  = $(VENV)/.installed-book
BOOK_BUILD  = $(BIN)/sphinx-build -b html -W --keep-going -c book . build/book/html
BOOK_CLAIMS = $(BIN)/python scripts/claims_table.py --cache build/.jupyter_cache

$(BOOK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[book]'
	@touch $(BOOK_STAMP)

book: $(BOOK_STAMP)
	$(BOOK_BUILD)
	@$(BOOK_CLAIMS) --check 2>/dev/null || { $(BOOK_CLAIMS) && $(BOOK_BUILD) && \
		echo "README.md: claims tables refreshed from the executed notebooks; commit README.md"; }
	@echo "The course website: build/book/html/index.html"

lint: $(STAMP)
	$(BIN)/ruff check .

doctor: $(STAMP)
	$(BIN)/dropout-course doctor

clean-venv:
	rm -rf $(VENV)
