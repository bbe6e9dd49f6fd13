"""RL helpers: action selection, CartPole physics, DQN and its replay buffer, batched agents, levels, bandits."""

import numpy as np
import pytest
import torch
from torch import nn

from dropout_course.layers import Dropout
from dropout_course.models import QNetwork, QNetworkConfig
from dropout_course.rl import (
    CARTPOLE_DEFAULTS,
    ContextualBandit,
    DQNArgs,
    GridLevels,
    LevelDQNArgs,
    QNetworkBatch,
    ReplayBuffer,
    cartpole_physics,
    epsilon_greedy_action,
    evaluate_policy,
    exploration_floor,
    greedy_action,
    linear_schedule,
    make_cartpole,
    masks_from,
    random_level,
    run_bandit,
    run_bandits,
    set_cartpole_physics,
    success_rate,
    thompson_action,
    train_dqn,
    train_level_agents,
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


def test_thompson_follows_its_generator_and_leaves_global_rng_alone():
    net = q_net(dropout=0.5)
    batch = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)

    def decisions(seed):
        g = torch.Generator().manual_seed(seed)
        return np.concatenate([thompson_action(net, batch, g) for _ in range(5)])

    state = torch.get_rng_state()
    same_a, same_b, other = decisions(3), decisions(3), decisions(4)
    assert torch.equal(state, torch.get_rng_state()), "a generator was given: the global RNG must not move"
    np.testing.assert_array_equal(same_a, same_b)
    # control: the decisions depend on the masks, so another seed must change some of 320 decisions
    assert (same_a != other).sum() > 0, "decisions do not depend on the generator's masks"


def test_thompson_without_dropout_is_greedy():
    net = q_net(dropout=0.0)
    assert {thompson_action(net, OBS) for _ in range(20)} == {greedy_action(net, OBS)}


def test_masks_from_restores_generators_even_if_the_block_raises():
    net = nn.Sequential(nn.Linear(4, 8), Dropout(0.5), nn.Linear(8, 2))
    own = torch.Generator().manual_seed(1)
    net[1].generator = own
    with pytest.raises(RuntimeError, match="boom"), masks_from(net, torch.Generator().manual_seed(2)):
        assert net[1].generator is not own
        raise RuntimeError("boom")
    assert net[1].generator is own


def test_masks_from_torch_dropout_is_reproducible_and_leaves_global_rng_alone():
    net = nn.Sequential(nn.Linear(4, 64), nn.Dropout(0.5)).train()
    x = torch.ones(3, 4)
    state = torch.get_rng_state()
    outs = []
    for seed in (5, 5, 6):
        with masks_from(net, torch.Generator().manual_seed(seed)):
            outs.append(net(x))
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


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


def test_replay_buffer_wraps_around_and_samples_what_was_stored():
    buffer = ReplayBuffer(capacity=5, obs_dim=2)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(1, np.random.default_rng(0))
    for start in (0, 3):  # 6 transitions into 5 slots: transition 0 is overwritten by transition 5
        n = 3
        ids = np.arange(start, start + n)
        buffer.add(np.stack([ids, ids], 1), ids, ids * 10.0, np.stack([ids + 1, ids + 1], 1), ids % 2)
    assert len(buffer) == 5
    assert sorted(buffer.actions.tolist()) == [1, 2, 3, 4, 5]
    s, a, r, s_next, d = buffer.sample(500, np.random.default_rng(0))
    assert s.shape == (500, 2) and a.dtype == torch.int64
    # every sampled transition is one that was stored, its fields kept together
    assert set(a.tolist()) == {1, 2, 3, 4, 5}
    torch.testing.assert_close(s[:, 0], a.float())
    torch.testing.assert_close(r, a.float() * 10)
    torch.testing.assert_close(s_next[:, 0], a.float() + 1)
    torch.testing.assert_close(d, (a % 2).float())
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0, 2)


def tiny_args(**kw):
    base = dict(total_steps=60, learning_starts=20, batch_size=16, hidden=(16,), target_network_frequency=10)
    return DQNArgs(**{**base, **kw})


def test_train_dqn_is_reproducible_and_trains():
    args = tiny_args(seed=4, dropout=0.2)
    a = train_dqn(args, [{"length": 0.4}, {"length": 0.6}])
    b = train_dqn(args, [{"length": 0.4}, {"length": 0.6}])
    c = train_dqn(tiny_args(seed=5, dropout=0.2), [{"length": 0.4}, {"length": 0.6}])
    assert len(a.losses) == 40 and a.losses == b.losses and a.episodes == b.episodes
    assert a.losses != c.losses, "another seed must give another run (control for the equality above)"
    for pa, pb in zip(a.q_net.parameters(), b.q_net.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not a.q_net.training, "train_dqn returns the network in eval mode"
    assert {e["env"] for e in a.episodes} <= {0, 1} and all(e["return"] >= 1 for e in a.episodes)


def test_train_dqn_thompson_is_reproducible_and_seed_dependent():
    first = train_dqn(tiny_args(seed=1, dropout=0.3, exploration="thompson"))
    again = train_dqn(tiny_args(seed=1, dropout=0.3, exploration="thompson"))
    other = train_dqn(tiny_args(seed=2, dropout=0.3, exploration="thompson"))
    assert first.losses == again.losses
    assert first.losses != other.losses


def test_train_dqn_propagates_errors_from_the_update(monkeypatch):
    import dropout_course.rl.dqn as dqn

    def broken(*args, **kwargs):
        raise RuntimeError("broken step")

    monkeypatch.setattr(dqn, "_td_step", broken)
    with pytest.raises(RuntimeError, match="broken step"):
        train_dqn(tiny_args(seed=0, dropout=0.2))


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


# ----------------------------------------------------------------------------- batched agents


def test_q_network_batch_agents_are_separate_mlps():
    net = QNetworkBatch(3, obs_dim=4, n_actions=2, hidden=(8, 8), generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 5, 4)
    out = net(x)
    for i in range(3):  # agent i equals a plain MLP built from its own weights
        layers = []
        for k, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
            linear = nn.Linear(*w.shape[1:])
            linear.weight.data, linear.bias.data = w[i].T.clone(), b[i, 0].clone()
            layers += [linear] + ([nn.ReLU()] if k < 2 else [])
        torch.testing.assert_close(out[i], nn.Sequential(*layers)(x[i]))
    # gradients of agent 0's output reach only agent 0's weights
    net(x)[0].sum().backward()
    assert net.weights[0].grad[0].abs().sum() > 0 and net.weights[0].grad[1:].abs().sum() == 0


def test_q_network_batch_per_agent_dropout_and_l2():
    net = QNetworkBatch(
        3, 4, 2, hidden=(16,), dropout=[0.0, 0.5, 0.0], generator=torch.Generator().manual_seed(0)
    )
    x = torch.randn(3, 20, 4)
    net.train()
    a, b = net(x), net(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]), "agents with p = 0 must be deterministic"
    assert not torch.equal(a[1], b[1]), "the agent with p = 0.5 must draw new masks"
    net.eval()
    assert torch.equal(net(x), net(x))
    expected = torch.stack([sum((w[i] ** 2).sum() for w in net.weights) for i in range(3)])
    torch.testing.assert_close(net.l2(), expected)
    with pytest.raises(ValueError, match="one per agent"):
        QNetworkBatch(3, 4, 2, dropout=[0.1, 0.2])
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(2, 5, 4))


# ----------------------------------------------------------------------------- gridworld levels


def test_levels_are_solvable_and_moves_respect_walls():
    levels = GridLevels(range(40), size=5)
    for k, seed in enumerate(levels.seeds):
        walls, start, goal, moves = random_level(seed, 5)
        assert (levels.start[k], levels.goal[k], levels.shortest[k]) == (start, goal, moves) and moves >= 2
        for cell in range(25):
            r, c = divmod(cell, 5)
            for a, (dr, dc) in enumerate([(-1, 0), (1, 0), (0, -1), (0, 1)]):
                rr, cc = r + dr, c + dc
                blocked = not (0 <= rr < 5 and 0 <= cc < 5) or walls[rr, cc]
                assert levels.next_cell[k, cell, a] == (cell if blocked else rr * 5 + cc)
    # the view is centred on the agent: the centre of the goal channel is 1 exactly at the goal
    centre = 81 + 40
    on_goal = levels.obs[np.arange(40), levels.goal, centre]
    assert (on_goal == 1).all() and levels.obs[np.arange(40), levels.start, centre].sum() == 0
    # following shortest-path moves reaches the goal in exactly `shortest` steps (BFS check)
    assert GridLevels(range(3)).shortest.tolist() == [random_level(s)[3] for s in range(3)]


def test_level_agents_learn_their_levels_and_success_rate_modes():
    levels = GridLevels(range(20), size=4)
    args = LevelDQNArgs(seed=0, total_steps=500, hidden=(32,), max_steps=10)
    state = torch.get_rng_state()
    trained = train_level_agents(levels, [[0], [1], [2], [3]], dropout=[0.0, 0.0, 0.2, 0.2], args=args)
    assert torch.equal(state, torch.get_rng_state()), "training must draw only from its own generators"
    untrained = QNetworkBatch(4, levels.obs_dim, 4, (32,), generator=torch.Generator().manual_seed(0))
    own = np.arange(4)[:, None]
    solved = success_rate(trained, levels, own, max_steps=10)
    assert solved.mean() >= 0.75, f"agents trained 500 steps on one level should solve it: {solved}"
    assert success_rate(untrained, levels, np.arange(20)[None].repeat(4, 0), max_steps=10).mean() < 0.6
    # train mode: fresh masks per decision, reproducible with a generator, the mode restored
    many = np.arange(20)[None].repeat(4, 0)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    first = success_rate(trained, levels, many, 10, "train", g1)
    np.testing.assert_array_equal(first, success_rate(trained, levels, many, 10, "train", g2))
    assert not trained.training
    with pytest.raises(ValueError, match="at least one"):
        train_level_agents(levels, [[0], []], args=args)


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
    assert not np.array_equal(a, run_bandit(bandit, "thompson", steps=40, seed=2))


def test_uniform_exploration_regret_matches_the_floor():
    bandits = [ContextualBandit(seed=s) for s in range(4)]
    regret = run_bandits(bandits, "epsilon", steps=400, epsilon=1.0, hidden=(8,), seed=0)
    per_round = regret[:, -1] / 400
    floors = np.array([exploration_floor(b, 1.0) for b in bandits])
    # 400 uniform pulls per bandit: the mean regret per round has a std of about 0.03 / sqrt(400) * 10
    np.testing.assert_allclose(per_round, floors, atol=0.06)
    assert exploration_floor(bandits[0], 0.1) == pytest.approx(0.1 * floors[0])


def test_bandit_policies_are_paired():
    bandits = [ContextualBandit(seed=s) for s in range(3)]
    greedy = run_bandits(bandits, "greedy", steps=30, hidden=(8,), seed=3)
    eps0 = run_bandits(bandits, "epsilon", steps=30, epsilon=0.0, hidden=(8,), seed=3)
    np.testing.assert_array_equal(greedy, eps0)  # same contexts, noise and weights: same run
    assert not np.array_equal(greedy, run_bandits(bandits, "greedy", steps=30, hidden=(8,), seed=4))


def test_bandit_bad_args():
    bandit = ContextualBandit(seed=0)
    with pytest.raises(ValueError, match="'ucb'"):
        run_bandit(bandit, "ucb", steps=5)
    with pytest.raises(ValueError, match="dropout=0"):
        run_bandit(bandit, "thompson", steps=5, dropout=0.0)
    with pytest.raises(ValueError, match="1"):
        ContextualBandit(n_arms=1)
    with pytest.raises(ValueError, match="same n_arms"):
        run_bandits([ContextualBandit(n_arms=2), ContextualBandit(n_arms=3)])
