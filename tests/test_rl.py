"""RL helpers: action selection modes, CartPole physics variants, seeded DQN and bandit runs, errors."""

import numpy as np
import pytest
import torch

from dropout_course.models import QNetwork, QNetworkConfig
from dropout_course.rl import (
    CARTPOLE_DEFAULTS,
    ContextualBandit,
    DQNArgs,
    cartpole_physics,
    epsilon_greedy_action,
    evaluate_policy,
    greedy_action,
    linear_schedule,
    make_cartpole,
    run_bandit,
    set_cartpole_physics,
    thompson_action,
    train_dqn,
)


def q_net(dropout=0.5, seed=0, hidden=(32, 32)):
    torch.manual_seed(seed)
    return QNetwork(QNetworkConfig(obs_dim=4, n_actions=4, hidden=hidden, dropout=dropout))


OBS = np.array([0.1, -0.2, 0.05, 0.3], dtype=np.float32)


# ----------------------------------------------------------------------------- action selection


def test_thompson_varies_in_train_mode_and_greedy_is_deterministic():
    net = q_net(dropout=0.5).eval()
    g = torch.Generator().manual_seed(0)
    thompson = [thompson_action(net, OBS, generator=g) for _ in range(200)]
    assert len(set(thompson)) >= 2, "one dropout mask per decision should change the chosen action sometimes"
    assert all(isinstance(a, int) for a in thompson)
    greedy = {greedy_action(net, OBS) for _ in range(50)}
    assert len(greedy) == 1, f"greedy (eval mode) must be deterministic, got actions {greedy}"
    assert not net.training, "thompson_action/greedy_action must restore the network's mode"
    net.train()
    thompson_action(net, OBS)
    greedy_action(net, OBS)
    assert net.training


def test_thompson_reproducible_with_generator_and_leaves_global_rng_alone():
    net = q_net(dropout=0.5)
    state = torch.get_rng_state()
    a = [thompson_action(net, OBS, generator=torch.Generator().manual_seed(3)) for _ in range(5)]
    b = [thompson_action(net, OBS, generator=torch.Generator().manual_seed(3)) for _ in range(5)]
    assert a == b
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert [thompson_action(net, OBS, g1) for _ in range(30)] == [
        thompson_action(net, OBS, g2) for _ in range(30)
    ]
    assert torch.equal(state, torch.get_rng_state()), "a generator was given: the global RNG must not move"


def test_thompson_without_dropout_is_greedy():
    net = q_net(dropout=0.0)
    assert {thompson_action(net, OBS) for _ in range(20)} == {greedy_action(net, OBS)}


def test_batched_actions():
    net = q_net(dropout=0.3)
    obs = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    for actions in (
        greedy_action(net, obs),
        thompson_action(net, obs, torch.Generator().manual_seed(0)),
        epsilon_greedy_action(net, obs, 0.5, np.random.default_rng(0)),
    ):
        assert actions.shape == (6,) and actions.dtype == np.int64 and ((0 <= actions) & (actions < 4)).all()


def test_epsilon_greedy_rates():
    net = q_net(dropout=0.5)
    best = greedy_action(net, OBS)
    rng = np.random.default_rng(0)
    assert all(epsilon_greedy_action(net, OBS, 0.0, rng) == best for _ in range(50))
    n, eps = 1000, 0.4
    actions = np.array([epsilon_greedy_action(net, OBS, eps, rng) for _ in range(n)])
    # P(not best) = eps * 3/4 = 0.3; binomial std sqrt(0.3 * 0.7 / 1000) ~ 0.0145: 4 sigma tolerance
    assert abs((actions != best).mean() - 0.3) < 0.06
    assert set(actions.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("epsilon", [-0.1, 1.5, float("nan"), True])
def test_epsilon_bad_values(epsilon):
    with pytest.raises(ValueError, match=repr(epsilon).replace("(", r"\(").replace(")", r"\)")):
        epsilon_greedy_action(q_net(), OBS, epsilon, np.random.default_rng(0))


def test_epsilon_needs_numpy_generator():
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        epsilon_greedy_action(q_net(), OBS, 0.1, rng=0)


def test_linear_schedule():
    assert linear_schedule(1.0, 0.1, 100, 0) == 1.0
    assert linear_schedule(1.0, 0.1, 100, 50) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 100, 1000) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- CartPole variants


def test_physics_change_updates_derived_quantities_and_dynamics():
    env = make_cartpole({"length": 1.0, "masspole": 0.3, "gravity": 15.0})
    physics = cartpole_physics(env)
    assert physics["length"] == 1.0 and physics["masspole"] == 0.3 and physics["gravity"] == 15.0
    assert physics["total_mass"] == pytest.approx(1.3)
    assert physics["polemass_length"] == pytest.approx(0.3)
    default = make_cartpole()
    assert cartpole_physics(default) == pytest.approx(
        {**CARTPOLE_DEFAULTS, "total_mass": 1.1, "polemass_length": 0.05}
    )
    # same start, same actions: different physics must give a different trajectory
    short, long_ = make_cartpole({"length": 0.2}), make_cartpole({"length": 1.0})
    s0, _ = short.reset(seed=5)
    l0, _ = long_.reset(seed=5)
    np.testing.assert_array_equal(s0, l0)
    for _ in range(5):
        s_short, *_ = short.step(1)
        s_long, *_ = long_.step(1)
    assert abs(s_short[3]) > abs(s_long[3]), "a shorter pole must tip faster (larger angular velocity)"


@pytest.mark.parametrize(
    "bad", [{"length": -1.0}, {"gravity": 0}, {"masspole": float("nan")}, {"colour": 1.0}]
)
def test_physics_bad_values(bad):
    ((name, value),) = bad.items()
    with pytest.raises(ValueError, match=name):
        set_cartpole_physics(make_cartpole(), **bad)
    with pytest.raises(ValueError, match=repr(value) if name != "colour" else "colour"):
        make_cartpole(bad)


# ----------------------------------------------------------------------------- DQN


def tiny_args(**kw):
    base = dict(total_steps=60, learning_starts=20, batch_size=16, hidden=(16,), target_network_frequency=10)
    return DQNArgs(**{**base, **kw})


def test_train_dqn_is_reproducible_and_trains():
    args = tiny_args(seed=4, dropout=0.2)
    a = train_dqn(args, [{"length": 0.4}, {"length": 0.6}])
    b = train_dqn(args, [{"length": 0.4}, {"length": 0.6}])
    c = train_dqn(tiny_args(seed=5, dropout=0.2), [{"length": 0.4}, {"length": 0.6}])
    assert len(a.losses) == 40 and a.losses == b.losses and a.episodes == b.episodes
    assert a.losses != c.losses
    for pa, pb in zip(a.q_net.parameters(), b.q_net.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not a.q_net.training, "train_dqn returns the network in eval mode"
    assert {e["env"] for e in a.episodes} <= {0, 1} and all(e["return"] >= 1 for e in a.episodes)


def test_train_dqn_thompson_runs_reproducibly():
    args = tiny_args(seed=1, dropout=0.3, exploration="thompson")
    assert train_dqn(args).losses == train_dqn(args).losses


def test_evaluate_policy_modes():
    net = train_dqn(tiny_args(seed=0, dropout=0.5, hidden=(32,))).q_net
    physics = [{}, {"length": 0.2}]
    r1 = evaluate_policy(net, physics, episodes=3, seed=0, max_episode_steps=50)
    r2 = evaluate_policy(net, physics, episodes=3, seed=0, max_episode_steps=50)
    assert r1.shape == (2, 3) and (r1 >= 1).all() and (r1 <= 50).all()
    np.testing.assert_array_equal(r1, r2)
    t1 = evaluate_policy(net, physics, 3, 0, "train", 50, torch.Generator().manual_seed(1))
    t2 = evaluate_policy(net, physics, 3, 0, "train", 50, torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(t1, t2)
    with pytest.raises(ValueError, match="'greedy'"):
        evaluate_policy(net, mode="greedy")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dropout", 1.5),
        ("gamma", -0.1),
        ("total_steps", 0),
        ("batch_size", 2.5),
        ("exploration", "boltzmann"),
    ],
)
def test_dqn_args_bad_values(field, value):
    with pytest.raises(ValueError, match=f"{field}.*{value}"):
        DQNArgs(**{field: value})


def test_thompson_dqn_needs_dropout():
    with pytest.raises(ValueError, match="dropout=0"):
        DQNArgs(exploration="thompson", dropout=0.0)


# ----------------------------------------------------------------------------- contextual bandit


def test_bandit_known_optimum_and_regret():
    bandit = ContextualBandit(n_arms=3, context_dim=2, seed=0)
    x = bandit.contexts(500, np.random.default_rng(0))
    means = bandit.mean_rewards(x)
    assert means.shape == (500, 3)
    assert len(set(means.argmax(1).tolist())) == 3, "every arm should be the best somewhere"
    a = run_bandit(bandit, "thompson", steps=40, seed=1)
    b = run_bandit(bandit, "thompson", steps=40, seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (40,) and (np.diff(a) >= 0).all() and a[0] >= 0
    assert not np.array_equal(a, run_bandit(bandit, "epsilon", steps=40, seed=1))


def test_bandit_bad_args():
    bandit = ContextualBandit(seed=0)
    with pytest.raises(ValueError, match="'ucb'"):
        run_bandit(bandit, "ucb", steps=5)
    with pytest.raises(ValueError, match="dropout=0"):
        run_bandit(bandit, "thompson", steps=5, dropout=0.0)
    with pytest.raises(ValueError, match="1"):
        ContextualBandit(n_arms=1)
