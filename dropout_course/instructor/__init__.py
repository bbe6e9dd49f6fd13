"""Instructor tooling on top of the graders: learner copies (``dropout-course release``) and grading a class
of submitted notebooks into a gradebook (``dropout-course grade``), with the learner's code treated as hostile.

The checks themselves live in :mod:`dropout_course.grading` (also used for in-notebook feedback); this
package only plans, isolates and records. See the docstrings of :mod:`.autograde` and :mod:`.judge`.
"""
