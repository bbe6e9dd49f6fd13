"""The ex07 (Thompson sampling with a dropout Q-network) grader against wrong and correct implementations.

Every wrong implementation must fail with its specific diagnosis (message text pinned); every correct one,
whatever the order of its random calls, must get full marks, hidden checks included.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dropout_course import rl
from dropout_course.grading import Grader

EX = "ex07_thompson_sampling"


@pytest.fixture(scope="module")
def grader():
    return Grader(EX)


def _fails_with(result, *fragments):
    text = "\n".join(result.messages)
    assert not result.passed, text
    assert result.score < result.max_score
    for fragment in fragments:
        assert fragment in text, f"expected {fragment!r} in:\n{text}"


def _q(q_net, obs, training):
    was = q_net.training
    q_net.train(training)
    with torch.no_grad():
        q = q_net(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))[0]
    q_net.train(was)
    return q


# --------------------------------------------------------------------------- correct


def ok_greedy(q_net, obs):
    return int(_q(q_net, obs, False).argmax())


def ok_greedy_item(q_net, obs):
    modes = [m.training for m in q_net.modules()]
    q_net.eval()
    q = q_net(torch.from_numpy(np.asarray(obs, dtype=np.float32))[None]).detach()
    for m, mode in zip(q_net.modules(), modes, strict=True):
        m.training = mode
    return q.argmax(dim=1).item()


def ok_thompson(q_net, obs):
    return int(_q(q_net, obs, True).argmax())


def ok_thompson_numpy(q_net, obs):
    torch.rand(5)  # another RNG call order
    was = q_net.training
    q_net.train()
    try:
        q = q_net(torch.tensor(np.array([obs]), dtype=torch.float32)).detach().numpy()[0]
    finally:
        q_net.train(was)
    return int(np.argmax(q))


def ok_thompson_reference(q_net, obs):
    return rl.thompson_action(q_net, obs)


def ok_greedy_unbatched(q_net, obs):  # a 1-D observation straight into the network: Linear accepts it
    was = q_net.training
    q_net.eval()
    with torch.no_grad():
        q = q_net(torch.tensor(obs))
    q_net.train(was)
    return int(torch.argmax(q))


def ok_thompson_dropout_modules_only(q_net, obs):  # only the dropout modules switched on, each mode restored
    modes = {m: m.training for m in q_net.modules()}
    for m in q_net.modules():
        if "Dropout" in type(m).__name__:
            m.train()
    with torch.no_grad():
        q = q_net(torch.tensor(obs).unsqueeze(0)).squeeze(0)
    for m, mode in modes.items():
        m.training = mode
    return int(q.argmax())


def ok_thompson_max_indices(q_net, obs):
    was = q_net.training
    q_net.train(True)
    with torch.no_grad():
        _, action = q_net(torch.from_numpy(obs).float().view(1, -1)).max(dim=1)
    q_net.train(was)
    return action.item()


@pytest.mark.parametrize("fn", [ok_greedy, ok_greedy_item, ok_greedy_unbatched])
def test_correct_greedy_gets_full_marks(grader, fn):
    result = grader.check("greedy_action", fn)
    assert result.passed and result.score == result.max_score, "\n".join(result.messages)


@pytest.mark.parametrize(
    "fn", [ok_thompson, ok_thompson_numpy, ok_thompson_dropout_modules_only, ok_thompson_max_indices]
)
def test_correct_thompson_gets_full_marks(grader, fn):
    for name in ("thompson_action", "thompson_action_hidden"):
        result = grader.check(name, fn)
        assert result.passed and result.score == result.max_score, "\n".join(result.messages)


# --------------------------------------------------------------------------- wrong greedy


def greedy_argmin(q_net, obs):
    return int(_q(q_net, obs, False).argmin())


def greedy_dropout_on(q_net, obs):
    with torch.no_grad():
        return int(q_net(torch.as_tensor(obs)[None]).argmax())


def greedy_tensor(q_net, obs):
    return _q(q_net, obs, False).argmax()


def greedy_leaves_eval(q_net, obs):
    q_net.eval()
    with torch.no_grad():
        return int(q_net(torch.as_tensor(obs)[None]).argmax())


def greedy_numpy_int(q_net, obs):
    return np.argmax(_q(q_net, obs, False).numpy())  # a numpy int64, not a Python int


def greedy_course(q_net, obs):
    from dropout_course.rl.actions import greedy_action

    return greedy_action(q_net, obs)


def greedy_mc_mean(q_net, obs):  # the mean of 200 dropout samples instead of the eval-mode Q-values
    x = torch.as_tensor(obs)[None].repeat(200, 1)
    return int(_q_batch(q_net, x).mean(0).argmax())


WRONG_GREEDY = {
    greedy_mc_mean: ["the dropout layers ran in train mode", "`q_net.eval()`"],
    rl.greedy_action: ["not credited: calls dropout_course.rl.actions.greedy_action"],
    greedy_course: ["not credited: calls dropout_course.rl.actions.greedy_action"],
    greedy_numpy_int: ["returns a numpy int64, not a Python int"],
    greedy_argmin: ["LOWEST Q-value (argmin)"],
    greedy_dropout_on: ["different actions: dropout is still on"],
    greedy_tensor: ["returns a torch.Tensor", "`int(q.argmax())`"],
    greedy_leaves_eval: ["leaves the network in eval mode, it was in train mode"],
}


@pytest.mark.parametrize("fn", list(WRONG_GREEDY), ids=[f.__name__ for f in WRONG_GREEDY])
def test_wrong_greedy_is_diagnosed(grader, fn):
    _fails_with(grader.check("greedy_action", fn), *WRONG_GREEDY[fn])


# --------------------------------------------------------------------------- wrong thompson


def dropout_off(q_net, obs):
    return ok_greedy(q_net, obs)


def thompson_argmin(q_net, obs):
    return int(_q(q_net, obs, True).argmin())


def thompson_tensor(q_net, obs):
    return _q(q_net, obs, True).argmax()


def leaves_train(q_net, obs):
    q_net.train()
    with torch.no_grad():
        return int(q_net(torch.as_tensor(obs)[None]).argmax())


def ends_in_eval(q_net, obs):
    q_net.train()
    with torch.no_grad():
        q = q_net(torch.as_tensor(obs)[None])
    q_net.eval()
    return int(q.argmax())


def averages_samples(q_net, obs):
    x = torch.as_tensor(obs)[None].repeat(10, 1)  # 10 masks, averaged: close to greedy
    return int(_q_batch(q_net, x).mean(0).argmax())


def _q_batch(q_net, x):
    was = q_net.training
    q_net.train()
    with torch.no_grad():
        q = q_net(x)
    q_net.train(was)
    return q


def reseeds(q_net, obs):
    torch.manual_seed(0)
    return ok_thompson(q_net, obs)


def dropout_on_q_values(q_net, obs):
    return int(torch.nn.functional.dropout(_q(q_net, obs, False), 0.5).argmax())


def thompson_cached_mask(q_net, obs):  # one mask drawn at the first call, kept on the network
    if not hasattr(q_net, "_mask_seed"):
        q_net._mask_seed = int(torch.randint(0, 2**31, (1,)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(q_net._mask_seed)
        return int(_q(q_net, obs, True).argmax())


def epsilon_mixed_in(q_net, obs):  # "for safety" a random action 10% of the time
    if np.random.random() < 0.1:
        return int(np.random.randint(len(_q(q_net, obs, False))))
    return ok_thompson(q_net, obs)


def softmax_of_sample(q_net, obs):  # Boltzmann exploration on the sampled Q-values
    return int(torch.multinomial(torch.softmax(_q(q_net, obs, True), 0), 1))


def boltzmann_eval(q_net, obs):  # random, but not from a dropout mask
    return int(torch.multinomial(torch.softmax(_q(q_net, obs, False), 0), 1))


WRONG_THOMPSON = {
    epsilon_mixed_in: ["action 0 is chosen", "epsilon-greedy or softmax mix-in"],
    softmax_of_sample: ["action 0 is chosen", "epsilon-greedy or softmax mix-in"],
    boltzmann_eval: ["the network's dropout layers never ran in train mode", "PASS returns a Python int"],
    ok_thompson_reference: ["not credited: calls dropout_course.rl.actions.thompson_action"],
    thompson_cached_mask: ["every call uses the same mask"],
    dropout_off: ["(the greedy one)", "dropout is off"],
    thompson_argmin: ["LOWEST sampled Q-value (argmin)", "PASS samples"],
    thompson_tensor: ["returns a torch.Tensor"],
    leaves_train: ["leaves the network in train mode, it was in eval mode"],
    ends_in_eval: ["leaves the network in eval mode, it was in train mode", "PASS chooses actions"],
    averages_samples: ["too deterministic", "ONE sampled network"],
    reseeds: ["every call uses the same mask"],
    dropout_on_q_values: ["the network's dropout layers never ran in train mode"],
}


@pytest.mark.parametrize("fn", list(WRONG_THOMPSON), ids=[f.__name__ for f in WRONG_THOMPSON])
def test_wrong_thompson_is_diagnosed(grader, fn):
    _fails_with(grader.check("thompson_action", fn), *WRONG_THOMPSON[fn])
    hidden = grader.check("thompson_action_hidden", fn)
    assert hidden.score < hidden.max_score, "\n".join(hidden.messages)


def test_hidden_check_catches_averaging_on_the_torch_network(grader):
    _fails_with(grader.check("thompson_action_hidden", averages_samples), "too deterministic")


def test_grading_leaves_learner_rng_and_threads_alone(grader):
    threads = torch.get_num_threads()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    grader.check("thompson_action", ok_thompson)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads
