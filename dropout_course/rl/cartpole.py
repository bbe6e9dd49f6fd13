"""CartPole with other physics: pole length, masses, gravity and force, with the derived quantities kept right."""

from __future__ import annotations

import math
import numbers

import gymnasium as gym

__all__ = ["CARTPOLE_DEFAULTS", "set_cartpole_physics", "cartpole_physics", "make_cartpole"]

CARTPOLE_DEFAULTS = {
    "gravity": 9.8,
    "masscart": 1.0,
    "masspole": 0.1,
    "length": 0.5,  # HALF the pole's length, as in gymnasium
    "force_mag": 10.0,
}


def set_cartpole_physics(env: gym.Env, **physics: float) -> gym.Env:
    """Change CartPole's physics in place (``gravity``, ``masscart``, ``masspole``, ``length``,
    ``force_mag``) and update the derived ``total_mass`` and ``polemass_length``; return ``env``.

    >>> env = set_cartpole_physics(gym.make("CartPole-v1"), length=1.0)
    >>> env.unwrapped.polemass_length
    0.1
    """
    cartpole = env.unwrapped
    for name, value in physics.items():
        if name not in CARTPOLE_DEFAULTS:
            raise ValueError(f"unknown CartPole parameter {name!r}; allowed: {sorted(CARTPOLE_DEFAULTS)}")
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"CartPole parameter {name} must be a positive number, got {value!r}")
        setattr(cartpole, name, float(value))
    # Derived quantities the dynamics use directly: they must follow the parameters.
    cartpole.total_mass = cartpole.masspole + cartpole.masscart
    cartpole.polemass_length = cartpole.masspole * cartpole.length
    return env


def cartpole_physics(env: gym.Env) -> dict[str, float]:
    """The physics parameters of a CartPole env (including the derived ones) as a dict."""
    cartpole = env.unwrapped
    names = [*CARTPOLE_DEFAULTS, "total_mass", "polemass_length"]
    return {name: float(getattr(cartpole, name)) for name in names}


def make_cartpole(
    physics: dict | None = None, seed: int | None = None, max_episode_steps: int = 200
) -> gym.Env:
    """A CartPole-v1 env with the given physics, episodes capped at ``max_episode_steps``.

    With ``seed``, the action space is seeded and the env is reset once with ``seed`` (so later
    ``env.reset()`` calls without a seed continue a reproducible sequence).
    """
    if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be a positive int, got {max_episode_steps!r}")
    env = gym.make("CartPole-v1", max_episode_steps=max_episode_steps)
    set_cartpole_physics(env, **(physics or {}))
    if seed is not None:
        env.action_space.seed(seed)
        env.reset(seed=seed)
    return env
