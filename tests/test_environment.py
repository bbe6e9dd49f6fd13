"""Set-up files agree: environment.yml pins match pyproject's; CI runs the README's test command."""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pyproject_pins():
    """The requirements `pip install -e '.[dev]'` installs: the dependencies and the dev extra, with the extras it
    names of the course itself (``dropout-course[instructor]``) expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pins = list(project["dependencies"])
    for requirement in extras["dev"]:
        own = re.fullmatch(rf"{project['name']}\[([a-z,]+)\]", requirement)
        pins += [pin for extra in own.group(1).split(",") for pin in extras[extra]] if own else [requirement]
    return pins


def test_every_dependency_is_pinned_exactly():
    for requirement in pyproject_pins():
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.]*", requirement), requirement
    assert "torch==2.13.0" in pyproject_pins()
    assert not any(r.startswith("torchvision") for r in pyproject_pins())


def test_environment_yml_matches_pyproject():
    lines = (ROOT / "environment.yml").read_text().splitlines()
    conda_pins = [m.group(1) for line in lines if (m := re.match(r"\s+- ([A-Za-z0-9_.\-]+==\S+)$", line))]
    normalize = lambda r: r.lower().replace("_", "-")  # noqa: E731
    assert sorted(map(normalize, conda_pins)) == sorted(map(normalize, pyproject_pins()))
    assert any("python=3.11" in line for line in lines)


def test_ci_and_readme_run_the_same_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: ", makefile, re.M) and re.search(r"^lab: ", makefile, re.M)
    # CI runs the checks first, then the tests; the README shows the pytest command `make test` runs.
    assert ci.index("\nmake check\n") < ci.index("\nmake test")
    pytest_args = re.search(r"^test: .*\n\t\$\(BIN\)/python -m (pytest .*)$", makefile, re.M).group(1)
    assert f"`{pytest_args}`" in " ".join(readme.split()), f"README does not show `{pytest_args}`"


def test_set_threads_default_follows_omp_num_threads(monkeypatch):
    """Notebooks call set_threads(): under a parallel test runner ($OMP_NUM_THREADS set) they must not
    start more threads than their share of the cores."""
    import torch

    from dropout_course.config import set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
        import os

        assert set_threads() == len(os.sched_getaffinity(0))
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_threads() == len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)
