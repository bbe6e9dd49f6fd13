"""Models: output shapes, dropout active in train mode and an identity in eval mode, config checks."""

import pytest
import torch

from dropout_course.models import (
    MLP,
    CharRNN,
    CharRNNConfig,
    ConvNet,
    ConvNetConfig,
    MLPConfig,
    QNetwork,
    QNetworkConfig,
    TinyTransformer,
    TransformerConfig,
)

TOKENS = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 2]])


def models_and_inputs():
    return [
        (
            MLP(MLPConfig(in_features=20, hidden=(16,), n_classes=3, input_dropout=0.2, hidden_dropout=0.5)),
            torch.randn(4, 20),
            (4, 3),
        ),
        (
            ConvNet(
                ConvNetConfig(
                    image_size=8, channels=(4,), fc_hidden=8, n_classes=3, conv_dropout=0.3, fc_dropout=0.5
                )
            ),
            torch.randn(4, 1, 8, 8),
            (4, 3),
        ),
        (
            ConvNet(
                ConvNetConfig(
                    image_size=8,
                    channels=(4,),
                    fc_hidden=8,
                    n_classes=3,
                    conv_dropout=0.3,
                    conv_dropout_kind="element",
                )
            ),
            torch.randn(4, 1, 8, 8),
            (4, 3),
        ),
        (
            CharRNN(
                CharRNNConfig(
                    vocab_size=10,
                    n_classes=3,
                    embed_dim=8,
                    hidden_size=8,
                    num_layers=2,
                    embedding_dropout=0.2,
                    input_dropout=0.2,
                    between_dropout=0.2,
                    output_dropout=0.2,
                    recurrent_dropout=0.3,
                    weight_drop=0.3,
                    locked=True,
                )
            ),
            TOKENS,
            (2, 3),
        ),
        (
            CharRNN(
                CharRNNConfig(
                    vocab_size=10,
                    n_classes=3,
                    embed_dim=8,
                    hidden_size=8,
                    recurrent_dropout=0.3,
                    recurrent_mask="per_step",
                )
            ),
            TOKENS,
            (2, 3),
        ),
        (
            TinyTransformer(
                TransformerConfig(
                    vocab_size=10,
                    n_classes=3,
                    max_len=8,
                    d_model=16,
                    n_heads=2,
                    n_layers=2,
                    d_ff=16,
                    embedding_dropout=0.2,
                    attention_dropout=0.2,
                    residual_dropout=0.2,
                    drop_path=0.2,
                )
            ),
            TOKENS,
            (2, 3),
        ),
        (
            QNetwork(QNetworkConfig(obs_dim=4, n_actions=2, hidden=(16,), dropout=0.3, layer_norm=True)),
            torch.randn(4, 4),
            (4, 2),
        ),
    ]


@pytest.mark.parametrize("model,x,shape", models_and_inputs())
def test_shapes_train_stochastic_eval_deterministic(model, x, shape):
    torch.manual_seed(0)
    model.train()
    outs = [model(x) for _ in range(5)]
    assert outs[0].shape == shape
    assert any(not torch.equal(outs[0], o) for o in outs[1:]), "dropout should make train-mode outputs vary"
    model.eval()
    assert torch.equal(model(x), model(x)), "eval mode must be deterministic"


@pytest.mark.parametrize("model,x,shape", models_and_inputs())
def test_without_dropout_train_equals_eval(model, x, shape):
    config = model.config
    for field, value in vars(config).items():
        if isinstance(value, float) and ("dropout" in field or field in ("weight_drop", "drop_path")):
            setattr(config, field, 0.0)
    clean = type(model)(config)
    clean.train()
    a = clean(x)
    clean.eval()
    assert torch.allclose(a, clean(x), atol=1e-6)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"MLPConfig.hidden_dropout must be in \[0, 1\].*got 1.5"):
        MLP(MLPConfig(hidden_dropout=1.5))
    with pytest.raises(ValueError, match="conv_dropout_kind must be 'element' or 'spatial', got 'pixel'"):
        ConvNet(ConvNetConfig(conv_dropout_kind="pixel"))
    with pytest.raises(ValueError, match="recurrent_mask must be 'locked' or 'per_step'"):
        CharRNN(CharRNNConfig(vocab_size=5, n_classes=2, recurrent_mask="sometimes"))
    with pytest.raises(ValueError, match="d_model=10 must be divisible by n_heads=4"):
        TinyTransformer(TransformerConfig(vocab_size=5, n_classes=2, d_model=10, n_heads=4))
    with pytest.raises(ValueError, match="exceeds max_len=4"):
        TinyTransformer(TransformerConfig(vocab_size=10, n_classes=2, max_len=4, d_model=8, n_heads=2))(
            TOKENS
        )


def test_charrnn_reads_the_state_at_the_last_real_character():
    model = CharRNN(CharRNNConfig(vocab_size=10, n_classes=3, embed_dim=4, hidden_size=4)).eval()
    short = torch.tensor([[3, 4, 0, 0]])
    assert torch.allclose(model(short), model(torch.tensor([[3, 4]])), atol=1e-6)


def test_transformer_attention_maps_and_padding():
    model = TinyTransformer(
        TransformerConfig(vocab_size=10, n_classes=3, max_len=8, d_model=16, n_heads=2)
    ).eval()
    model(TOKENS)
    maps = model.attention_maps()
    assert len(maps) == 2 and maps[0].shape == (2, 2, 5, 5)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 2, 5))
    assert torch.all(maps[0][0, :, :, 3:] == 0)  # padding gets no attention


def _all_sites_at(model_cls, config, value):
    """A copy of ``config`` with every dropout probability field set to ``value``."""
    fields = {
        name: value
        for name, current in vars(config).items()
        if isinstance(current, float) and ("dropout" in name or name in ("weight_drop", "drop_path"))
    }
    return model_cls(type(config)(**{**vars(config), **fields}))


@pytest.mark.parametrize("index", range(len(models_and_inputs())))
def test_every_site_at_p_one_gives_finite_outputs(index):
    model, x, shape = models_and_inputs()[index]
    full = _all_sites_at(type(model), model.config, 1.0)
    torch.manual_seed(0)
    full.train()
    out = full(x)
    assert out.shape == shape
    assert torch.isfinite(out).all(), f"{type(model).__name__} with every site at p = 1 gave {out}"
    out.sum().backward()
    grads = [p.grad for p in full.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads), "gradients must be finite at p = 1"


@pytest.mark.parametrize("cell", ["lstm", "tanh"])
def test_charrnn_fused_kernel_matches_the_unrolled_loop(cell):
    torch.manual_seed(0)
    model = CharRNN(
        CharRNNConfig(vocab_size=10, n_classes=3, embed_dim=6, hidden_size=5, num_layers=2, cell=cell)
    )
    model.train()
    fused = model(TOKENS)  # no recurrent mask: PyTorch's fused kernel
    model.recurrent_dropout.p = 1e-12  # a mask of ones (scaled by 1 + 1e-12): the Python loop
    looped = model(TOKENS)
    assert torch.allclose(fused, looped, atol=1e-6)


def test_charrnn_sites_are_modules_that_follow_the_generator():
    from dropout_course.layers import Dropout, LockedDropout

    config = CharRNNConfig(
        vocab_size=10,
        n_classes=3,
        embed_dim=6,
        hidden_size=5,
        embedding_dropout=0.3,
        input_dropout=0.3,
        output_dropout=0.3,
        recurrent_dropout=0.3,
        weight_drop=0.3,
        locked=True,
    )
    model = CharRNN(config)
    sites = ["embedding_dropout", "input_dropout", "output_dropout", "recurrent_dropout", "weight_drop"]
    for name in sites:
        assert isinstance(getattr(model, name), (Dropout, LockedDropout)), name
    model.train()

    def run(seed):
        for name in sites:
            getattr(model, name).generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed + 100)  # the global RNG must not matter
        return model(TOKENS)

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    model.eval()
    for name in sites:  # MC-dropout mode switches exactly these modules on
        getattr(model, name).train()
    assert not torch.equal(run(1), run(2)), "with only the dropout modules in train mode, outputs vary"


def test_charrnn_embedding_dropout_drops_a_character_everywhere_in_its_sequence():
    model = CharRNN(CharRNNConfig(vocab_size=10, n_classes=3, embed_dim=6, embedding_dropout=0.5))
    model.train()
    tokens = torch.tensor([[3, 3, 3, 4, 4, 4]] * 50)
    emb = model._embed(tokens)  # (N, T, E)
    zero = (emb == 0).all(-1)  # (N, T): dropped positions
    assert torch.equal(zero[:, :3], zero[:, :1].expand(-1, 3)) and torch.equal(
        zero[:, 3:], zero[:, 3:4].expand(-1, 3)
    )
    assert 0 < zero[:, 0].float().mean() < 1 and not torch.equal(zero[:, 0], zero[:, 0][0].expand(50))
