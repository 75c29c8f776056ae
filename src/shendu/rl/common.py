"""What every shendu agent shares: the network used as a plain NumPy function while acting,
the environment loop's bookkeeping (history, progress bar, callbacks), saving, and
:func:`evaluate_policy`."""

from __future__ import annotations

import numpy as np

from shendu.rl.envs import env_id_of, make_env

__all__ = ["BaseAgent", "BaseCallback", "CallbackList", "EvalCallback", "StopTrainingOnReward",
           "evaluate_policy", "mlp", "numpy_forward"]


def mlp(n_in: int, n_out: int, hidden=(64, 64), activation: str = "relu"):
    """``Linear -> act -> ... -> Linear``: the default network of the agents."""
    from shendu import nn

    acts = {"relu": nn.ReLU, "tanh": nn.Tanh}
    if activation not in acts:
        raise ValueError(f"mlp: activation must be one of {sorted(acts)}, got {activation!r}")
    layers, d = [], n_in
    for h in hidden:
        layers += [nn.Linear(d, int(h)), acts[activation]()]
        d = int(h)
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


def numpy_forward(module):
    """``module`` as a function of a NumPy batch, for acting (no graph is recorded).

    A ``Sequential`` of ``Linear``, ``ReLU``, ``Tanh`` and ``Flatten`` layers becomes a few
    NumPy calls reading the live parameter arrays — the same arithmetic as the layers'
    forward (``x @ W.T + b``), without building tensors: at batch size 1 the per-op
    bookkeeping is most of the cost. Any other module is called under ``no_grad``.
    """
    from shendu import nn
    from shendu.autograd import no_grad
    from shendu.tensor import Tensor

    steps = []
    if type(module) is nn.Sequential:
        for layer in module:
            t = type(layer)
            if t is nn.Linear:
                steps.append(("linear", layer))
            elif t is nn.ReLU:
                steps.append(("relu", None))
            elif t is nn.Tanh:
                steps.append(("tanh", None))
            elif t is nn.Flatten and layer.start_dim == 1 and layer.end_dim == -1:
                steps.append(("flatten", None))
            else:
                steps = None
                break
    else:
        steps = None

    if steps is None:
        def forward(x: np.ndarray) -> np.ndarray:
            with no_grad():
                return module(Tensor(x)).data
        return forward

    def forward(x: np.ndarray) -> np.ndarray:
        owned = False                    # never write into the caller's array
        for kind, layer in steps:
            if kind == "linear":
                ps = layer._parameters        # read each call: a replaced Parameter counts
                x = x @ ps["weight"].data.T
                b = ps.get("bias")
                if b is not None:
                    x += b.data
                owned = True
            elif kind == "relu":
                x = np.maximum(x, 0, out=x if owned else None)
                owned = True
            elif kind == "tanh":
                x = np.tanh(x, out=x if owned else None)
                owned = True
            else:
                x = x.reshape(len(x), -1)
        return x
    return forward


# ------------------------------------------------------------------ callbacks
class BaseCallback:
    """Called by ``learn``: ``on_training_start(agent)``, then ``on_step(agent)`` after every
    environment step (return ``False`` to stop learning), then ``on_training_end(agent)``."""

    def on_training_start(self, agent) -> None:
        pass

    def on_step(self, agent) -> bool:
        return True

    def on_training_end(self, agent) -> None:
        pass


class CallbackList(BaseCallback):
    """Several callbacks in order; learning stops when any of them says so."""

    def __init__(self, callbacks) -> None:
        self.callbacks = list(callbacks)

    def on_training_start(self, agent) -> None:
        for c in self.callbacks:
            c.on_training_start(agent)

    def on_step(self, agent) -> bool:
        go = True
        for c in self.callbacks:
            go = c.on_step(agent) is not False and go
        return go

    def on_training_end(self, agent) -> None:
        for c in self.callbacks:
            c.on_training_end(agent)


class _FunctionCallback(BaseCallback):
    def __init__(self, fn) -> None:
        self.fn = fn

    def on_step(self, agent) -> bool:
        return self.fn(agent) is not False


def as_callback(callback) -> BaseCallback:
    if callback is None:
        return BaseCallback()
    if isinstance(callback, BaseCallback):
        return callback
    if isinstance(callback, (list, tuple)):
        return CallbackList([as_callback(c) for c in callback])
    if callable(callback):
        return _FunctionCallback(callback)
    raise TypeError(f"callback must be a BaseCallback, a function of the agent or a list of "
                    f"them, got {type(callback).__name__}")


class EvalCallback(BaseCallback):
    """Every ``eval_freq`` environment steps, play ``n_eval_episodes`` greedy episodes on
    ``eval_env`` and record ``(step, mean, std)`` in ``agent.history["eval"]``.

    With ``reward_threshold`` set, learning stops as soon as the mean reaches it — the
    "solved" early stop. ``confirm_episodes`` (default 100, Gymnasium's definition of
    solved) re-checks a mean that reached the threshold on that many further episodes
    before stopping, so a lucky short evaluation does not end training. Evaluation steps
    are not counted in the agent's ``num_timesteps``.
    """

    def __init__(self, eval_env, eval_freq: int = 2500, n_eval_episodes: int = 10,
                 reward_threshold: float | None = None, confirm_episodes: int = 100,
                 seed: int | None = None, verbose: bool = False) -> None:
        if eval_freq < 1 or n_eval_episodes < 1:
            raise ValueError(f"EvalCallback: eval_freq and n_eval_episodes must be >= 1, got "
                             f"{eval_freq} and {n_eval_episodes}")
        self.eval_env = make_env(eval_env)
        self.eval_freq, self.n_eval_episodes = int(eval_freq), int(n_eval_episodes)
        self.reward_threshold, self.confirm_episodes = reward_threshold, int(confirm_episodes)
        self.seed, self.verbose = seed, verbose
        self._seeded = False
        self.solved_at: int | None = None

    def _evaluate(self, agent, n: int) -> tuple[float, float]:
        seed = None
        if not self._seeded:
            seed, self._seeded = self.seed, True
        return evaluate_policy(agent, self.eval_env, n, deterministic=True, seed=seed)

    def on_step(self, agent) -> bool:
        if agent.num_timesteps % self.eval_freq:
            return True
        mean, std = self._evaluate(agent, self.n_eval_episodes)
        agent.history.setdefault("eval", []).append([agent.num_timesteps, mean, std])
        if self.verbose:
            print(f"step {agent.num_timesteps}: eval return {mean:.1f} ± {std:.1f}")
        if self.reward_threshold is None or mean < self.reward_threshold:
            return True
        if self.confirm_episodes > self.n_eval_episodes:
            mean, std = self._evaluate(agent, self.confirm_episodes)
            agent.history["eval"].append([agent.num_timesteps, mean, std])
            if mean < self.reward_threshold:
                return True
        self.solved_at = agent.num_timesteps
        return False


class StopTrainingOnReward(BaseCallback):
    """Stop when the mean return of the last ``window`` training episodes reaches
    ``threshold`` (training episodes explore, so this is a cheaper, rougher test than
    :class:`EvalCallback`)."""

    def __init__(self, threshold: float, window: int = 20) -> None:
        self.threshold, self.window = float(threshold), int(window)

    def on_step(self, agent) -> bool:
        r = agent.history["episode_returns"][-self.window:]
        return not (len(r) == self.window and float(np.mean(r)) >= self.threshold)


# ------------------------------------------------------------------ evaluation
def evaluate_policy(agent, env, n_eval_episodes: int = 10, deterministic: bool = True,
                    seed: int | None = None, return_episode_rewards: bool = False,
                    max_episode_steps: int | None = None):
    """Play ``n_eval_episodes`` episodes of ``agent`` on ``env`` (an environment or an id)
    and return ``(mean, std)`` of their returns, as Stable-Baselines3's function;
    ``return_episode_rewards=True`` gives the lists ``(returns, lengths)`` instead.
    ``seed`` seeds the first reset (and so every later one)."""
    env = make_env(env)
    if n_eval_episodes < 1:
        raise ValueError(f"evaluate_policy: n_eval_episodes must be >= 1, got "
                         f"{n_eval_episodes}")
    returns, lengths = [], []
    obs, _ = env.reset(seed=seed)
    for _ in range(n_eval_episodes):
        total, n, done = 0.0, 0, False
        while not done:
            action, _ = agent.predict(obs, deterministic=deterministic)
            obs, r, term, trunc, _ = env.step(action)
            total += float(r)
            n += 1
            done = term or trunc or (max_episode_steps is not None and n >= max_episode_steps)
        returns.append(total)
        lengths.append(n)
        obs, _ = env.reset()
    if return_episode_rewards:
        return returns, lengths
    return float(np.mean(returns)), float(np.std(returns))


# ------------------------------------------------------------------ base agent
def _rng_state_to_json(state: dict) -> dict:
    s = state["state"]
    return {"bit_generator": state["bit_generator"], "state": str(s["state"]),
            "inc": str(s["inc"]), "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"])}


def _rng_from_json(d: dict) -> np.random.Generator:
    g = np.random.Generator(np.random.PCG64())
    g.bit_generator.state = {"bit_generator": "PCG64",
                             "state": {"state": int(d["state"]), "inc": int(d["inc"])},
                             "has_uint32": int(d["has_uint32"]), "uinteger": int(d["uinteger"])}
    return g


class BaseAgent:
    """Environment loop, history, progress bar and saving shared by :class:`DQN` and
    :class:`REINFORCE`. Subclasses set ``_networks`` (attribute names of their modules),
    ``_optimizers`` and implement ``_learn`` and ``_act``."""

    _networks: tuple = ()
    _optimizers: tuple = ()
    _buffers: tuple = ()

    def _setup_env(self, env, seed) -> None:
        from shendu.backend import manual_seed

        self.env = make_env(env) if env is not None else None
        self.env_id = env_id_of(self.env) if self.env is not None else None
        self.seed = seed
        if seed is not None:
            manual_seed(int(seed))          # the networks' initial weights
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.num_timesteps = 0
        self.history = {"episode_returns": [], "episode_lengths": [], "episode_end_steps": [],
                        "losses": [], "loss_steps": []}
        self._last_obs = None

    # ---------------------------------------------------------------- environment
    def _reset(self):
        seed = None
        if self._last_obs is None and self.seed is not None:
            seed = int(self.seed)
            self.env.action_space.seed(seed)
        obs, _ = self.env.reset(seed=seed)
        return np.asarray(obs, dtype=np.float32)

    def _need_env(self, where: str):
        if self.env is None:
            raise RuntimeError(f"{type(self).__name__}.{where}: the agent has no environment; "
                               "pass one with set_env(env) (a loaded agent has none)")

    def set_env(self, env) -> None:
        """Give the agent an environment (e.g. after loading) with the same spaces."""
        env = make_env(env)
        self._check_env(env)
        self.env, self.env_id = env, env_id_of(env) or self.env_id
        self._last_obs = None

    def _episode_done(self, ret: float, length: int, bar) -> None:
        h = self.history
        h["episode_returns"].append(float(ret))
        h["episode_lengths"].append(int(length))
        h["episode_end_steps"].append(int(self.num_timesteps))
        if bar is not None:
            recent = h["episode_returns"][-20:]
            bar.set_postfix_str(f"return {ret:.1f}, mean(20) {np.mean(recent):.1f}",
                                refresh=False)

    def _progress(self, total: int, on: bool):
        if not on:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=type(self).__name__, unit="step", dynamic_ncols=True,
                    mininterval=0.5)

    # ---------------------------------------------------------------- acting
    def predict(self, observation, deterministic: bool = True):
        """``(action, None)`` for one observation — or ``(actions, None)`` for a batch — as
        Stable-Baselines3's ``predict`` (the ``None`` is the recurrent state it returns)."""
        obs = np.asarray(observation, dtype=np.float32)
        single = obs.shape == self.obs_shape
        if not single and obs.shape[1:] != self.obs_shape:
            raise ValueError(f"{type(self).__name__}.predict expected an observation of shape "
                             f"{self.obs_shape} (or a batch of them), got {obs.shape}")
        batch = obs.reshape((1,) + self.obs_shape) if single else obs
        actions = self._act(batch, deterministic)
        return (int(actions[0]) if single else actions), None

    def learn(self, total_timesteps: int, callback=None, progress_bar: bool = False,
              reset_num_timesteps: bool = False):
        """Interact with the environment for ``total_timesteps`` more steps (fewer if a
        callback returns ``False``) and learn from it; returns the agent."""
        self._need_env("learn")
        if int(total_timesteps) < 1:
            raise ValueError(f"{type(self).__name__}.learn: total_timesteps must be >= 1, got "
                             f"{total_timesteps}")
        if reset_num_timesteps:
            self.num_timesteps = 0
        cb = as_callback(callback)
        bar = self._progress(int(total_timesteps), progress_bar)
        cb.on_training_start(self)
        try:
            self._learn(int(total_timesteps), cb, bar)
        finally:
            if bar is not None:
                bar.close()
            cb.on_training_end(self)
        return self

    # ---------------------------------------------------------------- saving
    def _config(self) -> dict:
        return {k: getattr(self, k) for k in self._config_names}

    def _shendu_state(self):
        """For ``shendu.save``: config, networks, optimizers, counters, history and the
        exploration generator as ``(arrays, JSON)`` (see :mod:`shendu.io`); the replay
        buffer only when ``save_replay_buffer`` is set."""
        from shendu.io import pack_state

        tree = {"config": self._config(), "env_id": self.env_id,
                "obs_shape": list(self.obs_shape), "n_actions": self.n_actions,
                "num_timesteps": int(self.num_timesteps), "history": self.history,
                "rng": _rng_state_to_json(self.rng.bit_generator.state),
                "nets": {k: getattr(self, k) for k in self._networks},
                "opts": {k: getattr(self, k) for k in self._optimizers}}
        if getattr(self, "save_replay_buffer", False):
            tree["buffers"] = {k: getattr(self, k).state() for k in self._buffers}
        arrays, skeleton = pack_state(tree, prefix="")
        return arrays, {"via": "agent", "state": skeleton}

    @classmethod
    def _shendu_restore(cls, arrays, state, path="<state>"):
        from shendu.io import FileFormatError, unpack_state

        if not isinstance(state, dict) or state.get("via") != "agent":
            raise FileFormatError(path, f"malformed {cls.__name__} state")
        tree = unpack_state(state.get("state"), arrays, path)
        agent = cls.__new__(cls)
        for k, v in tree["config"].items():
            if k in cls._config_names:
                setattr(agent, k, v)
        agent.env, agent.env_id = None, tree["env_id"]
        agent.obs_shape, agent.n_actions = tuple(tree["obs_shape"]), int(tree["n_actions"])
        agent.num_timesteps, agent.history = int(tree["num_timesteps"]), tree["history"]
        agent.rng = _rng_from_json(tree["rng"])
        agent._last_obs = None
        for k in cls._networks:
            setattr(agent, k, tree["nets"][k])
        for k in cls._optimizers:
            setattr(agent, k, tree["opts"][k])
        agent._after_load(tree.get("buffers"))
        return agent

    def save(self, path) -> None:
        """``shendu.save(self, path)``: safetensors weights + JSON (no code is ever
        deserialised)."""
        from shendu.io import save

        save(self, path)

    @classmethod
    def load(cls, path, env=None):
        """The agent saved at ``path`` (optionally given an environment to go on learning)."""
        from shendu.io import load

        agent = load(path)
        if not isinstance(agent, cls):
            raise TypeError(f"{cls.__name__}.load: {path} holds a {type(agent).__name__}")
        if env is not None:
            agent.set_env(env)
        return agent


def linear_schedule(start: float, end: float, fraction: float, progress: float) -> float:
    """``start`` going linearly to ``end`` over the first ``fraction`` of training."""
    if fraction <= 0:
        return end
    return start + (end - start) * min(1.0, progress / fraction)
