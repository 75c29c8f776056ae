"""Reinforcement learning on Gymnasium and self-play board games (``shendu.rl``).

Two lines of work that taught neural networks to play games:

* **deep Q-learning** — :class:`DQN` (Mnih et al. 2013/2015: experience replay, a target
  network, epsilon-greedy exploration; Double DQN, van Hasselt et al. 2016; the Huber loss),
  and beside it the policy-gradient family, :class:`REINFORCE` with a learned baseline
  (Williams 1992), both with Stable-Baselines3's API (``learn``, ``predict``,
  :func:`evaluate_policy`, ``shendu.save``/``shendu.load``);
* **self-play** — :class:`TDSelfPlay`, a value network that learns tic-tac-toe by playing
  itself with temporal-difference learning (Tesauro's TD-Gammon, 1992), on the small
  Gymnasium-style :class:`TicTacToeEnv`.

Gymnasium is imported only when an environment is made, never by ``import shendu``.
"""

from shendu.rl.buffers import ReplayBuffer
from shendu.rl.common import (
    BaseCallback,
    CallbackList,
    EvalCallback,
    StopTrainingOnReward,
    evaluate_policy,
    mlp,
)
from shendu.rl.dqn import DQN
from shendu.rl.envs import make_env
from shendu.rl.pg import REINFORCE
from shendu.rl.tictactoe import (
    MinimaxPlayer,
    RandomPlayer,
    TDSelfPlay,
    TicTacToeEnv,
    play_match,
)

__all__ = ["DQN", "REINFORCE", "ReplayBuffer", "evaluate_policy", "BaseCallback",
           "CallbackList", "EvalCallback", "StopTrainingOnReward", "mlp", "make_env",
           "TicTacToeEnv", "TDSelfPlay", "MinimaxPlayer", "RandomPlayer", "play_match"]
