"""Sphinx configuration of the course website (``make book``): myst-nb + sphinx-book-theme.

The Sphinx source folder is the repository root (this folder's parent) so the notebooks are read where they
live; ``include_patterns`` picks the pages: ``book/*.md``, ``notebooks/NN_*.ipynb`` and the learner copies
``exercises/release/*/*.ipynb``. ``exercises/source`` (solutions, hidden tests) is excluded outright and
never read. Build with::

    sphinx-build -b html -c book . build/book/html        # what `make book` runs (with -W)

Notebooks are executed once per content: myst-nb's ``cache`` mode keeps the executed copies in a
jupyter-cache under ``build/.jupyter_cache`` (keyed on the notebook's code; emptied when the package
``dropout_course`` or ``pyproject.toml`` changes), so a rebuild with nothing changed executes nothing. ``scripts/claims_table.py --cache build/.jupyter_cache`` reads the README's
claims tables from the same executed copies. Exercises are shown as the learner gets them, not executed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

BOOK = Path(__file__).resolve().parent
SRC = BOOK.parent  # the repository root (or a copy of its layout, as tests/test_book.py makes)
sys.path.insert(0, str(BOOK / "_ext"))

project = "Dropout, from first principles to practice"
author = "the dropout-course authors"
copyright = "the dropout-course authors"  # noqa: A001 - Sphinx's name

extensions = ["myst_nb", "course_book"]
root_doc = "book/index"

# The pages, and the folders never walked (exclusions also prune os.walk: .venv is big).
include_patterns = ["book/*.md", "notebooks/[0-9][0-9]_*.ipynb", "exercises/release/*/*.ipynb"]
exclude_patterns = [
    p.name for p in SRC.iterdir() if p.is_dir() and p.name not in ("book", "notebooks", "exercises")
] + ["exercises/source", "**/.ipynb_checkpoints", "book/_ext"]

# MyST: $...$ / $$...$$ math (rendered by MathJax), raw HTML such as <details> passes through unchanged.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# The kernels inherit this environment: draw figures inline even where CI sets MPLBACKEND=Agg.
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"

# Execution: once per notebook content, cached; a failing cell (an assert) fails the build.
nb_execution_mode = "cache"
nb_execution_cache_path = str(SRC / "build" / ".jupyter_cache")


def _fresh_cache(cache: Path, inputs: list[Path]) -> str:
    """Empty the cache when what the notebooks import changed: jupyter-cache keys on a notebook's code only,
    but its outputs also depend on ``dropout_course`` and on the pinned versions. Set
    ``DROPOUT_COURSE_BOOK_KEEP_CACHE=1`` to keep it anyway (e.g. after editing only a docstring)."""
    digest = hashlib.sha256()
    for path in sorted(inputs):
        digest.update(path.relative_to(SRC).as_posix().encode() + b"\0" + path.read_bytes())
    stamp = cache / "INPUTS_SHA256"
    keep = os.environ.get("DROPOUT_COURSE_BOOK_KEEP_CACHE", "").strip() not in ("", "0")
    if not keep and not (stamp.is_file() and stamp.read_text().strip() == digest.hexdigest()):
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        stamp.write_text(digest.hexdigest() + "\n")
    return digest.hexdigest()


# A config value of course_book (rebuild="env"): when it changes, Sphinx re-reads every page too.
# The graders (dropout_course/grading) serve the exercises, which are not executed.
course_inputs_sha256 = _fresh_cache(
    Path(nb_execution_cache_path),
    [
        *(p for p in SRC.glob("dropout_course/**/*.py") if "grading" not in p.relative_to(SRC).parts),
        *SRC.glob("pyproject.toml"),
    ],
)
nb_execution_timeout = 300  # seconds per cell, as CI's nbval
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_excludepatterns = ["exercises/release/*/*.ipynb"]  # learner copies: tasks, not outputs
# While writing, DROPOUT_COURSE_BOOK_SKIP="notebooks/0[4-9]_*.ipynb,..." shows those notebooks unexecuted.
nb_execution_excludepatterns += [p for p in os.environ.get("DROPOUT_COURSE_BOOK_SKIP", "").split(",") if p]
nb_merge_streams = True
# Widgets: the course's explorers send one bundle with the live view and a static PNG. The site has no
# kernel, so it shows the PNG (course_book adds a note that the widget is live in JupyterLab) and loads
# no widget JavaScript.
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
nb_ipywidgets_js = {}

html_theme = "sphinx_book_theme"
html_title = "Dropout, from first principles to practice"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "home_page_in_toc": True,
}
html_static_path = []
html_show_sourcelink = False
html_last_updated_fmt = None
