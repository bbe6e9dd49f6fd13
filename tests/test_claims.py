"""Claims: the printed line, its parsing (strict on malformed lines), the README section rewrite, and the
script end to end on a small executed notebook."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dropout_course.claims import (
    END,
    PUBLISHED_END,
    PUBLISHED_START,
    START,
    TIMING_NOTE,
    Claim,
    PublishedResult,
    claims_from_notebook,
    comparable,
    parse_claims,
    parse_published,
    published_from_notebook,
    render_published_table,
    render_table,
    replace_section,
    report_claim,
    report_published,
)

ROOT = Path(__file__).resolve().parents[1]


def test_report_claim_prints_and_returns_the_line(capsys):
    line = report_claim("gap-narrows", "dropout narrows the gap", "0.21 -> 0.05 (5 seeds)")
    assert line == "CLAIM: gap-narrows | dropout narrows the gap | 0.21 -> 0.05 (5 seeds)"
    assert capsys.readouterr().out == line + "\n"
    assert parse_claims(line) == [Claim("gap-narrows", "dropout narrows the gap", "0.21 -> 0.05 (5 seeds)")]


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("Gap", "c", "m"), ValueError, "'Gap'"),
        (("a b", "c", "m"), ValueError, "'a b'"),
        ((3, "c", "m"), ValueError, "3"),
        (("a", "x | y", "m"), ValueError, "claim.*'x \\| y'"),
        (("a", "c", "two\nlines"), ValueError, "measured"),
        (("a", "c", "  "), ValueError, "measured must not be empty"),
        (("a", "c", 0.5), TypeError, "measured must be a str.*0.5"),
    ],
)
def test_report_claim_rejects_bad_fields(args, error, message):
    with pytest.raises(error, match=message):
        report_claim(*args)


def test_parse_claims_skips_other_output_and_rejects_malformed_lines():
    text = "epoch 1 loss 0.3\nCLAIM: a | first | 1.0\n  CLAIM:b|second|2.0  \nCLAIMS are nice\n"
    assert [(c.id, c.claim, c.measured) for c in parse_claims(text)] == [
        ("a", "first", "1.0"),
        ("b", "second", "2.0"),
    ]
    with pytest.raises(ValueError, match="malformed claim line in 03_x.ipynb: 'CLAIM: a \\| only two'"):
        parse_claims("CLAIM: a | only two", notebook="03_x.ipynb")
    with pytest.raises(ValueError, match="malformed"):
        parse_claims("CLAIM: Bad Id | c | m")


def executed_notebook(*stdout_chunks_per_cell):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 02 Over-fitting\n\ntext")]
    for chunks in stdout_chunks_per_cell:
        cell = nbformat.v4.new_code_cell("...")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=t) for t in chunks]
        cell.outputs.append(
            nbformat.v4.new_output("stream", name="stderr", text="CLAIM: not | from | stderr\n")
        )
        nb.cells.append(cell)
    return nb


def test_claims_from_notebook_reads_stdout_in_order_across_chunks():
    nb = executed_notebook(["CLAIM: one | c1 ", "| m1\nother\n"], ["CLAIM: two | c2 | m2\n"])
    claims = claims_from_notebook(nb, "02_overfitting.ipynb")
    assert [(c.id, c.measured, c.notebook) for c in claims] == [
        ("one", "m1", "02_overfitting.ipynb"),
        ("two", "m2", "02_overfitting.ipynb"),
    ]
    with pytest.raises(ValueError, match="'one' appears twice"):
        claims_from_notebook(executed_notebook(["CLAIM: one | a | b\n"], ["CLAIM: one | c | d\n"]), "x")


def test_render_table_links_notebooks_and_escapes_pipes():
    claims = [Claim("a", "p = 0.5 is best", "val acc 0.91 ± 0.01", "02_overfitting.ipynb")]
    table = render_table(claims, {"02_overfitting.ipynb": "02 Over-fitting"})
    assert table.splitlines() == [
        "| Notebook | Claim | Measured |",
        "|---|---|---|",
        "| [02 Over-fitting](notebooks/02_overfitting.ipynb) | p = 0.5 is best | val acc 0.91 ± 0.01 |",
    ]
    assert r"a \| b" in render_table([Claim("x", "a | b", "m", "n.ipynb")])


def test_replace_section_is_idempotent_and_strict():
    readme = f"# Course\n\nintro\n\n## Claims and evidence\n\n{START}\nold table\n{END}\n\n## More\n"
    once = replace_section(readme, "new table")
    assert once == f"# Course\n\nintro\n\n## Claims and evidence\n\n{START}\nnew table\n{END}\n\n## More\n"
    assert replace_section(once, "new table") == once
    appended = replace_section("# Course\n", "table")
    assert appended == f"# Course\n\n## Claims and evidence\n\n{START}\ntable\n{END}\n"
    for broken in (f"{START} only", f"{END} then {START}", f"{START}{END}{START}{END}"):
        with pytest.raises(ValueError, match="expected one"):
            replace_section(broken, "x")


def test_report_published_prints_a_line_that_parses_back(capsys):
    line = report_published(
        "fig10",
        "Srivastava et al. 2014, Fig. 10",
        "gain peaks at medium sizes",
        "not reproduced",
        "0.1 / 0.2",
    )
    assert capsys.readouterr().out == line + "\n"
    assert parse_published(line, "09_x.ipynb") == [
        PublishedResult(
            "fig10",
            "Srivastava et al. 2014, Fig. 10",
            "gain peaks at medium sizes",
            "not reproduced",
            "0.1 / 0.2",
            "09_x.ipynb",
        )
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Fig 10", "s", "r", "reproduced", "m"), "result_id"),
        (("f", "s", "r", "sort of", "m"), "status must be one of.*'sort of'"),
        (("f", "s | t", "r", "reproduced", "m"), "source"),
        (("f", "s", "r", "reproduced", ""), "measured must not be empty"),
    ],
)
def test_report_published_rejects_bad_fields(args, message):
    with pytest.raises(ValueError, match=message):
        report_published(*args)


def test_parse_published_is_strict_and_ids_are_unique():
    with pytest.raises(ValueError, match="malformed published-result line in 04.ipynb"):
        parse_published("PUBLISHED: a | s | r | maybe | m", "04.ipynb")
    with pytest.raises(ValueError, match="malformed"):
        parse_published("PUBLISHED: a | s | r | reproduced")
    twice = executed_notebook(
        ["PUBLISHED: a | s | r | reproduced | m\n"], ["PUBLISHED: a | s | r | partly reproduced | m\n"]
    )
    with pytest.raises(ValueError, match="'a'"):
        published_from_notebook(twice, "x")


def test_render_published_table():
    row = PublishedResult("a", "Hinton 2012", "input | hidden", "partly reproduced", "-0.02", "02_o.ipynb")
    assert render_published_table([row], {"02_o.ipynb": "02 O"}).splitlines()[2] == (
        r"| Hinton 2012 | input \| hidden | partly reproduced | -0.02 | [02 O](notebooks/02_o.ipynb) |"
    )


def test_script_end_to_end(tmp_path):
    """Execute a small notebook whose assert passes and reports its claim: the README gets the table and
    --check on the saved executed copy passes; a failing notebook leaves the README untouched, exit 1."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 99 Tiny claims\n\nA test notebook."),
        nbformat.v4.new_code_cell(
            "from dropout_course.claims import report_claim\n"
            "gap = 0.05\n"
            "assert gap < 0.1, f'gap {gap}'\n"
            "report_claim('gap-small', 'the gap is small', f'gap {gap:.2f} < 0.1')"
        ),
        nbformat.v4.new_code_cell(
            "from dropout_course.claims import report_published\n"
            "report_published('fig1', 'Someone 2020, Fig. 1', 'gaps are small', 'reproduced', 'gap 0.05')"
        ),
    ]
    good = tmp_path / "99_tiny.ipynb"
    nbformat.write(nb, good)
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Course\n\n## Claims and evidence\n\n{START}\n{END}\n\n{PUBLISHED_START}\n{PUBLISHED_END}\n"
    )
    script = [sys.executable, str(ROOT / "scripts" / "claims_table.py"), "--readme", str(readme)]
    out = tmp_path / "executed"
    run = subprocess.run(
        [*script, "--save-executed", str(out), str(good)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    text = readme.read_text()
    assert "| [99 Tiny claims](notebooks/99_tiny.ipynb) | the gap is small | gap 0.05 < 0.1 |" in text
    assert "1 claims from 1 notebooks" in text
    assert (
        "| Someone 2020, Fig. 1 | gaps are small | reproduced | gap 0.05 | [99 Tiny claims](notebooks/99_tiny.ipynb) |"
        in text
    )
    check = subprocess.run(
        [*script, "--check", "--executed", str(out), str(good)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr

    nb.cells[1].source = nb.cells[1].source.replace("0.05", "0.5")  # the assert now fails
    bad = tmp_path / "98_bad.ipynb"
    nbformat.write(nb, bad)
    failed = subprocess.run([*script, str(bad)], capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and "98_bad.ipynb" in failed.stderr and "gap 0.5" in failed.stderr
    assert readme.read_text() == text


def test_timing_rows_are_compared_without_their_numbers_and_status(capsys):
    """A rebuild on another machine must not rewrite the README for timings alone; any other change must."""
    fast = report_claim("speed", "skipping blocks is cheaper", "0.81 of a step", timing=True)
    slow = report_claim("speed", "skipping blocks is cheaper", "0.88 of a step", timing=True)
    assert fast.endswith(TIMING_NOTE) and comparable(fast) == comparable(slow) and fast != slow
    row = report_published("sd", "Huang 2016", "25% faster", "reproduced", "19% saved", timing=True)
    other = report_published("sd", "Huang 2016", "25% faster", "partly reproduced", "12% saved", timing=True)
    assert comparable(row) == comparable(other)
    plain = report_claim("gap", "dropout narrows the gap", "gap 0.21 -> 0.05")
    assert comparable(plain) == plain != report_claim("gap", "dropout narrows the gap", "gap 0.21 -> 0.06")
    assert comparable(plain) != comparable(report_claim("gap", "dropout narrows the gap", "gap 0.21 -> 0.06"))
    assert comparable(fast) != comparable(fast.replace("cheaper", "dearer"))  # the words still count
