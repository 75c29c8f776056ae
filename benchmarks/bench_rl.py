"""The ``rl`` workload: environment steps per second of a DQN run on CartPole-v1 — shendu's
``DQN`` against the same agent written in PyTorch (same network 4-64-64-2, Adam, batch 64,
two gradient steps every 4 environment steps (the defaults), Double-DQN targets, Huber loss,
gradient clipping, target copy every 500 steps, the same NumPy replay buffer and epsilon
schedule), in one run, interleaved, and their ratio.

    python benchmarks/bench_rl.py [--steps 4000] [--repeats 3] [--threads N]

Small networks are where a NumPy engine should win: at batch 1 (acting) and 64 (learning)
torch's per-op overhead is most of the time.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _harness as H  # noqa: E402

HIDDEN, LR, BATCH, TRAIN_FREQ, GRAD_STEPS, TARGET_EVERY, GAMMA = 64, 1e-3, 64, 4, 2, 500, 0.99
WARMUP = 1000   # random steps before learning (DQN's learning_starts), not timed


def shendu_agent(seed: int = 0):
    from shendu.rl import DQN

    agent = DQN("CartPole-v1", seed=seed, learning_starts=WARMUP, learning_rate=LR,
                batch_size=BATCH, train_freq=TRAIN_FREQ, gradient_steps=GRAD_STEPS,
                target_update_interval=TARGET_EVERY,
                gamma=GAMMA, net_arch=(HIDDEN, HIDDEN))
    agent.learn(WARMUP)
    return lambda n: agent.learn(n)


class TorchDQN:
    """The same agent in PyTorch, written the way its users write it."""

    def __init__(self, seed: int = 0) -> None:
        import gymnasium as gym
        import torch

        from shendu.rl import ReplayBuffer

        self.torch = torch
        torch.manual_seed(seed)
        self.env = gym.make("CartPole-v1")
        self.obs = np.asarray(self.env.reset(seed=seed)[0], dtype=np.float32)
        nn = torch.nn
        self.q = nn.Sequential(nn.Linear(4, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN),
                               nn.ReLU(), nn.Linear(HIDDEN, 2))
        self.q_target = copy.deepcopy(self.q)
        self.opt = torch.optim.Adam(self.q.parameters(), lr=LR)
        self.buf = ReplayBuffer(50_000, (4,))
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.t = 0
        self.run(WARMUP)

    def train_step(self) -> None:
        torch = self.torch
        obs, act, rew, nxt, term = (torch.as_tensor(a) for a in
                                    self.buf.sample(BATCH, self.rng))
        with torch.no_grad():
            best = self.q(nxt).argmax(dim=1, keepdim=True)
            v = self.q_target(nxt).gather(1, best).squeeze(1)
            y = rew + GAMMA * (1 - term) * v
        q = self.q(obs).gather(1, act[:, None]).squeeze(1)
        loss = torch.nn.functional.smooth_l1_loss(q, y)
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.q.parameters(), 10.0)
        self.opt.step()

    def run(self, n: int) -> None:
        torch = self.torch
        for _ in range(n):
            eps = max(0.02, 1.0 - self.t / 10_000)
            if self.t < WARMUP or self.rng.random() < eps:
                a = int(self.rng.integers(2))
            else:
                with torch.no_grad():
                    a = int(self.q(torch.as_tensor(self.obs[None])).argmax(dim=1)[0])
            nxt, r, term, trunc, _ = self.env.step(a)
            nxt = np.asarray(nxt, dtype=np.float32)
            self.buf.add(self.obs, a, r, nxt, term)
            self.obs = np.asarray(self.env.reset()[0], dtype=np.float32) \
                if term or trunc else nxt
            self.t += 1
            if self.t > WARMUP and self.t % TRAIN_FREQ == 0:
                for _ in range(GRAD_STEPS):
                    self.train_step()
            if self.t % TARGET_EVERY == 0:
                self.q_target.load_state_dict(self.q.state_dict())


def rate(run, n: int) -> float:
    t0 = time.perf_counter()
    run(n)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4000, help="environment steps per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both NumPy's BLAS and torch (default: each library's own)")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    H.set_threads(args.threads)
    steps = max(args.steps, 200)
    s_run = shendu_agent()
    t_run = None
    if not args.no_torch:
        try:
            t_run = TorchDQN().run
        except ImportError:
            print("torch is not installed: timing shendu alone")
    s_rates, t_rates, ratios = [], [], []
    for _ in range(args.repeats):
        s = rate(s_run, steps)
        s_rates.append(s)
        if t_run is not None:
            t = rate(t_run, steps)
            t_rates.append(t)
            ratios.append(s / t)
    res = {"name": "rl-dqn", "shendu_steps_per_s": statistics.median(s_rates)}
    if t_rates:
        res.update(torch_steps_per_s=statistics.median(t_rates),
                   ratio=statistics.median(ratios), ratios=[round(r, 3) for r in ratios])
    print(H.threads_note() + "; steps are CartPole-v1 environment steps of a DQN run")
    H.print_result(res)


if __name__ == "__main__":
    main()
