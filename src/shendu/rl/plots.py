"""Pictures of the game-AI chapter (matplotlib, imported only when drawing)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["frame_strip", "rollout_frames", "learning_curve"]


def rollout_frames(agent, env_id: str = "CartPole-v1", n_frames: int = 6,
                   seed: int = 0) -> tuple[list[np.ndarray], list[int], int]:
    """Play one greedy episode with Gymnasium's ``rgb_array`` rendering and keep
    ``n_frames`` evenly spaced frames: ``(frames, their step numbers, episode length)``."""
    from shendu.rl.envs import make_env

    env = make_env(env_id, render_mode="rgb_array")
    obs, _ = env.reset(seed=seed)
    frames, done, t = [env.render()], False, 0
    while not done:
        action, _ = agent.predict(obs, deterministic=True)
        obs, _, term, trunc, _ = env.step(action)
        t += 1
        frames.append(env.render())
        done = term or trunc
    env.close()
    idx = np.linspace(0, len(frames) - 1, n_frames).round().astype(int)
    return [frames[i] for i in idx], [int(i) for i in idx], t


def frame_strip(path, frames: Sequence[np.ndarray], steps: Sequence[int],
                title: str = "The trained agent balancing the pole") -> str:
    """A row of frames, each labelled with its step."""
    from shendu.report.plots import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(frames), figsize=(2.2 * len(frames), 1.9))
    for ax, f, s in zip(np.atleast_1d(axes), frames, steps):
        ax.imshow(f[60:330] if f.shape[0] >= 330 else f)
        ax.set_title(f"step {s}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def learning_curve(path, steps: Sequence[int], returns: Sequence[float],
                   eval_points: Sequence[Sequence[float]], baseline: float,
                   title: str = "DQN on CartPole-v1") -> str:
    """Episode returns while learning (and their running mean), greedy evaluations, and a
    random policy's mean return, against environment steps."""
    from shendu.report.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    r = np.asarray(returns, dtype=float)
    ax.plot(steps, r, ".", ms=2, alpha=0.35, color="tab:blue", label="training episodes")
    if len(r) >= 10:
        k = 10
        run = np.convolve(r, np.ones(k) / k, mode="valid")
        ax.plot(np.asarray(steps)[k - 1:], run, color="tab:blue", label="running mean (10)")
    if len(eval_points):
        e = np.asarray(eval_points, dtype=float)
        ax.plot(e[:, 0], e[:, 1], "o-", color="tab:green", ms=3, label="greedy evaluation")
    ax.axhline(baseline, color="tab:red", ls="--", label=f"random policy ({baseline:.0f})")
    ax.axhline(475, color="gray", ls=":", lw=1, label="solved (475)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)
