"""One detector of torch's dropout (:class:`dropout_course.grading.detect.Trace`) for every check.

``ctx.torch_dropout_calls`` and ``ctx.fail_if_torch_dropout`` (checks without an Originality: the
"does not call torch's own dropout" properties, ex02's structure checks) see every entry point the
originality trace sees, including those a monkeypatching spy missed (saved at definition time, aten ops).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import dropout as saved_dropout
from torch import nn

from dropout_course.grading.core import CheckContext, Fail

SAVED_VF = torch._VF.dropout
X = torch.ones(4, 6)
QKV = torch.ones(1, 2, 3, 4)

ENTRY_POINTS = {
    "functional": (lambda: F.dropout(X, 0.5), ["torch.nn.functional.dropout"]),
    "functional_2d": (lambda: F.dropout2d(X[None, None], 0.5), ["torch.nn.functional.dropout2d"]),
    "module": (lambda: nn.Dropout(0.5)(X), ["torch.nn.Dropout", "torch.nn.functional.dropout"]),
    "module_subclass": (
        lambda: type("Mine", (nn.Dropout,), {})(0.5)(X),
        ["torch.nn.Dropout", "torch.nn.functional.dropout"],
    ),
    "from_torch_import": (lambda: saved_dropout(X, 0.5, True), ["torch.dropout"]),
    "vf_saved": (lambda: SAVED_VF(X, 0.5, True), ["torch.dropout"]),
    "aten_dropout": (lambda: torch.ops.aten.dropout(X, 0.5, True), ["torch.ops.aten.dropout"]),
    "aten_native": (lambda: torch.ops.aten.native_dropout(X, 0.5, True), ["torch.ops.aten.native_dropout"]),
    "feature_dropout": (lambda: torch.feature_dropout(X[None], 0.5, True), ["torch.feature_dropout"]),
    "alpha": (lambda: torch.alpha_dropout(X, 0.5, True), ["torch.alpha_dropout"]),
    "feature_alpha": (
        lambda: F.feature_alpha_dropout(X[None], 0.5, True),
        ["torch.nn.functional.feature_alpha_dropout"],
    ),
    "sdpa": (
        lambda: F.scaled_dot_product_attention(QKV, QKV, QKV, dropout_p=0.3),
        ["torch.nn.functional.scaled_dot_product_attention(dropout_p > 0)"],
    ),
}


def context() -> CheckContext:
    return CheckContext(None, time_limit=10.0, seed=0, extra={})


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_torch_dropout_entry_point_is_named(entry):
    fn, names = ENTRY_POINTS[entry]
    ctx = context()
    ctx.call(fn)
    assert sorted(set(ctx.torch_dropout_calls)) == names
    with pytest.raises(Fail) as failed:
        ctx.fail_if_torch_dropout("write the mask yourself")
    assert str(failed.value) == f"calls torch's own dropout ({', '.join(names)}): write the mask yourself"


def test_own_mask_and_attention_without_dropout_are_not_torch_dropout():
    ctx = context()
    ctx.call(lambda: X * (torch.rand_like(X) >= 0.5) / 0.5)
    ctx.call(lambda: F.scaled_dot_product_attention(QKV, QKV, QKV, dropout_p=0.0))
    ctx.call(lambda: nn.Dropout(0.5).eval()(X) + nn.Linear(6, 6)(X))
    assert ctx.torch_dropout_calls == ["torch.nn.Dropout", "torch.nn.functional.dropout"]  # eval still calls
    ctx = context()
    ctx.call(lambda: X * (torch.rand_like(X) >= 0.5) / 0.5)
    ctx.fail_if_torch_dropout("unused")  # nothing called: no failure


def test_nothing_is_recorded_outside_a_call_and_no_patch_is_left():
    ctx = context()
    ctx.call(lambda: F.dropout(X, 0.5))
    nn.Dropout(0.5)(X)
    F.dropout(X, 0.5)
    assert ctx.torch_dropout_calls == ["torch.nn.functional.dropout"]
    assert (
        F.dropout.__module__ == "torch.nn.functional" and torch.dropout is torch._C._VariableFunctions.dropout
    )
