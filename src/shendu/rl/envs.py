"""Gymnasium environments for shendu's agents: made by id (imported lazily, so ``import
shendu`` never imports Gymnasium), checked once, with one-sentence errors."""

from __future__ import annotations

__all__ = ["make_env", "env_id_of", "check_discrete_actions", "check_box_observations"]


def _gym():
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError("shendu.rl needs Gymnasium for its environments: pip install "
                          "'shendu[rl]' (gymnasium[classic-control])") from None
    return gymnasium


def make_env(env, render_mode: str | None = None):
    """``env`` itself if it is an environment, else ``gymnasium.make(env)`` for an id such as
    ``"CartPole-v1"``; an unknown id is a ``ValueError`` naming it."""
    if not isinstance(env, str):
        if not (hasattr(env, "step") and hasattr(env, "reset") and hasattr(env, "action_space")):
            raise TypeError(f"expected a Gymnasium environment or an environment id, got "
                            f"{type(env).__name__}")
        return env
    gym = _gym()
    if env not in gym.registry:
        near = sorted(k for k in gym.registry if k.split("-")[0].lower()
                      in env.lower() or env.split("-")[0].lower() in k.lower())[:3]
        hint = f" (did you mean {', '.join(near)}?)" if near else \
            " (e.g. CartPole-v1, Acrobot-v1, MountainCar-v0, LunarLander-v3)"
        raise ValueError(f"unknown environment id {env!r}: Gymnasium has no environment "
                         f"registered under that name{hint}")
    kwargs = {} if render_mode is None else {"render_mode": render_mode}
    return gym.make(env, **kwargs)


def env_id_of(env) -> str | None:
    """The registered id of ``env`` (``None`` for an environment made by hand)."""
    spec = getattr(env, "spec", None)
    return getattr(spec, "id", None)


def _name(env) -> str:
    return env_id_of(env) or type(getattr(env, "unwrapped", env)).__name__


def check_discrete_actions(env, who: str) -> int:
    """The number of actions of ``env``; a ``ValueError`` when its actions are not discrete."""
    space = env.action_space
    n = getattr(space, "n", None)
    if type(space).__name__ != "Discrete" or n is None:
        raise ValueError(f"{who} needs a discrete action space (gymnasium.spaces.Discrete), but "
                         f"{_name(env)} has {space}")
    if int(getattr(space, "start", 0)) != 0:
        raise ValueError(f"{who} needs actions numbered from 0, but {_name(env)} has {space}")
    return int(n)


def check_box_observations(env, who: str) -> tuple:
    """The observation shape of ``env``; a ``ValueError`` unless observations are a ``Box``."""
    space = env.observation_space
    if type(space).__name__ != "Box":
        raise ValueError(f"{who} needs vector observations (gymnasium.spaces.Box), but "
                         f"{_name(env)} has {space}")
    return tuple(int(s) for s in space.shape)
