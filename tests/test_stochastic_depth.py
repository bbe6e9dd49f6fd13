"""StochasticDepth (Huang et al. 2016, one decision per mini-batch) and the linear decay rule."""

import pytest
import torch
from torch import nn

from dropout_course.layers import StochasticDepth, stochastic_depth_rates


class Counting(nn.Module):
    """A branch that counts its calls: 2 x."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return 2 * x


def test_whole_batch_skips_or_runs_and_the_branch_is_not_computed_when_skipped():
    branch = Counting()
    block = StochasticDepth(branch, p=0.3, generator=torch.Generator().manual_seed(0)).train()
    x = torch.ones(5, 3)
    outs = [block(x) for _ in range(2000)]
    skipped = sum(torch.equal(o, x) for o in outs)
    ran = sum(torch.equal(o, 3 * x) for o in outs)
    assert skipped + ran == 2000, "each call either skips for the whole batch or runs for the whole batch"
    assert branch.calls == ran, "a skipped block must not compute its branch"
    # binomial(2000, 0.3): sd = 20.5, so +-4 sd is +-82
    assert abs(skipped - 600) < 82, f"skipped {skipped} of 2000 calls at p = 0.3"


def test_eval_scales_the_branch_by_its_survival_probability():
    block = StochasticDepth(Counting(), p=0.25).eval()
    x = torch.randn(4, 2)
    assert torch.allclose(block(x), x + 0.75 * 2 * x)
    assert torch.equal(StochasticDepth(Counting(), p=0.0).train()(x), 3 * x)


def test_p_one_is_the_identity_and_never_runs_the_branch():
    branch = Counting()
    block = StochasticDepth(branch, p=1.0)
    x = torch.randn(3, 2)
    assert torch.equal(block.train()(x), x) and torch.equal(block.eval()(x), x)
    assert branch.calls == 0


def test_generator_makes_decisions_reproducible_without_the_global_rng():
    def decisions(seed):
        block = StochasticDepth(Counting(), p=0.5, generator=torch.Generator().manual_seed(seed)).train()
        torch.manual_seed(seed + 7)
        return [bool(torch.equal(block(torch.ones(1)), torch.ones(1))) for _ in range(40)]

    assert decisions(1) == decisions(1) and decisions(1) != decisions(2)


def test_gradients_reach_the_branch_only_when_it_ran():
    branch = nn.Linear(3, 3)
    block = StochasticDepth(branch, p=1.0).train()
    block(torch.randn(2, 3, requires_grad=True)).sum().backward()
    assert branch.weight.grad is None
    block.p = 0.0
    block(torch.randn(2, 3)).sum().backward()
    assert branch.weight.grad is not None


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="got 1.5"):
        StochasticDepth(nn.Identity(), p=1.5)
    with pytest.raises(TypeError, match="branch must be a torch.nn.Module"):
        StochasticDepth(lambda x: x, p=0.1)
    with pytest.raises(ValueError, match="n_blocks must be a positive int, got 0"):
        stochastic_depth_rates(0, 0.5)


def test_linear_decay_rule():
    rates = stochastic_depth_rates(8, 0.5)
    assert rates[-1] == 0.5 and rates[0] == pytest.approx(0.5 / 8)
    assert all(b > a for a, b in zip(rates[:-1], rates[1:], strict=True))
    assert sum(1 - r for r in rates) == pytest.approx(8 - 0.5 * 9 / 2)  # expected blocks run
