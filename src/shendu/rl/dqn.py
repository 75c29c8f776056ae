r"""Deep Q-learning (Mnih et al. 2013, 2015) with Double DQN targets (van Hasselt, Guez &
Silver 2016) and the Huber loss.

The Q-network :math:`Q(s, \cdot; \theta)` is trained on mini-batches drawn from a replay
buffer toward the target

.. math::
    y = r + \gamma\,(1 - \text{terminated})\;
        Q\big(s', \operatorname{argmax}_{a'} Q(s', a'; \theta);\ \theta^-\big)

where :math:`\theta^-` is a copy of the weights refreshed every ``target_update_interval``
environment steps (plain DQN takes :math:`\max_{a'} Q(s', a'; \theta^-)` instead; set
``double_q=False``). The loss is the Huber loss :math:`\ell_1` beyond ``|y - Q| = 1``
(Mnih et al.'s "error clipping"), gradients are clipped to norm ``max_grad_norm``, and the
behaviour policy is :math:`\epsilon`-greedy with :math:`\epsilon` going linearly from
``exploration_initial_eps`` to ``exploration_final_eps`` over the first
``exploration_fraction`` of ``learn``'s steps.
"""

from __future__ import annotations

import copy

import numpy as np

from shendu.rl.buffers import ReplayBuffer
from shendu.rl.common import BaseAgent, linear_schedule, mlp, numpy_forward
from shendu.rl.envs import check_box_observations, check_discrete_actions

__all__ = ["DQN"]


class DQN(BaseAgent):
    """Deep Q-network agent with Stable-Baselines3's API.

    Example::

        agent = DQN("CartPole-v1", seed=0)
        agent.learn(100_000, callback=EvalCallback("CartPole-v1", reward_threshold=490))
        mean, std = evaluate_policy(agent, "CartPole-v1", n_eval_episodes=100)

    Parameters
    ----------
    env
        A Gymnasium environment with a ``Discrete`` action space and ``Box`` observations,
        or its id.
    q_net
        Any shendu ``nn.Module`` mapping a batch of observations (B, *obs_shape) to Q-values
        (B, n_actions); default ``mlp(obs_dim, n_actions, net_arch)``.
    learning_rate, batch_size, gamma
        Adam step size, mini-batch size and discount.
    buffer_size, learning_starts
        Replay capacity and the number of random-policy steps before learning begins.
    train_freq, gradient_steps
        ``gradient_steps`` updates every ``train_freq`` environment steps.
    target_update_interval
        Environment steps between copies of the weights into the target network.
    exploration_fraction, exploration_initial_eps, exploration_final_eps
        The :math:`\\epsilon` schedule (fraction of the ``total_timesteps`` of ``learn``).
    double_q, max_grad_norm
        Double-DQN targets; gradient-norm clipping (``None``: none).
    seed
        Seeds the network's initial weights (``shendu.manual_seed``), the exploration and
        replay sampling generator and the environment's first reset: the same seed gives
        the same run, bit for bit.
    save_replay_buffer
        Whether ``shendu.save`` stores the replay buffer too (default no).
    """

    _networks = ("q_net", "q_net_target")
    _optimizers = ("optimizer",)
    _buffers = ("replay_buffer",)
    _config_names = ("learning_rate", "buffer_size", "learning_starts", "batch_size", "gamma",
                     "train_freq", "gradient_steps", "target_update_interval",
                     "exploration_fraction", "exploration_initial_eps",
                     "exploration_final_eps", "double_q", "max_grad_norm", "net_arch", "seed",
                     "save_replay_buffer")

    def __init__(self, env, q_net=None, *, learning_rate: float = 1e-3,
                 buffer_size: int = 50_000, learning_starts: int = 1000, batch_size: int = 64,
                 gamma: float = 0.99, train_freq: int = 4, gradient_steps: int = 2,
                 target_update_interval: int = 500, exploration_fraction: float = 0.1,
                 exploration_initial_eps: float = 1.0, exploration_final_eps: float = 0.02,
                 double_q: bool = True, max_grad_norm: float | None = 10.0,
                 net_arch=(64, 64), seed: int | None = None,
                 save_replay_buffer: bool = False) -> None:
        from shendu.optim import Adam

        for name, v in (("buffer_size", buffer_size), ("batch_size", batch_size),
                        ("train_freq", train_freq), ("gradient_steps", gradient_steps),
                        ("target_update_interval", target_update_interval)):
            if int(v) < 1:
                raise ValueError(f"DQN: {name} must be >= 1, got {v}")
        if not learning_rate > 0:
            raise ValueError(f"DQN: learning_rate must be > 0, got {learning_rate}")
        if not 0 <= gamma <= 1:
            raise ValueError(f"DQN: gamma must be in [0, 1], got {gamma}")
        self.learning_rate, self.buffer_size = float(learning_rate), int(buffer_size)
        self.learning_starts, self.batch_size = int(learning_starts), int(batch_size)
        self.gamma, self.train_freq = float(gamma), int(train_freq)
        self.gradient_steps = int(gradient_steps)
        self.target_update_interval = int(target_update_interval)
        self.exploration_fraction = float(exploration_fraction)
        self.exploration_initial_eps = float(exploration_initial_eps)
        self.exploration_final_eps = float(exploration_final_eps)
        self.double_q = bool(double_q)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.net_arch = [int(h) for h in net_arch]
        self.save_replay_buffer = bool(save_replay_buffer)
        self._setup_env(env, seed)
        self._need_env("__init__")
        self.n_actions = check_discrete_actions(self.env, "DQN")
        self.obs_shape = check_box_observations(self.env, "DQN")
        self.q_net = q_net if q_net is not None else \
            mlp(int(np.prod(self.obs_shape)), self.n_actions, self.net_arch)
        self._check_q_net()
        self.q_net_target = copy.deepcopy(self.q_net)
        self.optimizer = Adam(self.q_net.parameters(), lr=self.learning_rate)
        self.replay_buffer = ReplayBuffer(self.buffer_size, self.obs_shape)
        self.exploration_rate = self.exploration_initial_eps
        self._compile()

    # ---------------------------------------------------------------- checks
    def _check_q_net(self) -> None:
        from shendu.nn import Module

        if not isinstance(self.q_net, Module):
            raise TypeError(f"DQN: q_net must be a shendu nn.Module, got "
                            f"{type(self.q_net).__name__}")
        probe = np.zeros((2,) + self.obs_shape, dtype=np.float32)
        try:
            out = numpy_forward(self.q_net)(probe)
        except Exception as e:
            raise ValueError(f"DQN: the Q-network cannot take observations of shape "
                             f"{self.obs_shape} (batch first): {e}") from None
        if out.shape != (2, self.n_actions):
            env = self.env_id or "the environment"
            raise ValueError(f"DQN: the Q-network must output one value per action, shape "
                             f"(batch, {self.n_actions}) for {env}'s {self.n_actions} actions, "
                             f"but it outputs shape {tuple(out.shape[1:]) or '()'} per "
                             "observation")

    def _check_env(self, env) -> None:
        n = check_discrete_actions(env, "DQN")
        shape = check_box_observations(env, "DQN")
        if n != self.n_actions or shape != self.obs_shape:
            raise ValueError(f"DQN.set_env: the agent was made for {self.n_actions} actions "
                             f"and observations {self.obs_shape}, the environment has {n} and "
                             f"{shape}")

    def _compile(self) -> None:
        self._params = list(self.q_net.parameters())
        self._q = numpy_forward(self.q_net)
        self._q_target = numpy_forward(self.q_net_target)

    def _after_load(self, buffers) -> None:
        self._compile()
        self.exploration_rate = self.exploration_final_eps
        if buffers and "replay_buffer" in buffers:
            self.replay_buffer = ReplayBuffer.from_state(buffers["replay_buffer"])
        else:
            self.replay_buffer = ReplayBuffer(self.buffer_size, self.obs_shape)

    # ---------------------------------------------------------------- acting
    def q_values(self, observations) -> np.ndarray:
        """Q-values (B, n_actions) of a batch of observations."""
        return self._q(np.asarray(observations, dtype=np.float32))

    def _act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        if not deterministic:
            explore = self.rng.random(len(obs)) < self.exploration_rate
            if explore.all():
                return self.rng.integers(0, self.n_actions, size=len(obs))
            greedy = self._q(obs).argmax(axis=1)
            return np.where(explore, self.rng.integers(0, self.n_actions, size=len(obs)),
                            greedy)
        return self._q(obs).argmax(axis=1)

    # ---------------------------------------------------------------- learning
    def _train_step(self) -> float:
        from shendu.functional import gather, smooth_l1_loss
        from shendu.nn.utils import clip_grad_norm_
        from shendu.tensor import Tensor

        obs, actions, rewards, next_obs, terminated = \
            self.replay_buffer.sample(self.batch_size, self.rng)
        q_next = self._q_target(next_obs)                                  # (B, A)
        if self.double_q:
            best = self._q(next_obs).argmax(axis=1)                        # (B,)
            v_next = q_next[np.arange(len(best)), best]
        else:
            v_next = q_next.max(axis=1)
        target = rewards + np.float32(self.gamma) * (1.0 - terminated) * v_next  # (B,)
        q = self.q_net(Tensor(obs))                                        # (B, A)
        q_taken = gather(q, 1, actions[:, None]).reshape(-1)               # (B,)
        loss = smooth_l1_loss(q_taken, Tensor(target.astype(np.float32)))
        self.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            clip_grad_norm_(self._params, self.max_grad_norm)
        self.optimizer.step()
        return float(loss.data)

    def _update_target(self) -> None:
        for p_t, p in zip(self.q_net_target.parameters(), self._params):
            np.copyto(p_t.data, p.data)

    def _learn(self, total: int, cb, bar) -> None:
        env, buf, h = self.env, self.replay_buffer, self.history
        obs = self._last_obs if self._last_obs is not None else self._reset()
        ep_ret, ep_len = getattr(self, "_ep", (0.0, 0))
        for i in range(total):
            self.exploration_rate = linear_schedule(
                self.exploration_initial_eps, self.exploration_final_eps,
                self.exploration_fraction, i / total)
            if self.num_timesteps < self.learning_starts:
                action = int(self.rng.integers(0, self.n_actions))
            else:
                action = int(self._act(obs[None], deterministic=False)[0])
            next_obs, reward, term, trunc, _ = env.step(action)
            next_obs = np.asarray(next_obs, dtype=np.float32)
            buf.add(obs, action, reward, next_obs, term)
            self.num_timesteps += 1
            ep_ret += float(reward)
            ep_len += 1
            if term or trunc:
                self._episode_done(ep_ret, ep_len, bar)
                ep_ret, ep_len = 0.0, 0
                obs = np.asarray(env.reset()[0], dtype=np.float32)
            else:
                obs = next_obs
            self._last_obs = obs
            n = self.num_timesteps
            if n > self.learning_starts and n % self.train_freq == 0:
                for _ in range(self.gradient_steps):
                    h["losses"].append(self._train_step())
                    h["loss_steps"].append(n)
            if n % self.target_update_interval == 0:
                self._update_target()
            if bar is not None:
                bar.update(1)
            self._ep = (ep_ret, ep_len)
            if not cb.on_step(self):
                break
