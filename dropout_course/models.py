"""The course's models, each with a typed config dataclass and every dropout site named.

* :class:`MLP`             input dropout and hidden dropout (Hinton et al. 2012).
* :class:`ConvNet`         dropout on conv feature maps (element-wise or spatial) and before the classifier.
* :class:`CharRNN`         an LSTM (or tanh RNN) classifier with embedding, input, recurrent, between-layer
                           and output dropout, and weight drop on the hidden-to-hidden matrix (AWD-LSTM).
* :class:`TinyTransformer` embedding and residual dropout (Vaswani et al. 2017), attention dropout and
                           per-sample drop path (later additions).
* :class:`QNetwork`        an MLP Q-function with dropout and optional layer norm (DroQ).

All dropout probabilities ``p`` are drop probabilities; 0 disables a site.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .layers import Dropout, DropPath, LockedDropout, SpatialDropout, check_probability

__all__ = [
    "MLPConfig",
    "MLP",
    "ConvNetConfig",
    "ConvNet",
    "CharRNNConfig",
    "CharRNN",
    "WeightDrop",
    "TransformerConfig",
    "TinyTransformer",
    "QNetworkConfig",
    "QNetwork",
]


def _check_config(config, probability_fields: tuple[str, ...]) -> None:
    for name in probability_fields:
        check_probability(getattr(config, name), name=f"{type(config).__name__}.{name}")


# --------------------------------------------------------------------------- MLP


@dataclass
class MLPConfig:
    in_features: int = 784
    hidden: tuple[int, ...] = (256, 256)
    n_classes: int = 10
    input_dropout: float = 0.0  # on the input features (Hinton et al. used 0.2)
    hidden_dropout: float = 0.0  # after each hidden activation (usually 0.5)


class MLP(nn.Module):
    """Fully connected ReLU network: ``x -> drop_in -> [Linear -> ReLU -> drop_hidden] * L -> Linear``.

    Shape: input (N, in_features) (or (N, C, H, W), flattened); output logits (N, n_classes).
    """

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        _check_config(config, ("input_dropout", "hidden_dropout"))
        self.config = config
        self.input_dropout = Dropout(config.input_dropout)
        layers: list[nn.Module] = []
        width = config.in_features
        for size in config.hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), Dropout(config.hidden_dropout)]
            width = size
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(width, config.n_classes)

    def features(self, x: Tensor) -> list[Tensor]:
        """Each hidden layer's activations (after ReLU, before dropout), for activation statistics."""
        x = self.input_dropout(x.flatten(1))
        out = []
        for module in self.hidden:
            x = module(x)
            if isinstance(module, nn.ReLU):
                out.append(x)
        return out

    def chain(self) -> list[nn.Module]:
        """The forward pass as modules applied in order (used to share work across MC-dropout samples)."""
        return [nn.Flatten(), self.input_dropout, *self.hidden, self.head]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.hidden(self.input_dropout(x.flatten(1))))


# --------------------------------------------------------------------------- ConvNet


@dataclass
class ConvNetConfig:
    in_channels: int = 1
    image_size: int = 28
    channels: tuple[int, ...] = (16, 32)
    fc_hidden: int = 128
    n_classes: int = 10
    conv_dropout: float = 0.0  # on each conv block's feature maps
    conv_dropout_kind: Literal["element", "spatial"] = "spatial"
    fc_dropout: float = 0.0  # before the classifier's layers


class ConvNet(nn.Module):
    """Conv blocks ``Conv3x3 -> ReLU -> MaxPool2 -> conv_dropout`` then ``fc_dropout -> Linear -> ReLU ->
    fc_dropout -> Linear``.

    Shape: input (N, C, H, W); output logits (N, n_classes).
    """

    def __init__(self, config: ConvNetConfig) -> None:
        super().__init__()
        _check_config(config, ("conv_dropout", "fc_dropout"))
        if config.conv_dropout_kind not in ("element", "spatial"):
            raise ValueError(
                f"conv_dropout_kind must be 'element' or 'spatial', got {config.conv_dropout_kind!r}"
            )
        self.config = config
        blocks: list[nn.Module] = []
        channels, size = config.in_channels, config.image_size
        map_dropout = SpatialDropout if config.conv_dropout_kind == "spatial" else Dropout
        for out_channels in config.channels:
            blocks += [
                nn.Conv2d(channels, out_channels, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                map_dropout(config.conv_dropout),
            ]
            channels, size = out_channels, size // 2
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            Dropout(config.fc_dropout),
            nn.Linear(channels * size * size, config.fc_hidden),
            nn.ReLU(),
            Dropout(config.fc_dropout),
            nn.Linear(config.fc_hidden, config.n_classes),
        )

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """Each block's maps after ReLU (before pooling and dropout): list of (N, C_k, H_k, W_k)."""
        maps = []
        for module in self.features:
            x = module(x)
            if isinstance(module, nn.ReLU):
                maps.append(x)
        return maps

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


# --------------------------------------------------------------------------- CharRNN


@dataclass
class CharRNNConfig:
    vocab_size: int
    n_classes: int
    embed_dim: int = 32
    hidden_size: int = 64
    num_layers: int = 1
    embedding_dropout: float = 0.0  # drops whole characters (token types) of a sequence, per sequence
    input_dropout: float = 0.0  # on the embeddings fed to the first recurrent layer
    between_dropout: float = 0.0  # between stacked recurrent layers
    output_dropout: float = 0.0  # on the last layer's outputs, before the classifier
    recurrent_dropout: float = 0.0  # on the hidden state h_{t-1} fed back into the recurrence
    recurrent_mask: Literal["locked", "per_step"] = "locked"  # one mask per sequence, or a fresh one per step
    locked: bool = False  # non-recurrent sites: one mask per sequence (variational) or per time step
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights, one mask per batch
    cell: Literal["lstm", "tanh"] = "lstm"  # LSTM, or a plain tanh RNN whose only memory is h


class WeightDrop(Dropout):
    r"""DropConnect on a weight matrix (AWD-LSTM's weight drop): drops each weight with probability ``p``.

    ``WeightDrop(p)(W)`` returns :math:`M \odot W / (1 - p)` with :math:`M_{ij} \sim \mathrm{Bernoulli}(1-p)`;
    one mask per call, so every sequence and every time step of a forward pass share it. It is a
    :class:`~dropout_course.layers.Dropout` applied to the weight (same generator, zeros at ``p = 1``,
    identity in eval mode); ``shares_mask_across_batch`` tells MC-dropout code that the copies of a
    repeated batch would not get independent masks.

    Shape: any weight shape; output the same.
    """

    @property
    def shares_mask_across_batch(self) -> bool:
        """True when it drops anything: one mask for the whole batch (MC code must not repeat the batch)."""
        return self.p > 0


class CharRNN(nn.Module):
    r"""Character-level recurrent sequence classifier (LSTM or tanh RNN) with every dropout site of the RNN
    literature, each a dropout module of :mod:`dropout_course.layers` (seeded by its ``generator``,
    switched on by MC-dropout mode, zeros at ``p = 1``).

    Sites: ``embedding_dropout`` (Gal & Ghahramani's word dropout: a dropped character type is zeroed
    everywhere in its sequence; one mask per sequence), ``input_dropout`` / ``between_dropout`` /
    ``output_dropout`` (non-recurrent, Zaremba et al. 2014, locked over time if ``locked``),
    ``recurrent_dropout`` on :math:`h_{t-1}` (``recurrent_mask="locked"``: one mask per sequence, the
    variational RNN; ``"per_step"``: the naive fresh mask per step), and ``weight_drop`` on :math:`W_{hh}`
    (AWD-LSTM, one mask per batch).

    With ``cell="lstm"``:

    .. math::
        (i, f, g, o) = W_{ih} x_t + W_{hh} (m \odot h_{t-1}) + b, \quad
        c_t = \sigma(f) c_{t-1} + \sigma(i) \tanh(g), \quad h_t = \sigma(o) \tanh(c_t)

    (the cell state :math:`c` carries memory past the mask); with ``cell="tanh"``
    :math:`h_t = \tanh(W_{ih} x_t + W_{hh} (m \odot h_{t-1}) + b)`, so every memory passes the mask.
    The recurrence is unrolled step by step in Python only while a recurrent mask is active; otherwise
    (no recurrent dropout, or eval mode) PyTorch's fused kernel runs the same equations, with the
    weight-dropped :math:`W_{hh}` if any.

    Shape: input (N, T) int64 character codes right-padded with 0; output logits (N, n_classes),
    read from the last layer's state at each sequence's last real character.
    """

    def __init__(self, config: CharRNNConfig) -> None:
        super().__init__()
        _check_config(
            config,
            (
                "embedding_dropout",
                "input_dropout",
                "between_dropout",
                "output_dropout",
                "recurrent_dropout",
                "weight_drop",
            ),
        )
        if config.recurrent_mask not in ("locked", "per_step"):
            raise ValueError(f"recurrent_mask must be 'locked' or 'per_step', got {config.recurrent_mask!r}")
        if config.cell not in ("lstm", "tanh"):
            raise ValueError(f"cell must be 'lstm' or 'tanh', got {config.cell!r}")
        self.config = config
        self.n_gates = 4 if config.cell == "lstm" else 1
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=0)
        sizes = [config.embed_dim] + [config.hidden_size] * config.num_layers
        self.input_proj = nn.ModuleList(
            nn.Linear(sizes[k], self.n_gates * config.hidden_size) for k in range(config.num_layers)
        )
        self.hidden_proj = nn.ModuleList(
            nn.Linear(config.hidden_size, self.n_gates * config.hidden_size, bias=False)
            for _ in range(config.num_layers)
        )
        site = LockedDropout if config.locked else Dropout
        self.embedding_dropout = Dropout(config.embedding_dropout)  # draws the (N, vocab) keep mask
        self.input_dropout = site(config.input_dropout)
        self.between_dropout = site(config.between_dropout)
        self.output_dropout = site(config.output_dropout)
        self.recurrent_dropout = Dropout(config.recurrent_dropout)  # draws the (N, H) masks on h_{t-1}
        self.weight_drop = WeightDrop(config.weight_drop)
        self.head = nn.Linear(config.hidden_size, config.n_classes)

    def _embed(self, tokens: Tensor) -> Tensor:
        """Embeddings (N, T, E); a dropped character type is zeroed at every position of its sequence."""
        x = self.embedding(tokens)  # (N, T, E)
        site = self.embedding_dropout
        if not site.training or site.p == 0:
            return x
        keep = site(x.new_ones(len(tokens), self.config.vocab_size))  # (N, V): 0 or 1/(1-p) per type
        return x * keep.gather(1, tokens).unsqueeze(-1)  # (N, T, 1) broadcast over E

    def _recurrence_active(self) -> bool:
        site = self.recurrent_dropout
        return site.training and site.p > 0

    def _run_layer(self, k: int, x: Tensor) -> Tensor:
        """One recurrent layer over the whole sequence: x (N, T, D) -> outputs (N, T, H)."""
        n, steps, _ = x.shape
        hidden = self.config.hidden_size
        w_hh = self.weight_drop(self.hidden_proj[k].weight)  # (G*H, H), one mask for the whole batch
        proj = self.input_proj[k]
        if not self._recurrence_active():  # no mask inside the recurrence: the fused kernel
            h0 = x.new_zeros(1, n, hidden)
            params = [proj.weight, w_hh, proj.bias, torch.zeros_like(proj.bias)]
            if self.config.cell == "lstm":
                out, _, _ = torch.lstm(x, (h0, h0), params, True, 1, 0.0, self.training, False, True)
            else:
                out, _ = torch.rnn_tanh(x, h0, params, True, 1, 0.0, self.training, False, True)
            return out
        gates_x = proj(x).transpose(0, 1).contiguous()  # (T, N, G*H), all time steps at once
        w_t = w_hh.t()  # (H, G*H)
        ones = x.new_ones(n, hidden)
        locked = self.config.recurrent_mask == "locked"
        mask = self.recurrent_dropout(ones) if locked else None  # (N, H), the same at every step
        h = x.new_zeros(n, hidden)
        c = x.new_zeros(n, hidden)
        outputs = []
        for t in range(steps):
            m = mask if locked else self.recurrent_dropout(ones)  # fresh (N, H) mask per step
            pre = torch.addmm(gates_x[t], h * m, w_t)  # (N, G*H)
            if self.config.cell == "lstm":
                i, f, g, o = pre.chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                h = torch.tanh(pre)
            outputs.append(h)
        return torch.stack(outputs, dim=1)  # (N, T, H)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dtype != torch.int64 or tokens.dim() != 2:
            raise ValueError(
                f"CharRNN expects (N, T) int64 character codes, got {tuple(tokens.shape)} {tokens.dtype}"
            )
        lengths = (tokens != 0).sum(dim=1).clamp(min=1)  # (N,)
        tokens = tokens[:, : int(lengths.max())]  # trailing all-padding columns never reach the readout
        x = self.input_dropout(self._embed(tokens))  # (N, T, E)
        for k in range(self.config.num_layers):
            if k > 0:
                x = self.between_dropout(x)
            x = self._run_layer(k, x)  # (N, T, H)
        x = self.output_dropout(x)
        last = x[torch.arange(len(tokens), device=tokens.device), lengths - 1]  # (N, H)
        return self.head(last)


# --------------------------------------------------------------------------- TinyTransformer


@dataclass
class TransformerConfig:
    vocab_size: int
    n_classes: int
    max_len: int = 32
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128
    embedding_dropout: float = 0.0  # on token + position embeddings
    attention_dropout: float = 0.0  # on the attention weights (after softmax)
    residual_dropout: float = 0.0  # on each sub-layer's output, before it is added to the residual
    drop_path: float = 0.0  # per-sample drop path on each residual branch (rate of the last block)


class SelfAttention(nn.Module):
    """Multi-head self-attention with dropout on the attention weights; keeps the last weights seen."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if config.d_model % config.n_heads:
            raise ValueError(f"d_model={config.d_model} must be divisible by n_heads={config.n_heads}")
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.attn_dropout = Dropout(config.attention_dropout)
        self.last_attention: Tensor | None = None

    def forward(self, x: Tensor, pad_mask: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        # (N, T, D) -> (N, heads, T, D/heads)
        q, k, v = (z.view(n, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.n_heads)  # (N, heads, T, T)
        scores = scores.masked_fill(pad_mask[:, None, None, :], float("-inf"))
        weights = self.attn_dropout(torch.softmax(scores, dim=-1))
        self.last_attention = weights.detach()
        out = (weights @ v).transpose(1, 2).reshape(n, t, d)  # (N, T, D)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm Transformer block: ``x + drop_path(resid_dropout(attn(ln(x))))``, then the same for the MLP."""

    def __init__(self, config: TransformerConfig, drop_path: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff), nn.GELU(), nn.Linear(config.d_ff, config.d_model)
        )
        self.resid_dropout = Dropout(config.residual_dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, pad_mask: Tensor) -> Tensor:
        x = x + self.drop_path(self.resid_dropout(self.attn(self.ln1(x), pad_mask)))
        return x + self.drop_path(self.resid_dropout(self.mlp(self.ln2(x))))


class TinyTransformer(nn.Module):
    """A small Transformer encoder classifier (mean-pooled over real tokens) with named dropout sites.

    ``drop_path`` is per-sample drop path (:class:`~dropout_course.layers.DropPath`: one decision per
    example, inverted scaling; the vision-Transformer variant of stochastic depth, which saves no compute).
    Its rate grows linearly with depth, as in Huang et al.'s linear decay rule: block ``l`` of ``L`` uses
    ``drop_path * (l + 1) / L``. For Huang et al.'s original, batch-level stochastic depth see
    :class:`~dropout_course.layers.StochasticDepth`.

    Shape: input (N, T) int64 tokens right-padded with 0, T <= max_len; output logits (N, n_classes).
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        _check_config(config, ("embedding_dropout", "attention_dropout", "residual_dropout", "drop_path"))
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, config.d_model)
        self.embedding_dropout = Dropout(config.embedding_dropout)
        self.blocks = nn.ModuleList(
            Block(config, config.drop_path * (k + 1) / config.n_layers) for k in range(config.n_layers)
        )
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.n_classes)

    def attention_maps(self) -> list[Tensor]:
        """The attention weights of the last forward pass, one (N, heads, T, T) tensor per block."""
        return [b.attn.last_attention for b in self.blocks]

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dtype != torch.int64 or tokens.dim() != 2:
            raise ValueError(
                f"TinyTransformer expects (N, T) int64 tokens, got {tuple(tokens.shape)} {tokens.dtype}"
            )
        n, t = tokens.shape
        if t > self.config.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len={self.config.max_len}")
        pad_mask = tokens == 0  # (N, T)
        pad_mask[:, 0] = False  # an all-padding row would give NaN attention
        positions = torch.arange(t, device=tokens.device)
        x = self.embedding_dropout(
            self.token_embedding(tokens) + self.position_embedding(positions)
        )  # (N, T, D)
        for block in self.blocks:
            x = block(x, pad_mask)
        x = self.ln_f(x)
        keep = (~pad_mask).unsqueeze(-1).to(x.dtype)  # (N, T, 1)
        pooled = (x * keep).sum(1) / keep.sum(1)  # (N, D)
        return self.head(pooled)


# --------------------------------------------------------------------------- QNetwork


@dataclass
class QNetworkConfig:
    obs_dim: int
    n_actions: int
    hidden: tuple[int, ...] = (64, 64)
    dropout: float = 0.0  # after each hidden layer
    layer_norm: bool = False  # DroQ: Linear -> Dropout -> LayerNorm -> ReLU


class QNetwork(nn.Module):
    """MLP Q-function: observation (N, obs_dim) -> action values (N, n_actions).

    Each hidden layer is ``Linear -> Dropout -> [LayerNorm] -> ReLU``; with ``layer_norm=True`` and a
    small ``dropout`` this is the DroQ Q-function (Hiraoka et al. 2022).
    """

    def __init__(self, config: QNetworkConfig) -> None:
        super().__init__()
        _check_config(config, ("dropout",))
        self.config = config
        layers: list[nn.Module] = []
        width = config.obs_dim
        for size in config.hidden:
            layers += [nn.Linear(width, size), Dropout(config.dropout)]
            if config.layer_norm:
                layers.append(nn.LayerNorm(size))
            layers.append(nn.ReLU())
            width = size
        layers.append(nn.Linear(width, config.n_actions))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs)
