"""Experience replay (Lin 1992; Mnih et al. 2015): a ring of the last ``capacity``
transitions in preallocated NumPy arrays, sampled uniformly in mini-batches."""

from __future__ import annotations

import numpy as np

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """Transitions ``(obs, action, reward, next_obs, terminated)``.

    ``terminated`` is true only when the episode really ended (the pole fell); a time-limit
    truncation is stored as not terminated, so its target still bootstraps from
    ``next_obs`` (Pardo et al. 2018, "Time limits in reinforcement learning").
    """

    def __init__(self, capacity: int, obs_shape: tuple, obs_dtype=np.float32) -> None:
        if int(capacity) < 1:
            raise ValueError(f"ReplayBuffer: capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.obs = np.zeros((self.capacity,) + tuple(obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros(self.capacity, dtype=np.int64)
        self.rewards = np.zeros(self.capacity, dtype=np.float32)
        self.terminated = np.zeros(self.capacity, dtype=np.float32)
        self.pos, self.size = 0, 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action: int, reward: float, next_obs, terminated: bool) -> None:
        i = self.pos
        self.obs[i] = obs
        self.next_obs[i] = next_obs
        self.actions[i] = action
        self.rewards[i] = reward
        self.terminated[i] = terminated
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator):
        """``(obs, actions, rewards, next_obs, terminated)`` of ``batch_size`` transitions
        drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        idx = rng.integers(0, self.size, size=batch_size)
        return (self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx],
                self.terminated[idx])

    def state(self) -> dict:
        n = self.size
        return {"capacity": self.capacity, "pos": self.pos, "size": n,
                "obs": self.obs[:n].copy(), "next_obs": self.next_obs[:n].copy(),
                "actions": self.actions[:n].copy(), "rewards": self.rewards[:n].copy(),
                "terminated": self.terminated[:n].copy()}

    @classmethod
    def from_state(cls, d: dict) -> ReplayBuffer:
        buf = cls(d["capacity"], d["obs"].shape[1:], d["obs"].dtype)
        n = int(d["size"])
        for k in ("obs", "next_obs", "actions", "rewards", "terminated"):
            getattr(buf, k)[:n] = d[k]
        buf.pos, buf.size = int(d["pos"]) % buf.capacity, n
        return buf
