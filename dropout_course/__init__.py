"""dropout_course: the helper package of the dropout course.

Import submodules directly (``from dropout_course.layers import Dropout``); this package file stays
light so that ``import dropout_course`` is fast.
"""

__version__ = "0.1.0"
