"""The README's course map and exercise table list every notebook and exercise that exists."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(start: str, end: str) -> str:
    return README[README.index(start) : README.index(end)]


def test_course_map_links_every_notebook_in_order():
    course_map = section("<!-- course-map:start -->", "<!-- course-map:end -->")
    linked = re.findall(r"\]\((notebooks/[^)]+\.ipynb)\)", course_map)
    on_disk = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert linked == on_disk


def test_course_map_names_only_exercises_that_exist():
    course_map = section("<!-- course-map:start -->", "<!-- course-map:end -->")
    exercises = {p.name for p in (ROOT / "exercises" / "source").iterdir() if p.is_dir()}
    named = set(re.findall(r"`(ex\d\d_[a-z_]+)`", course_map))
    assert named <= exercises, named - exercises


def test_exercise_table_lists_every_exercise():
    table = section("## Graded exercises", "### How to work on an exercise")
    rows = re.findall(r"^\| `(ex\d\d_[a-z_]+)` \|", table, re.M)
    exercises = sorted(p.name for p in (ROOT / "exercises" / "source").iterdir() if p.is_dir())
    assert rows == exercises
