r"""REINFORCE with a learned baseline (Williams 1992; Sutton & Barto 2018, §13.4): the
policy-gradient family beside :class:`~shendu.rl.DQN`, on the same API.

The policy :math:`\pi(a \mid s; \theta)` (a network of logits) plays ``n_episodes``
whole episodes; each step's return :math:`G_t = \sum_k \gamma^k r_{t+k}` is compared with
a value network's estimate :math:`b(s_t) = V(s_t; w)`, and the update follows

.. math::
    \nabla_\theta \tfrac{1}{N}\sum_t -\log \pi(a_t \mid s_t)\,\hat A_t
      - \beta\, H(\pi(\cdot \mid s_t)),
    \qquad \hat A_t = G_t - V(s_t)\ \text{(normalised)},

while :math:`V` is regressed on :math:`G_t` (squared error). An episode cut by a time
limit bootstraps its tail from :math:`V` of the last observation.
"""

from __future__ import annotations

import numpy as np

from shendu.rl.common import BaseAgent, mlp, numpy_forward
from shendu.rl.envs import check_box_observations, check_discrete_actions

__all__ = ["REINFORCE"]


class REINFORCE(BaseAgent):
    """Monte-Carlo policy gradient with a value baseline, Stable-Baselines3-style API.

    Parameters
    ----------
    env
        A Gymnasium environment (``Discrete`` actions, ``Box`` observations) or its id.
    policy_net, value_net
        shendu modules (B, *obs) -> (B, n_actions) logits and (B, *obs) -> (B, 1); default
        MLPs of ``net_arch`` with tanh.
    learning_rate, value_learning_rate
        Adam step sizes of the policy and of the baseline.
    gamma, n_episodes, ent_coef, normalize_advantage
        Discount, episodes per update, entropy bonus, advantage normalisation.
    seed
        Seeds the initial weights, the action sampling and the environment.
    """

    _networks = ("policy_net", "value_net")
    _optimizers = ("policy_optimizer", "value_optimizer")
    _config_names = ("learning_rate", "value_learning_rate", "gamma", "n_episodes",
                     "ent_coef", "normalize_advantage", "net_arch", "seed")

    def __init__(self, env, policy_net=None, value_net=None, *, learning_rate: float = 3e-3,
                 value_learning_rate: float = 1e-2, gamma: float = 0.99, n_episodes: int = 4,
                 ent_coef: float = 0.0, normalize_advantage: bool = True,
                 net_arch=(64, 64), seed: int | None = None) -> None:
        from shendu.optim import Adam

        if not learning_rate > 0 or not value_learning_rate > 0:
            raise ValueError("REINFORCE: learning rates must be > 0, got "
                             f"{learning_rate} and {value_learning_rate}")
        if int(n_episodes) < 1:
            raise ValueError(f"REINFORCE: n_episodes must be >= 1, got {n_episodes}")
        self.learning_rate, self.value_learning_rate = float(learning_rate), \
            float(value_learning_rate)
        self.gamma, self.n_episodes = float(gamma), int(n_episodes)
        self.ent_coef, self.normalize_advantage = float(ent_coef), bool(normalize_advantage)
        self.net_arch = [int(h) for h in net_arch]
        self._setup_env(env, seed)
        self._need_env("__init__")
        self.n_actions = check_discrete_actions(self.env, "REINFORCE")
        self.obs_shape = check_box_observations(self.env, "REINFORCE")
        d = int(np.prod(self.obs_shape))
        self.policy_net = policy_net if policy_net is not None else \
            mlp(d, self.n_actions, self.net_arch, "tanh")
        self.value_net = value_net if value_net is not None else \
            mlp(d, 1, self.net_arch, "tanh")
        self._check_net(self.policy_net, self.n_actions, "policy network", "action")
        self._check_net(self.value_net, 1, "value network", "value")
        self.policy_optimizer = Adam(self.policy_net.parameters(), lr=self.learning_rate)
        self.value_optimizer = Adam(self.value_net.parameters(), lr=self.value_learning_rate)
        self._compile()

    def _check_net(self, net, n_out: int, what: str, per: str) -> None:
        from shendu.nn import Module

        if not isinstance(net, Module):
            raise TypeError(f"REINFORCE: the {what} must be a shendu nn.Module, got "
                            f"{type(net).__name__}")
        out = numpy_forward(net)(np.zeros((2,) + self.obs_shape, dtype=np.float32))
        if out.shape != (2, n_out):
            raise ValueError(f"REINFORCE: the {what} must output shape (batch, {n_out}) (one "
                             f"{per}{'' if n_out == 1 else ' each'}), but it outputs "
                             f"{tuple(out.shape[1:])} per observation")

    def _check_env(self, env) -> None:
        n = check_discrete_actions(env, "REINFORCE")
        shape = check_box_observations(env, "REINFORCE")
        if n != self.n_actions or shape != self.obs_shape:
            raise ValueError(f"REINFORCE.set_env: the agent was made for {self.n_actions} "
                             f"actions and observations {self.obs_shape}, the environment "
                             f"has {n} and {shape}")

    def _compile(self) -> None:
        self._logits = numpy_forward(self.policy_net)
        self._value = numpy_forward(self.value_net)

    def _after_load(self, buffers) -> None:
        self._compile()

    def action_probabilities(self, observations) -> np.ndarray:
        """:math:`\\pi(\\cdot \\mid s)` for a batch of observations, (B, n_actions)."""
        z = self._logits(np.asarray(observations, dtype=np.float32)).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def _act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        if deterministic:
            return self._logits(obs).argmax(axis=1)
        p = self.action_probabilities(obs)
        u = self.rng.random((len(obs), 1))
        return np.minimum((p.cumsum(axis=1) < u).sum(axis=1), self.n_actions - 1)

    def _update(self, obs, actions, returns) -> tuple[float, float]:
        from shendu.functional import cross_entropy, log_softmax, mse_loss, softmax
        from shendu.tensor import Tensor

        x = Tensor(obs)
        v = self._value(obs)[:, 0]
        adv = returns - v
        if self.normalize_advantage and len(adv) > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        logits = self.policy_net(x)                                         # (N, A)
        nll = cross_entropy(logits, actions, reduction="none")              # -log pi(a|s)
        loss = (nll * Tensor(adv.astype(np.float32))).mean()
        if self.ent_coef:
            ent = -(softmax(logits, dim=1) * log_softmax(logits, dim=1)).sum(dim=1).mean()
            loss = loss - ent * self.ent_coef
        self.policy_optimizer.zero_grad()
        loss.backward()
        self.policy_optimizer.step()
        vloss = mse_loss(self.value_net(x), Tensor(returns[:, None].astype(np.float32)))
        self.value_optimizer.zero_grad()
        vloss.backward()
        self.value_optimizer.step()
        return float(loss.data), float(vloss.data)

    def _learn(self, total: int, cb, bar) -> None:
        env, h = self.env, self.history
        h.setdefault("value_losses", [])
        obs = self._reset()
        stop = False
        done_steps = 0
        while done_steps < total and not stop:
            batch_obs, batch_act, batch_ret = [], [], []
            for _ in range(self.n_episodes):
                ep_obs, ep_act, ep_rew = [], [], []
                while True:
                    a = int(self._act(obs[None], deterministic=False)[0])
                    nxt, r, term, trunc, _ = env.step(a)
                    ep_obs.append(obs)
                    ep_act.append(a)
                    ep_rew.append(float(r))
                    self.num_timesteps += 1
                    done_steps += 1
                    if bar is not None:
                        bar.update(1)
                    obs = np.asarray(nxt, dtype=np.float32)
                    if not cb.on_step(self):
                        stop = True
                    if term or trunc or stop or done_steps >= total:
                        break
                tail = 0.0 if term else float(self._value(obs[None])[0, 0])
                g, rets = tail, np.empty(len(ep_rew), dtype=np.float32)
                for t in range(len(ep_rew) - 1, -1, -1):
                    g = ep_rew[t] + self.gamma * g
                    rets[t] = g
                if term or trunc:
                    self._episode_done(sum(ep_rew), len(ep_rew), bar)
                    obs = np.asarray(env.reset()[0], dtype=np.float32)
                batch_obs += ep_obs
                batch_act += ep_act
                batch_ret.append(rets)
                if stop or done_steps >= total:
                    break
            pl, vl = self._update(np.stack(batch_obs), np.asarray(batch_act, dtype=np.int64),
                                  np.concatenate(batch_ret))
            h["losses"].append(pl)
            h["value_losses"].append(vl)
            h["loss_steps"].append(self.num_timesteps)
        self._last_obs = obs
