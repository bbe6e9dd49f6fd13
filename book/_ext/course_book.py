"""Sphinx extension for the course website: the bibliography page, widget notes, a root redirect.

* ``<!-- course-references -->`` in a page becomes one section per notebook (in reading order) holding
  that notebook's own "References" cell, so the bibliography is read from the notebooks, never copied.
* Widget outputs without a static figure are dropped (tqdm's progress bars: their text is the initial
  0% state). Every cell that builds one of the course's ipywidgets explorers (``*_explorer(...)``) gets
  a note under its figure: the site shows the static figure; the widget is live in JupyterLab.
* ``index.html`` at the site's root redirects to the landing page ``book/index.html``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from docutils import nodes

EXPLORER_CALL = re.compile(r"\b(\w+_explorer)\(")
REFERENCES_MARKER = "<!-- course-references -->"
REFERENCES_HEADING = re.compile(r"^#{1,6}\s*References\s*$", re.M)


def notebook_title(cells: list[dict], fallback: str) -> str:
    """The first Markdown heading of the notebook's first Markdown cell, else ``fallback``."""
    for cell in cells:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
            break
    return fallback


def references_of(cells: list[dict]) -> str | None:
    """The body of the notebook's "References" Markdown cell (its heading removed), or None."""
    for cell in cells:
        text = "".join(cell["source"]) if cell["cell_type"] == "markdown" else ""
        match = REFERENCES_HEADING.search(text)
        if match:
            return text[match.end() :].strip()
    return None


def insert_references(app, docname: str, source: list[str]) -> None:
    """Replace ``<!-- course-references -->`` by each notebook's References cell under its title."""
    if REFERENCES_MARKER not in source[0]:
        return
    lines: list[str] = []
    for doc in sorted(d for d in app.env.found_docs if d.startswith("notebooks/")):
        path = Path(app.srcdir) / f"{doc}.ipynb"
        app.env.note_dependency(str(path))
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        body = references_of(cells)
        if body is not None:
            lines += [f"## {notebook_title(cells, doc)}", "", f"Cited in {{doc}}`/{doc}`.", "", body, ""]
    source[0] = source[0].replace(
        REFERENCES_MARKER, "\n".join(lines) or "No notebook has a References cell yet."
    )


def _cell_source(cell: nodes.Element) -> str:
    for child in cell.children:
        if isinstance(child, nodes.container) and child.get("nb_element") == "cell_code_source":
            return child.astext()
    return ""


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def drop_progress_bars(doctree: nodes.document) -> None:
    """Remove widget outputs without a static figure: tqdm's bars, whose text is their initial 0% state."""
    for bundle in list(doctree.findall(nodes.container)):
        if bundle.get("nb_element") != "mime_bundle":
            continue
        kinds = {child.get("mime_type", "") for child in bundle.children}
        if WIDGET_VIEW in kinds and not any(kind.startswith("image/") for kind in kinds):
            bundle.parent.remove(bundle)


def note_widgets(app, doctree: nodes.document) -> None:
    """Add a "live in JupyterLab" note under each cell whose output is an explorer's static figure."""
    drop_progress_bars(doctree)
    for cell in list(doctree.findall(nodes.container)):
        if cell.get("nb_element") != "cell_code":
            continue
        has_output = any(
            isinstance(c, nodes.container) and c.get("nb_element") == "cell_code_output"
            for c in cell.children
        )
        found = EXPLORER_CALL.search(_cell_source(cell))
        if not (found and has_output):
            continue
        note = nodes.admonition(classes=["tip", "widget-static-note"])
        note += nodes.title(text="Interactive in JupyterLab")
        note += nodes.paragraph(
            text=(
                f"This figure is the static view of an interactive widget ({found.group(1)}); the widget is "
                "live in JupyterLab: open the notebook there (make lab) to move its sliders and buttons."
            )
        )
        cell.append(note)


def redirect_root(app, exception) -> None:
    """Write ``index.html`` at the output root, redirecting to the landing page."""
    if exception is not None or app.builder.format != "html":
        return
    target = app.builder.get_target_uri(app.config.root_doc)
    html = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0; url={target}">'
        f'<link rel="canonical" href="{target}"><title>Redirect</title></head>'
        f'<body><a href="{target}">{app.config.project}</a></body></html>\n'
    )
    (Path(app.outdir) / "index.html").write_text(html, encoding="utf-8")


def setup(app):
    app.add_config_value("course_inputs_sha256", "", "env")  # set by conf.py: package + pins fingerprint
    app.connect("source-read", insert_references)
    app.connect("doctree-read", note_widgets)
    app.connect("build-finished", redirect_root)
    return {"version": "1.0", "env_version": 2, "parallel_read_safe": True, "parallel_write_safe": True}
