"""The dropout family, written from scratch (no ``torch.nn.functional.dropout`` inside).

Everywhere in this course ``p`` is the probability of DROPPING a unit, as in PyTorch. All layers use
*inverted* dropout: kept units are scaled by ``1 / (1 - p)`` during training so that the expected
output equals the input and nothing needs rescaling at test time.

Every layer is an identity when ``p == 0`` or in eval mode, returns zeros (never NaN) when ``p == 1``,
never modifies its input, and takes an optional ``torch.Generator`` so results are reproducible without
touching the global RNG.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "dropout",
    "Dropout",
    "SpatialDropout",
    "DropBlock",
    "LockedDropout",
    "GaussianDropout",
    "DropPath",
    "StochasticDepth",
    "stochastic_depth_rates",
    "DropConnectLinear",
    "dropout_forward_numpy",
    "dropout_backward_numpy",
    "check_probability",
    "is_dropout_module",
    "restored_modes",
]


def check_probability(p, name: str = "p") -> float:
    """Return ``p`` as a float after checking it is a real number in [0, 1] (the drop probability).

    Raises ``TypeError`` for non-numbers (including ``bool``) and ``ValueError`` for NaN or values
    outside [0, 1]; both messages name the value received.
    """
    if isinstance(p, Tensor) and p.numel() == 1 and not p.is_complex():
        p = p.item()
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(
            f"dropout probability {name} must be a real number in [0, 1], got {p!r} ({type(p).__name__})"
        )
    value = float(p)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"dropout probability {name} must be in [0, 1] (the chance of dropping), got {p!r}")
    return value


def _check_tensor(x) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"input must be a floating-point tensor, got dtype {x.dtype}")


def _keep_mask(shape, p: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Bernoulli(1 - p) mask of ``shape``, already scaled by 1 / (1 - p), dtype/device of ``like``."""
    mask = torch.empty(shape, dtype=like.dtype, device=like.device)
    mask.bernoulli_(1.0 - p, generator=generator)
    return mask.mul_(1.0 / (1.0 - p))


def _masked(x: Tensor, p: float, mask_shape, training: bool, generator) -> Tensor:
    """Shared body of the Bernoulli variants: identity, zeros, or ``x * scaled_mask``."""
    _check_tensor(x)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0  # zeros with a zero gradient; no division by 1 - p = 0
    return x * _keep_mask(mask_shape, p, x, generator)


def dropout(
    x: Tensor, p: float = 0.5, training: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    r"""Inverted dropout: zero each element with probability ``p`` (the drop probability), rescale the rest.

    .. math::
        y_i = \frac{m_i}{1 - p} x_i, \qquad m_i \sim \mathrm{Bernoulli}(1 - p)\ \text{i.i.d.}

    so :math:`\mathbb{E}[y_i] = x_i` and :math:`\mathrm{Var}[y_i] = x_i^2 \, p / (1 - p)`.
    The gradient flows through the same mask: :math:`\partial y_i / \partial x_i = m_i / (1 - p)`.

    Args:
        x: input tensor of any shape (floating point).
        p: probability of dropping an element, in [0, 1].
        training: apply dropout if True; return ``x`` unchanged if False.
        generator: optional ``torch.Generator`` for the mask.

    Shape:
        Output has the shape of ``x``.

    Examples:
        >>> dropout(torch.ones(2, 4), p=0.5, generator=torch.Generator().manual_seed(0))  # kept: 1/(1-p) = 2
        tensor([[0., 0., 2., 0.],
                [0., 0., 2., 2.]])
        >>> dropout(torch.ones(3), p=0.5, training=False)  # eval: the identity
        tensor([1., 1., 1.])
        >>> dropout(torch.ones(3), p=1.0)  # p = 1 drops everything: zeros, not NaN
        tensor([0., 0., 0.])
    """
    p = check_probability(p)
    _check_tensor(x)
    return _masked(x, p, x.shape, training, generator)


class _DropoutBase(nn.Module):
    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.p = check_probability(p)
        self.generator = generator

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout(_DropoutBase):
    r"""Inverted dropout as a module: drops each element with probability ``p`` in training mode.

    .. math::
        y = \frac{m \odot x}{1 - p}, \qquad m_i \sim \mathrm{Bernoulli}(1 - p)

    In eval mode (``module.eval()``) it is the identity.

    Args:
        p: probability of dropping an element, in [0, 1]. Default: 0.5.
        generator: optional ``torch.Generator`` for the masks.

    Shape:
        Input: any shape. Output: same shape as the input.

    Examples:
        >>> layer = Dropout(p=0.2)
        >>> y = layer(torch.randn(8, 16))
        >>> _ = layer.eval(); torch.equal(layer(y), y)
        True
    """

    def forward(self, x: Tensor) -> Tensor:
        return _masked(x, self.p, x.shape, self.training, self.generator)


class SpatialDropout(_DropoutBase):
    r"""Channel dropout: drops whole feature maps with probability ``p`` (Tompson et al. 2015).

    Neighbouring pixels of a conv feature map are strongly correlated, so element-wise dropout is
    easily undone by the next convolution. One mask value per (sample, channel) drops a whole map:

    .. math::
        y_{n,c,\dots} = \frac{m_{n,c}}{1 - p} x_{n,c,\dots}, \qquad m_{n,c} \sim \mathrm{Bernoulli}(1 - p)

    Args:
        p: probability of dropping a channel, in [0, 1]. Default: 0.5.
        generator: optional ``torch.Generator`` for the masks.

    Shape:
        Input: :math:`(N, C, *)` with at least 2 dimensions (e.g. :math:`(N, C, H, W)`). Output: same.

    Examples:
        >>> y = SpatialDropout(p=0.5)(torch.ones(2, 8, 5, 5))
        >>> bool(((y == 0).all(dim=(2, 3)) | (y == 2).all(dim=(2, 3))).all())
        True
    """

    def forward(self, x: Tensor) -> Tensor:
        _check_tensor(x)
        if x.dim() < 2:
            raise ValueError(f"SpatialDropout expects input of shape (N, C, ...), got shape {tuple(x.shape)}")
        mask_shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
        return _masked(x, self.p, mask_shape, self.training, self.generator)


class DropBlock(_DropoutBase):
    r"""DropBlock: drops square blocks of feature maps; ``p`` is the probability of dropping an activation.

    Element-wise dropout on a conv feature map is easily undone: a dropped activation is still present in
    its neighbours. DropBlock (Ghiasi et al. 2018) samples block *centres* independently per (sample, channel) with rate
    :math:`\gamma`, only where the whole block fits, and grows each centre to a :math:`b \times b` block
    (a max-pool of the centres). With :math:`b` = ``block_size`` and a map of size :math:`H \times W`,

    .. math::
        \gamma = \frac{p}{b^2} \, \frac{H W}{(H - b + 1)(W - b + 1)}, \qquad
        M = 1 - \operatorname{maxpool}_{b \times b}(Z), \quad Z_{n,c,i,j} \sim \mathrm{Bernoulli}(\gamma),

    .. math::
        y = x \odot M \, \frac{\operatorname{numel}(M)}{\sum M},

    so each centre removes about :math:`b^2` activations and a fraction close to :math:`p` is dropped (a
    little less, because neighbouring blocks can overlap). The kept activations are rescaled by the
    measured keep fraction of the whole mask, as in the paper, so the output keeps the input's scale.
    ``block_size = 1`` is element-wise dropout; in eval mode the layer is the identity.

    Args:
        p: probability of dropping an activation, in [0, 1]. Default: 0.1.
        block_size: width :math:`b` of the square blocks, a positive odd int (the block is centred on its
            centre pixel). Must not exceed the feature map's height or width. Default: 3.
        generator: optional ``torch.Generator`` for the block centres.

    Shape:
        Input: :math:`(N, C, H, W)` with :math:`H, W \geq` ``block_size``. Output: same shape.

    Examples:
        >>> layer = DropBlock(p=0.3, block_size=3, generator=torch.Generator().manual_seed(0))
        >>> y = layer(torch.ones(2, 4, 12, 12))
        >>> y.shape
        torch.Size([2, 4, 12, 12])
        >>> 0.15 < (y == 0).float().mean().item() < 0.35
        True
        >>> _ = layer.eval(); torch.equal(layer(y), y)
        True
    """

    def __init__(self, p: float = 0.1, block_size: int = 3, generator: torch.Generator | None = None) -> None:
        super().__init__(p, generator)
        odd = isinstance(block_size, int) and not isinstance(block_size, bool) and block_size % 2 == 1
        if not odd or block_size < 1:
            raise ValueError(f"block_size must be a positive odd int, got {block_size!r}")
        self.block_size = block_size

    def gamma(self, height: int, width: int) -> float:
        """Rate of block centres that drops a fraction ``p`` of an ``height x width`` map (capped at 1)."""
        b = self.block_size
        return min(1.0, self.p / b**2 * (height * width) / ((height - b + 1) * (width - b + 1)))

    def mask(self, shape, like: Tensor | None = None) -> Tensor:
        """A keep-mask of ``shape`` (N, C, H, W): 0 inside the dropped blocks, 1 elsewhere (not rescaled)."""
        n, c, h, w = shape
        b = self.block_size
        if b > min(h, w):
            raise ValueError(f"block_size={b} is larger than the feature map ({h} x {w})")
        dtype = like.dtype if like is not None else torch.get_default_dtype()
        device = like.device if like is not None else None
        r = b // 2
        centres = torch.zeros(shape, dtype=dtype, device=device)
        sampled = torch.empty((n, c, h - b + 1, w - b + 1), dtype=dtype, device=device)
        centres[:, :, r : h - r, r : w - r] = sampled.bernoulli_(self.gamma(h, w), generator=self.generator)
        return 1.0 - nn.functional.max_pool2d(centres, b, stride=1, padding=r)  # grow centres to blocks

    def forward(self, x: Tensor) -> Tensor:
        _check_tensor(x)
        if x.dim() != 4:
            raise ValueError(f"DropBlock expects input of shape (N, C, H, W), got shape {tuple(x.shape)}")
        if self.block_size > min(x.shape[2], x.shape[3]):
            raise ValueError(
                f"block_size={self.block_size} is larger than the feature map ({x.shape[2]} x {x.shape[3]})"
            )
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        keep = self.mask(x.shape, like=x)
        return x * keep * (keep.numel() / keep.sum().clamp(min=1.0))

    def extra_repr(self) -> str:
        return f"p={self.p}, block_size={self.block_size}"


class LockedDropout(_DropoutBase):
    r"""Variational ("locked") dropout: one mask per sequence, shared over every time step.

    Why one mask per sequence (Gal & Ghahramani 2016): with a fresh mask at every step, a unit that
    carries a memory is kept at all of :math:`k` consecutive steps only with probability
    :math:`(1 - p)^k`, so a memory held in one unit is wiped out again and again during training. A locked
    mask removes the same units for the whole sequence: the network sees one thinner recurrent network
    per sequence (in the variational view, one sample of the weights per sequence) and can keep its
    memory in the units that survive:

    .. math::
        y_{n,t,h} = \frac{m_{n,h}}{1 - p} x_{n,t,h}, \qquad m_{n,h} \sim \mathrm{Bernoulli}(1 - p)

    Args:
        p: probability of dropping a feature (for the whole sequence), in [0, 1]. Default: 0.5.
        batch_first: input is :math:`(N, T, H)` if True (default), :math:`(T, N, H)` if False.
        generator: optional ``torch.Generator`` for the masks.

    Shape:
        Input: :math:`(N, T, H)` (or :math:`(T, N, H)`; more trailing feature dims are allowed).
        Output: same shape.

    Examples:
        >>> y = LockedDropout(p=0.5)(torch.ones(2, 7, 4))
        >>> bool((y == y[:, :1, :]).all())  # every time step has the same mask
        True
    """

    def __init__(self, p: float = 0.5, batch_first: bool = True, generator: torch.Generator | None = None):
        super().__init__(p, generator)
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first must be a bool, got {batch_first!r}")
        self.batch_first = batch_first

    def forward(self, x: Tensor) -> Tensor:
        _check_tensor(x)
        if x.dim() < 3:
            layout = "(N, T, H)" if self.batch_first else "(T, N, H)"
            raise ValueError(f"LockedDropout expects input of shape {layout}, got shape {tuple(x.shape)}")
        time_dim = 1 if self.batch_first else 0
        mask_shape = list(x.shape)
        mask_shape[time_dim] = 1  # one mask for all time steps
        return _masked(x, self.p, mask_shape, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}, batch_first={self.batch_first}"


class GaussianDropout(_DropoutBase):
    r"""Multiplicative Gaussian noise with the mean and variance of dropout at drop probability ``p``.

    .. math::
        y = x \odot \varepsilon, \qquad \varepsilon_i \sim \mathcal{N}\!\left(1, \frac{p}{1 - p}\right)

    matching inverted Bernoulli dropout's first two moments (Srivastava et al. 2014, section 10).
    ``p == 1`` (infinite variance) is defined as returning zeros, like the other layers.

    Args:
        p: the equivalent drop probability, in [0, 1]. Default: 0.5.
        generator: optional ``torch.Generator`` for the noise.

    Shape:
        Input: any shape. Output: same shape.

    Examples:
        >>> y = GaussianDropout(p=0.5)(torch.ones(10000))
        >>> abs(y.mean().item() - 1.0) < 0.05
        True
    """

    def forward(self, x: Tensor) -> Tensor:
        _check_tensor(x)
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        std = math.sqrt(self.p / (1.0 - self.p))
        noise = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=self.generator)
        return x * noise.mul_(std).add_(1.0)


class DropPath(_DropoutBase):
    r"""Per-sample drop path: drop each sample's residual branch with probability ``p``, rescale the rest.

    Used on a residual branch, ``x + DropPath(p)(f(x))`` removes ``f`` for a random subset of the samples of
    the batch, each sample deciding independently, with inverted scaling (nothing changes at test time):

    .. math::
        y_{n,\dots} = \frac{m_n}{1 - p} x_{n,\dots}, \qquad m_n \sim \mathrm{Bernoulli}(1 - p)

    This is the later, per-sample variant of stochastic depth used in vision-Transformer training (the
    ``drop_path`` of the timm library, DeiT, ConvNeXt); the name comes from FractalNet (Larsson et al.
    2017). It regularises like stochastic depth but saves no compute: the branch is still computed for
    the whole batch. Huang et al.'s original stochastic depth (2016) skips a block for the whole
    mini-batch and rescales at test time instead: see :class:`StochasticDepth`.

    Args:
        p: probability of dropping a sample's path, in [0, 1]. Default: 0.5.
        generator: optional ``torch.Generator`` for the masks.

    Shape:
        Input: :math:`(N, *)`. Output: same shape.

    Examples:
        >>> y = DropPath(p=0.5)(torch.ones(6, 3, 4))
        >>> bool(((y == 0).all(dim=(1, 2)) | (y == 2).all(dim=(1, 2))).all())
        True
    """

    def forward(self, x: Tensor) -> Tensor:
        _check_tensor(x)
        if x.dim() < 1:
            raise ValueError("DropPath expects input of shape (N, ...), got a 0-d tensor")
        mask_shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return _masked(x, self.p, mask_shape, self.training, self.generator)


def stochastic_depth_rates(n_blocks: int, p_last: float) -> list[float]:
    r"""Huang et al.'s linear decay rule as drop probabilities: block ``l`` of ``L`` drops with ``p_last * l / L``.

    Survival probabilities :math:`1 - \frac{l}{L}(1 - p_L)` in the paper's notation, with :math:`p_L`
    the survival of the last block (they use 0.5); the first blocks, which compute features every later
    block needs, are dropped least. The expected number of blocks run is :math:`L - p_{last}(L + 1)/2`.

    Examples:
        >>> stochastic_depth_rates(4, 0.5)
        [0.125, 0.25, 0.375, 0.5]
    """
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 1:
        raise ValueError(f"n_blocks must be a positive int, got {n_blocks!r}")
    p_last = check_probability(p_last, name="p_last")
    return [p_last * (k + 1) / n_blocks for k in range(n_blocks)]


class StochasticDepth(nn.Module):
    r"""Stochastic depth (Huang et al. 2016): a residual block whose branch is skipped for the WHOLE
    mini-batch with probability ``p`` (the drop probability), and scaled by its survival rate at test time.

    .. math::
        \text{train: } y = x + b\, f(x),\quad b \sim \mathrm{Bernoulli}(1 - p) \text{ once per forward call};
        \qquad \text{test: } y = x + (1 - p)\, f(x)

    When :math:`b = 0` the branch is not computed at all (no forward, no backward, no gradient for its
    weights), so a network of such blocks trains faster: with the linear decay rule
    (:func:`stochastic_depth_rates`, last block ``p = 0.5``) about a quarter of the blocks are skipped per
    step. It is a training-time device, not one of the dropout modules that MC-dropout mode switches on
    (there it stays in eval mode and scales the branch). Compare :class:`DropPath`: one decision per
    sample, inverted scaling, no compute saved.

    Args:
        branch: the residual branch :math:`f`, a module whose output has the shape of its input.
        p: probability of skipping the branch for a mini-batch, in [0, 1]. Default: 0.5.
        generator: optional ``torch.Generator`` for the decisions.

    Shape:
        Input: any shape accepted by ``branch``. Output: same shape.

    Examples:
        >>> block = StochasticDepth(nn.Linear(4, 4), p=0.5)
        >>> x = torch.ones(3, 4)
        >>> _ = block.eval(); torch.allclose(block(x), x + 0.5 * block.branch(x))
        True
    """

    def __init__(self, branch: nn.Module, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(branch, nn.Module):
            raise TypeError(f"branch must be a torch.nn.Module, got {type(branch).__name__}")
        self.branch = branch
        self.p = check_probability(p)
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        _check_tensor(x)
        if self.p == 1.0:
            return x  # never run in training; scaled by 1 - p = 0 at test time
        if not self.training:
            return x + (1.0 - self.p) * self.branch(x) if self.p > 0 else x + self.branch(x)
        if self.p > 0:
            keep = torch.empty((), dtype=torch.float32).bernoulli_(1.0 - self.p, generator=self.generator)
            if not keep:
                return x  # the whole mini-batch skips this block: no compute spent on the branch
        return x + self.branch(x)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropConnectLinear(nn.Linear):
    r"""A linear layer that drops *weights*, not activations (DropConnect, Wan et al. 2013); ``p`` is the
    probability of DROPPING a weight.

    Training, ``per_example=True`` (the default, as in Wan et al.): every example :math:`n` of the batch
    gets its own mask :math:`M^{(n)}` over the weight matrix, with inverted scaling so that
    :math:`\mathbb{E}[y_n] = W x_n + b`:

    .. math::
        y_n = \left(\frac{M^{(n)} \odot W}{1 - p}\right) x_n + b, \qquad
        M^{(n)}_{ij} \sim \mathrm{Bernoulli}(1 - p)

    (the bias is never dropped). This materialises one masked weight matrix per example: memory
    :math:`N \cdot H_{out} \cdot H_{in}`. ``per_example=False`` is a cheaper simplification: ONE mask for
    the whole batch (like AWD-LSTM's weight drop); every example of a batch then shares the same thinned
    layer, so the copies of a repeated batch are not independent MC samples
    (``shares_mask_across_batch`` is True and :func:`dropout_course.uncertainty.mc_predict` refuses it).

    Inference: eval mode uses the mean weights :math:`W` (``y = W x + b``, what Wan et al. call *mean
    inference*). Their own inference rule is :meth:`moment_matched`: the pre-activation :math:`u` of each
    unit is a sum of many independent terms, approximated by a Gaussian with the same mean and variance,

    .. math::
        u \sim \mathcal{N}\Big(W x + b,\ \frac{p}{1 - p}\,(W \odot W)(x \odot x)\Big), \qquad
        r = \frac{1}{S}\sum_{s=1}^{S} a(u_s),

    and the activation :math:`a` is averaged over :math:`S` draws (the inverted-scaling form of their
    :math:`\mathcal{N}(p W v, p(1-p)(W \odot W)(v \odot v))`, where their :math:`p` is the keep probability).

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        p: probability of dropping a weight, in [0, 1]. Default: 0.5.
        bias: learn an additive bias. Default: True.
        generator: optional ``torch.Generator`` for the masks.
        per_example: one weight mask per example (True, Wan et al.) or one per batch (False).

    Shape:
        Input: :math:`(*, H_{in})`. Output: :math:`(*, H_{out})`.

    Examples:
        >>> layer = DropConnectLinear(16, 4, p=0.3)
        >>> layer(torch.randn(8, 16)).shape
        torch.Size([8, 4])
        >>> layer.moment_matched(torch.randn(8, 16), torch.relu, samples=100).shape
        torch.Size([8, 4])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        p: float = 0.5,
        bias: bool = True,
        generator: torch.Generator | None = None,
        per_example: bool = True,
    ) -> None:
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(per_example, bool):
            raise TypeError(f"per_example must be a bool, got {per_example!r}")
        super().__init__(in_features, out_features, bias=bias)
        self.p = check_probability(p)
        self.generator = generator
        self.per_example = per_example

    @property
    def shares_mask_across_batch(self) -> bool:
        """True when one weight mask serves the whole batch (``per_example=False``)."""
        return not self.per_example

    def forward(self, x: Tensor) -> Tensor:
        _check_tensor(x)
        if not self.per_example or not self.training or self.p in (0.0, 1.0):
            weight = _masked(self.weight, self.p, self.weight.shape, self.training, self.generator)
            return nn.functional.linear(x, weight, self.bias)
        flat = x.reshape(-1, self.in_features)  # (B, H_in)
        masks = _keep_mask((len(flat), *self.weight.shape), self.p, self.weight, self.generator)
        # (B, H_out, H_in) @ (B, H_in, 1) -> (B, H_out)
        out = torch.bmm(masks * self.weight, flat.unsqueeze(-1)).squeeze(-1)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def moment_matched(
        self,
        x: Tensor,
        activation=torch.relu,
        samples: int = 100,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Wan et al.'s inference: :math:`\frac{1}{S}\sum_s a(u_s)`, ``u`` Gaussian moment-matched to DropConnect.

        Args:
            x: input (*, H_in).
            activation: the function applied after this layer (its output is what gets averaged).
            samples: number of Gaussian draws :math:`S`.
            generator: optional ``torch.Generator`` for the draws.

        Returns the averaged activation, shape (*, H_out). With ``p = 0`` it is ``activation(W x + b)``.
        """
        _check_tensor(x)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be a positive int, got {samples!r}")
        if not callable(activation):
            raise TypeError(f"activation must be callable, got {type(activation).__name__}")
        mean = nn.functional.linear(x, self.weight, self.bias)
        if self.p == 0.0:
            return activation(mean)
        if self.p == 1.0:  # every weight dropped: only the bias is left
            return activation(torch.zeros_like(mean) + (self.bias if self.bias is not None else 0.0))
        var = self.p / (1.0 - self.p) * nn.functional.linear(x * x, self.weight * self.weight)
        noise = torch.randn((samples, *mean.shape), dtype=mean.dtype, device=mean.device, generator=generator)
        return activation(mean + var.sqrt() * noise).mean(0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}, per_example={self.per_example}"


# --------------------------------------------------------------------------- NumPy reference pair


def dropout_forward_numpy(
    x: np.ndarray, p: float, mode: str = "train", rng: np.random.Generator | int | None = None
) -> tuple[np.ndarray, dict]:
    r"""Inverted dropout forward pass in NumPy; ``p`` is the probability of dropping a unit.

    .. math::
        \text{train: } y = x \odot m / (1 - p),\ m_i \sim \mathrm{Bernoulli}(1 - p); \qquad
        \text{test: } y = x

    Args:
        x: input array of any shape.
        p: probability of dropping an element, in [0, 1].
        mode: ``"train"`` or ``"test"``.
        rng: a ``numpy.random.Generator`` (or an int seed, or None for a fresh one).

    Returns:
        ``(out, cache)``: ``out`` has the shape of ``x``; ``cache`` holds what the backward pass needs
        (``"mask"``, the scaled mask, ``None`` in test mode; ``"p"``; ``"mode"``).
    """
    p = check_probability(p)
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    x = np.asarray(x)
    if mode == "test" or p == 0.0:
        return x.copy(), {"mask": None, "p": p, "mode": mode}
    if not isinstance(rng, np.random.Generator):
        if rng is not None and (isinstance(rng, bool) or not isinstance(rng, (int, np.integer))):
            raise TypeError(
                f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}"
            )
        rng = np.random.default_rng(rng)
    dtype = np.dtype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)  # p == 1: all-zero mask, no division by zero
    mask = (rng.random(x.shape) >= p).astype(dtype) * dtype.type(scale)
    return x * mask, {"mask": mask, "p": p, "mode": mode}


def dropout_backward_numpy(dout: np.ndarray, cache: dict) -> np.ndarray:
    r"""Backward pass of :func:`dropout_forward_numpy`: :math:`\partial L/\partial x = \partial L/\partial y \odot m / (1-p)`.

    Args:
        dout: upstream gradient, shape of the forward output.
        cache: the ``cache`` returned by the forward pass.

    Returns:
        ``dx`` with the shape of ``dout``.
    """
    if not isinstance(cache, dict) or "mask" not in cache:
        raise TypeError("cache must be the dict returned by dropout_forward_numpy")
    dout = np.asarray(dout)
    mask = cache["mask"]
    if mask is None:
        return dout.copy()
    if dout.shape != mask.shape:
        raise ValueError(f"dout has shape {dout.shape}, expected {mask.shape} (the forward output's shape)")
    return dout * mask


def is_dropout_module(module: nn.Module) -> bool:
    """True if ``module`` is a dropout module: one of this course's layers or one of PyTorch's own.

    Counts the course's dropout family (every subclass of its dropout base, and ``DropConnectLinear``)
    and PyTorch's ``nn.Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout`` and ``FeatureAlphaDropout``.
    This is the one test the package uses, e.g. to switch only dropout on for MC dropout.

    >>> is_dropout_module(Dropout(0.1)), is_dropout_module(nn.Dropout(0.1)), is_dropout_module(nn.ReLU())
    (True, True, False)
    """
    return isinstance(module, (_DropoutBase, DropConnectLinear, nn.modules.dropout._DropoutNd))


@contextlib.contextmanager
def restored_modes(model: nn.Module):
    """Save the train/eval mode of ``model`` and of every submodule; restore each one when the block ends.

    The block may switch modes freely (``model.eval()``, dropout alone back to train, ...); afterwards
    every module is in the mode it had before, even if the block raised.

    >>> net = nn.Sequential(nn.Linear(2, 2), Dropout(0.5)).train()
    >>> with restored_modes(net):
    ...     _ = net.eval()
    ...     net[1].training
    False
    >>> [m.training for m in net.modules()]
    [True, True, True]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
