"""Every "Check your understanding" question has a collapsed hint and a collapsed answer, in that order,
and every notebook ends its teaching with references; learner copies never reveal a graded solution."""

import pathlib
import re

import nbformat
import pytest

from dropout_course.instructor.release import find_sources

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOURCES = sorted(p for p in (ROOT / "exercises" / "source").glob("*/*.ipynb"))
RELEASES = sorted(p for p in (ROOT / "exercises" / "release").glob("*/*.ipynb"))
HEADING = re.compile(r"check your understanding", re.I)
QUESTION = re.compile(r"^(\d+)\.\s+\S", re.M)
HINT = "<summary>Hint</summary>"
ANSWER = "<summary>Answer</summary>"


def question_blocks(path: pathlib.Path) -> list[str]:
    """The Markdown text after each "Check your understanding" heading, up to the next heading."""
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    blocks = []
    for match in HEADING.finditer(text):
        rest = text[match.end() :]
        nxt = re.search(r"^#{1,6} |^\*\*[A-Z][^*\n]*\.\*\*$|^Your score so far", rest, re.M)
        blocks.append(rest[: nxt.start()] if nxt else rest)
    return blocks


def split_questions(block: str) -> list[str]:
    """Each numbered question with everything up to the next one (its hint and answer included)."""
    # Only numbers at the start of a line that are not inside a <details> block start a question.
    parts, depth, current = [], 0, None
    for line in block.splitlines():
        if depth == 0 and QUESTION.match(line):
            if current is not None:
                parts.append("\n".join(current))
            current = [line]
        elif current is not None:
            current.append(line)
        depth += line.count("<details") - line.count("</details>")
    if current is not None:
        parts.append("\n".join(current))
    return parts


@pytest.mark.parametrize("path", NOTEBOOKS + SOURCES + RELEASES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_question_has_a_hint_then_an_answer(path):
    blocks = question_blocks(path)
    assert blocks, f"{path.name} has no 'Check your understanding' section"
    for block in blocks:
        questions = split_questions(block)
        assert questions, f"{path.name}: 'Check your understanding' lists no numbered question"
        for question in questions:
            first = question.splitlines()[0][:60]
            hint, answer = question.find(HINT), question.find(ANSWER)
            assert hint != -1, f"{path.name}: question {first!r} has no collapsed hint ({HINT})"
            assert answer != -1, f"{path.name}: question {first!r} has no collapsed answer ({ANSWER})"
            assert hint < answer, f"{path.name}: question {first!r}: the hint must come before the answer"
            assert question.count("<details") == question.count("</details>"), (
                f"{path.name}: question {first!r} has an unclosed <details> block"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_ends_with_references(path):
    nb = nbformat.read(path, as_version=4)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    refs = [m for m in markdown if re.search(r"^#+ *(References|Further reading)", m, re.M | re.I)]
    assert refs, f"{path.name} has no References section"
    assert re.search(r"\b(19|20)\d\d\b", refs[-1]), f"{path.name}: the references name no year"


def solution_lines(source: pathlib.Path) -> set[str]:
    """The lines between BEGIN/END SOLUTION markers of a source notebook (long enough to be telling)."""
    nb = nbformat.read(source, as_version=4)
    lines, inside = set(), False
    for cell in nb.cells:
        for line in cell.source.splitlines():
            stripped = line.strip()
            if "BEGIN SOLUTION" in stripped:
                inside = True
            elif "END SOLUTION" in stripped:
                inside = False
            elif inside and len(stripped) >= 25 and not stripped.startswith("#"):
                lines.add(stripped)
    return lines


@pytest.mark.parametrize("source", find_sources(ROOT / "exercises" / "source"), ids=lambda p: p.parent.name)
def test_release_answers_do_not_reveal_graded_solutions(source):
    release = ROOT / "exercises" / "release" / source.parent.name / source.name
    nb = nbformat.read(release, as_version=4)
    answers = "\n".join(
        part.split("</details>")[0]
        for c in nb.cells
        if c.cell_type == "markdown"
        for part in c.source.split(ANSWER)[1:]
    )
    leaked = [line for line in solution_lines(source) if line in answers]
    assert not leaked, f"{release.name}: an answer shows solution code: {leaked[:3]}"
