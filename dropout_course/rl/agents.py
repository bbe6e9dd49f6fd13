"""Many independent dropout Q-networks trained in lockstep as one batched module (one per seed / setting).

RL results need many seeds, and a tiny Q-network spends more time in Python and kernel launches than in
arithmetic. :class:`QNetworkBatch` holds ``A`` separate MLPs -- each its own weights, its own dropout masks
and optionally its own dropout rate -- and evaluates them with one batched matrix product per layer, so
training 30 agents costs about as much wall time as a few. Each agent's layers are those of
:class:`~dropout_course.models.QNetwork` (``Linear -> Dropout -> ReLU``), initialised like ``nn.Linear``.
Summing the agents' losses and stepping Adam trains them independently: Adam's update is element-wise,
so no agent's gradient reaches another agent's weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..layers import Dropout, check_probability

__all__ = ["QNetworkBatch"]


class QNetworkBatch(nn.Module):
    """``A`` independent MLP Q-functions as one module: observations (A, N, obs_dim) -> values (A, N, n_actions).

    Agent ``i`` computes :math:`h_{k+1} = \\mathrm{ReLU}(\\mathrm{dropout}_{p_i}(h_k W_k^{(i)} + b_k^{(i)}))`
    on its own slice ``x[i]``, and a last linear layer gives the action values.

    Args:
        n_agents: number of agents ``A``.
        obs_dim: observation size.
        n_actions: number of actions.
        hidden: widths of the hidden layers.
        dropout: probability of DROPPING a hidden unit: one float for all agents, or one per agent.
        generator: ``torch.Generator`` for the initial weights and the dropout masks.

    Shape:
        Input: (A, N, obs_dim). Output: (A, N, n_actions).

    Examples:
        >>> net = QNetworkBatch(3, obs_dim=4, n_actions=2, hidden=(8,), dropout=[0.0, 0.5, 0.5])
        >>> net(torch.zeros(3, 5, 4)).shape
        torch.Size([3, 5, 2])
        >>> net.l2().shape  # one weight penalty per agent
        torch.Size([3])
    """

    def __init__(
        self,
        n_agents: int,
        obs_dim: int,
        n_actions: int,
        hidden: tuple[int, ...] = (64, 64),
        dropout: float | Sequence[float] = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("n_agents", n_agents), ("obs_dim", obs_dim), ("n_actions", n_actions)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        rates = [dropout] * n_agents if not isinstance(dropout, Sequence) else list(dropout)
        if len(rates) != n_agents:
            raise ValueError(
                f"dropout must be one float or {n_agents} floats (one per agent), got {dropout!r}"
            )
        self.rates = tuple(check_probability(p, "dropout") for p in rates)
        # agents with the same rate share one Dropout module (its masks are still drawn per element)
        distinct = sorted(set(self.rates))
        self.drops = nn.ModuleList(Dropout(p, generator=generator) for p in distinct)
        groups = [[i for i, p in enumerate(self.rates) if p == q] for q in distinct]
        self.groups = [torch.tensor(g) for g in groups]
        self.inverse = torch.argsort(torch.cat(self.groups))  # puts the concatenated groups back in order
        sizes = [obs_dim, *hidden, n_actions]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation
            w = (torch.rand(n_agents, fan_in, fan_out, generator=generator) * 2 - 1) * bound
            b = (torch.rand(n_agents, 1, fan_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    @property
    def n_agents(self) -> int:
        return len(self.rates)

    def _dropout(self, h: Tensor) -> Tensor:
        if len(self.drops) == 1:
            return self.drops[0](h)
        return torch.cat([drop(h[g]) for g, drop in zip(self.groups, self.drops, strict=True)])[self.inverse]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[0] != self.n_agents:
            raise ValueError(f"expected input of shape ({self.n_agents}, N, obs_dim), got {tuple(x.shape)}")
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)  # (A, N, fan_out)
            if k < last:
                x = self._dropout(x).relu()
        return x

    def l2(self) -> Tensor:
        """Each agent's sum of squared weights (biases excluded), shape (A,): the L2 penalty."""
        return sum((w**2).sum(dim=(1, 2)) for w in self.weights)
