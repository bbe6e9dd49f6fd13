"""The course website (``make book``): a small book built from the real configuration.

The fixture copies ``book/`` (conf.py, the pages, the extension) into a temporary folder laid out like the
repository, with one short notebook written here (math, a figure, an ipywidgets explorer, a tqdm bar, a
CLAIM line, a collapsed answer, references), one real learner copy from ``exercises/release`` AND its source from
``exercises/source`` (which the configuration must never read), and the README with its course map and
claims table pointing to the short notebook. It builds the HTML with warnings as errors and checks: every
internal link and image resolves, figures are PNG files referenced by their page, math is marked for
MathJax, answers stay collapsed, widgets show their static figure with a note, no solution or hidden-test
line of ``exercises/source`` reaches the output, a rebuild reuses the executed notebook from the cache,
and ``scripts/claims_table.py --cache`` reads the same executed copy.

Needs the ``book`` extra (``pip install -e '.[book]'``): without it the tests SKIP with one line, except
in CI (``CI`` set), where they FAIL.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
EXERCISE = "ex01_inverted_dropout"
NOTEBOOK = "01_tiny_page.ipynb"
BOOK_MODULES = ("sphinx", "myst_nb", "sphinx_book_theme", "jupyter_cache")


def _required() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module", autouse=True)
def book_extra() -> None:
    missing = missing_book_extra()
    if not missing:
        return
    message = f"book extra not installed (no {', '.join(missing)}): pip install -e '.[book]'"
    if _required():
        pytest.fail(f"book test required in CI but {message}", pytrace=False)
    pytest.skip(f"book test skipped: {message}")


def _cell(kind: str, source: str, **extra) -> dict:
    cell = {"cell_type": kind, "metadata": extra.pop("metadata", {}), "source": source, **extra}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def tiny_notebook() -> dict:
    """A short course-style notebook: math, a figure, a widget explorer, a claim, an answer, references."""
    cells = [
        _cell(
            "markdown",
            "# 01 · A tiny page\n\nInverted dropout keeps a unit with probability $1 - p$:\n\n"
            "$$\\tilde x = \\frac{m \\odot x}{1 - p}, \\quad m_i \\sim \\mathrm{Bernoulli}(1 - p).$$",
        ),
        _cell("code", "SEED = 0", metadata={"tags": ["parameters"]}),
        _cell(
            "code",
            "import matplotlib.pyplot as plt\n\nfig, ax = plt.subplots(figsize=(3, 2))\n"
            "ax.plot([0, 1], [1, 0])\nplt.show()",
        ),
        _cell(
            "code",
            "import numpy as np\nfrom dropout_course.widgets import mask_explorer\n\n"
            "explorer = mask_explorer(np.random.default_rng(SEED).random((2, 28, 28)), p=0.5)",
        ),
        _cell("code", 'from tqdm.auto import tqdm\n\nfor _ in tqdm(range(3), desc="tiny loop"):\n    pass'),
        _cell(
            "code",
            "from dropout_course.claims import report_claim\n\nmeasured = 1 + 1\n"
            'assert measured == 2, f"1 + 1 = {measured}"\n'
            'report_claim("tiny-sum", "one and one make two", f"measured {measured}")',
        ),
        _cell(
            "markdown",
            "## Check your understanding\n\n1. Why rescale by $1/(1-p)$?\n\n"
            "<details><summary>Answer</summary>\n\nSo the expected output equals the input.\n\n</details>",
        ),
        _cell(
            "markdown",
            "## References\n\n* Srivastava, N. et al. (2014). *Dropout: a simple way to prevent neural networks "
            "from overfitting.* JMLR 15.",
        ),
    ]
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def small_readme() -> str:
    """The real README with its course map and claims/published tables reduced to the tiny notebook."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    link = f"[A tiny page](notebooks/{NOTEBOOK})"
    sections = {
        "course-map": f"| # | Notebook | Exercise |\n|---|---|---|\n| 01 | {link} | `{EXERCISE}` |",
        "claims": f"| Notebook | Claim | Measured |\n|---|---|---|\n| {link} | one and one make two | 2 |",
        "published": f"| Notebook | Result |\n|---|---|\n| {link} | none |",
    }
    for name, body in sections.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(\n<!-- {name}:end -->)", re.S)
        assert pattern.search(text), (
            f"README has no <!-- {name}:start/end --> markers (book/*.md include them)"
        )
        text = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(2), text)
    return text


def sphinx_build(src: Path, out: Path, quiet: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going"] + ["-q"] * quiet
    command += ["-c", str(src / "book"), str(src), str(out)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(command, cwd=src, env=env, capture_output=True, text=True, timeout=240)


def build_small_book(src: Path) -> dict:
    """Lay out a small course in ``src`` (real book/ configuration) and build it; also used by test_browser."""
    shutil.copytree(ROOT / "book", src / "book", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "README.md").write_text(small_readme(), encoding="utf-8")
    (src / "notebooks").mkdir()
    (src / "notebooks" / NOTEBOOK).write_text(json.dumps(tiny_notebook(), indent=1), encoding="utf-8")
    for kind in ("release", "source"):  # the source must never be read: it is here to prove that
        shutil.copytree(ROOT / "exercises" / kind / EXERCISE, src / "exercises" / kind / EXERCISE)
    out = src / "build" / "html"
    started = time.monotonic()
    result = sphinx_build(src, out)
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"sphinx-build failed ({seconds:.0f} s):\n{result.stdout}\n{result.stderr}"
    return {"src": src, "out": out, "seconds": seconds, "log": result.stdout + result.stderr}


def missing_book_extra() -> list[str]:
    """The modules of the ``book`` extra that are not installed."""
    return [m for m in BOOK_MODULES if importlib.util.find_spec(m) is None]


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> dict:
    return build_small_book(tmp_path_factory.mktemp("book-src"))


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for name in ("href", "src"):
            if attrs.get(name) and not (tag == "a" and attrs.get("class", "").startswith("headerlink")):
                self.refs.append((tag, attrs[name]))


def _parse(path: Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_pages_are_built(book):
    out = book["out"]
    for page in ("index.html", "book/index.html", "book/claims.html", "book/published.html"):
        assert (out / page).is_file(), f"{page} missing from the site"
    assert (out / "notebooks" / NOTEBOOK.replace(".ipynb", ".html")).is_file()
    assert (out / "exercises" / "release" / EXERCISE / f"{EXERCISE}.html").is_file()
    landing = (out / "book" / "index.html").read_text(encoding="utf-8")
    assert f"../notebooks/{NOTEBOOK.replace('.ipynb', '.html')}" in landing, (
        "course map does not link the notebook"
    )
    references = (out / "book" / "references.html").read_text(encoding="utf-8")
    assert "Dropout: a simple way to prevent neural networks" in references, "References cell not on the page"
    print(f"small book built in {book['seconds']:.1f} s")


def test_every_internal_link_resolves(book):
    out = book["out"]
    broken, checked = [], 0
    pages = sorted(
        p for p in out.rglob("*.html") if "_static" not in p.relative_to(out).parts
    )  # not templates
    ids = {page: _parse(page).ids for page in pages}
    for page in pages:
        for tag, ref in _parse(page).refs:
            parts = urlsplit(ref)
            if parts.scheme or parts.netloc or ref.startswith(("mailto:", "javascript:", "data:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            checked += 1
            if not target.exists():
                broken.append(f"{page.relative_to(out)}: <{tag}> {ref}")
            elif parts.fragment and target.suffix == ".html" and target in ids:
                if unquote(parts.fragment) not in ids[target]:
                    broken.append(f"{page.relative_to(out)}: <{tag}> {ref} (no such anchor)")
    assert checked > 50, f"only {checked} internal links found"
    assert not broken, "broken internal links:\n" + "\n".join(broken)


def test_notebook_page_has_figures_math_answers_and_widget_note(book):
    out = book["out"]
    page = out / "notebooks" / NOTEBOOK.replace(".ipynb", ".html")
    text = page.read_text(encoding="utf-8")
    images = [ref for tag, ref in _parse(page).refs if tag == "img"]
    pngs = [page.parent / unquote(urlsplit(ref).path) for ref in images if ref.endswith(".png")]
    assert len(pngs) >= 2, f"expected the plot and the widget's static figure as PNGs, found {images}"
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    assert 'class="math' in text and "mathjax" in text.lower(), "math is not marked for MathJax"
    assert "<details>" in text and "<details open" not in text, "the answer is not a collapsed <details>"
    assert "widget-static-note" in text and "live in JupyterLab" in " ".join(html.unescape(text).split())
    assert "widget-view+json" not in text, "widget view emitted without a kernel to render it"
    assert "tiny loop:" not in text, "a tqdm progress bar shows as text (its 0% state) on the page"
    assert "CLAIM: tiny-sum" in text, "the notebook's CLAIM line is not in the executed page"


def _hidden_lines() -> set[str]:
    """Distinctive lines of every solution and hidden-test block in exercises/source."""
    blocks = re.compile(r"### BEGIN (SOLUTION|HIDDEN TESTS)\n(.*?)### END \1", re.S)
    public = "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "exercises" / "release").rglob("*.ipynb")
    )
    lines = set()
    for path in (ROOT / "exercises" / "source").rglob("*.ipynb"):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            for _, body in blocks.findall("".join(cell["source"])):
                for line in body.splitlines():
                    line = line.strip()
                    if len(line) >= 20 and json.dumps(line)[1:-1] not in public and line not in public:
                        lines.add(line)
    return lines


def test_no_solution_or_hidden_test_reaches_the_site(book):
    hidden = _hidden_lines()
    assert len(hidden) > 20, f"only {len(hidden)} solution lines found in exercises/source"
    leaks = []
    for path in sorted(p for p in book["out"].rglob("*") if p.is_file()):
        if path.suffix not in (".html", ".txt", ".ipynb", ".js", ".md", ".json"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        text = html.unescape(re.sub(r"<[^>]+>", "", text)) if path.suffix == ".html" else text
        leaks += [f"{path.relative_to(book['out'])}: {line}" for line in hidden if line in text]
    assert not leaks, "solution / hidden-test lines in the site:\n" + "\n".join(leaks[:20])
    assert not (book["out"] / "exercises" / "source").exists(), "exercises/source was built"


def test_rebuild_uses_the_cache_and_claims_table_reads_it(book):
    src = book["src"]
    started = time.monotonic()
    result = sphinx_build(src, src / "build" / "html-again", quiet=False)  # a fresh output and environment
    rebuild = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    cache = src / "build" / ".jupyter_cache"
    assert (cache / "global.db").is_file(), "no jupyter-cache under build/.jupyter_cache"
    page = (src / "build" / "html-again" / "notebooks" / NOTEBOOK.replace(".ipynb", ".html")).read_text()
    assert "CLAIM: tiny-sum" in page
    claims = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "claims_table.py"), "--cache", str(cache), "--print"]
        + [str(src / "notebooks" / NOTEBOOK)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert claims.returncode == 0, claims.stderr
    assert "one and one make two" in claims.stdout and "measured 2" in claims.stdout, claims.stdout
    print(f"cold build {book['seconds']:.1f} s, rebuild from the cache {rebuild:.1f} s")
    assert "Using cached notebook" in result.stdout and "Executing notebook" not in result.stdout, (
        result.stdout
    )
