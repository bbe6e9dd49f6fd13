"""Procedurally generated gridworld levels: a distribution of levels to train on K of and test on fresh ones.

This is the protocol of Cobbe et al. (2019, *Quantifying generalization in reinforcement learning*) in
miniature. A level is drawn from one distribution by its integer seed: a ``size x size`` grid with random
walls, a start and a goal reachable from the start. The agent moves up / down / left / right (into a wall
or off the grid: it stays), gets reward 1 and the episode ends when it reaches the goal, and an episode
is cut after ``max_steps``. It sees an egocentric view: a ``(2 size - 1)^2`` window centred on itself
with one channel for walls (outside the grid counts as wall) and one for the goal, so "walk towards the
goal around the walls" is a rule that transfers between levels, while the view also identifies each
level, so memorising a few levels is possible too.

Everything a level needs is tabulated once (:class:`GridLevels`): the observation of every cell and the
cell each action leads to, so stepping thousands of episodes at once is array indexing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

__all__ = ["MOVES", "random_level", "GridLevels"]

MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])  # up, down, left, right as (row, column) steps


def _distances(walls: np.ndarray, goal: tuple[int, int]) -> np.ndarray:
    """Shortest number of moves from every cell to ``goal`` (breadth-first search); -1 if unreachable."""
    size = walls.shape[0]
    dist = np.full(walls.shape, -1)
    dist[goal] = 0
    queue = deque([goal])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES:
            rr, cc = r + dr, c + dc
            if 0 <= rr < size and 0 <= cc < size and not walls[rr, cc] and dist[rr, cc] < 0:
                dist[rr, cc] = dist[r, c] + 1
                queue.append((rr, cc))
    return dist


def random_level(seed: int, size: int = 5, wall_prob: float = 0.25) -> tuple[np.ndarray, int, int, int]:
    """The level with this seed: ``(walls (size, size) bool, start cell, goal cell, shortest path length)``.

    Cells are numbered ``row * size + column``. Layouts are redrawn until the goal is reachable from the
    start at least 2 moves away, so every level is solvable and not trivial.
    """
    rng = np.random.default_rng(seed)
    while True:
        walls = rng.random((size, size)) < wall_prob
        free = np.flatnonzero(~walls.ravel())
        if len(free) < 2:
            continue
        start, goal = (int(c) for c in rng.choice(free, size=2, replace=False))
        moves = _distances(walls, divmod(goal, size))[divmod(start, size)]
        if moves >= 2:
            return walls, start, goal, int(moves)


class GridLevels:
    """Tabulated gridworld levels, one per seed.

    Attributes (``L`` levels, ``C = size**2`` cells, observation size ``D = 2 (2 size - 1)**2``):
        obs: (L, C, D) float32 -- the egocentric view from every cell.
        next_cell: (L, C, 4) int64 -- the cell each action leads to.
        start, goal, shortest: (L,) int64 -- start cell, goal cell, shortest path length in moves.

    Examples:
        >>> levels = GridLevels(range(3), size=4)
        >>> levels.obs.shape, levels.next_cell.shape
        ((3, 16, 98), (3, 16, 4))
        >>> bool((levels.shortest >= 2).all())
        True
    """

    def __init__(self, seeds: Sequence[int], size: int = 5, wall_prob: float = 0.25) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(f"size must be an int >= 2, got {size!r}")
        if not 0.0 <= wall_prob < 1.0:
            raise ValueError(f"wall_prob must be in [0, 1), got {wall_prob!r}")
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds must name at least one level, got none")
        self.size, self.seeds = size, seeds
        view = 2 * size - 1
        n, cells = len(seeds), size * size
        self.obs = np.zeros((n, cells, 2 * view * view), dtype=np.float32)
        self.next_cell = np.zeros((n, cells, 4), dtype=np.int64)
        self.start, self.goal, self.shortest = (np.zeros(n, dtype=np.int64) for _ in range(3))
        rows, cols = np.divmod(np.arange(cells), size)
        for k, seed in enumerate(seeds):
            walls, self.start[k], self.goal[k], self.shortest[k] = random_level(seed, size, wall_prob)
            # padded maps: the view from any cell is a (view x view) window; outside the grid is wall
            wall_map = np.ones((3 * size - 2, 3 * size - 2), dtype=np.float32)
            wall_map[size - 1 : 2 * size - 1, size - 1 : 2 * size - 1] = walls
            goal_map = np.zeros_like(wall_map)
            goal_map[size - 1 + self.goal[k] // size, size - 1 + self.goal[k] % size] = 1.0
            for cell, (r, c) in enumerate(zip(rows, cols, strict=True)):
                window = np.s_[r : r + view, c : c + view]
                self.obs[k, cell] = np.concatenate([wall_map[window].ravel(), goal_map[window].ravel()])
            for a, (dr, dc) in enumerate(MOVES):
                rr, cc = rows + dr, cols + dc
                inside = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
                free = inside & ~walls[np.clip(rr, 0, size - 1), np.clip(cc, 0, size - 1)]
                self.next_cell[k, :, a] = np.where(free, rr * size + cc, np.arange(cells))

    def __len__(self) -> int:
        return len(self.seeds)

    @property
    def obs_dim(self) -> int:
        return self.obs.shape[2]

    def step(self, level: np.ndarray, cell: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Move in many episodes at once (arrays of one shape): ``(next cell, reached the goal)``."""
        next_cell = self.next_cell[level, cell, action]
        return next_cell, next_cell == self.goal[level]
