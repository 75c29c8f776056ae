r"""Tic-tac-toe learned by self-play with temporal-difference learning (Tesauro's
TD-Gammon, 1992, on the smallest board game).

One value network :math:`V(s)` scores an *afterstate* — the board just after a move —
from the point of view of the player who made it: +1 a win, 0 a draw, -1 a loss. Each
player picks the move whose afterstate scores highest (epsilon-greedy while learning);
an afterstate that ends the game is scored by the rules (win or draw), every other one by
the network. After the opponent has looked at its replies, the TD target of the mover's
afterstate :math:`s` is

.. math::  y(s) = -\gamma \max_{s' \in \text{replies}(s)} V_\text{opp}(s')

(the negamax form of TD(0): what is good for the opponent is bad for the mover), and
:math:`V` is regressed on :math:`y` with the squared error. Nothing else is given: no
hand-made evaluation, no search during training or play beyond scoring the legal moves.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from shendu.rl.common import numpy_forward

__all__ = ["TicTacToeEnv", "TDSelfPlay", "MinimaxPlayer", "RandomPlayer", "play_match",
           "winner", "legal_moves", "count_losses", "render_board"]

#: The eight winning lines as indices into the 3x3 board read row by row.
LINES = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 3, 6], [1, 4, 7], [2, 5, 8],
                  [0, 4, 8], [2, 4, 6]])
X, O = 1, -1


def _symmetries() -> np.ndarray:
    """The 8 symmetries of the square (rotations and reflections) as permutations of the 9
    squares: ``board[perm]`` is the transformed board."""
    g = np.arange(9).reshape(3, 3)
    out = []
    for k in range(4):
        r = np.rot90(g, k)
        out += [r.ravel(), r.T.ravel()]
    return np.array(out)


#: The 8 symmetries of the board, each a permutation of the 9 squares.
SYMMETRIES = _symmetries()
#: The same permutations applied to both 9-square halves of the 18 features.
_FEATURE_SYMMETRIES = np.concatenate([SYMMETRIES, SYMMETRIES + 9], axis=1)


def winner(board) -> int:
    """+1 if X has three in a row, -1 if O has, 0 otherwise."""
    s = np.asarray(board)[LINES].sum(axis=1)
    if (s == 3).any():
        return X
    if (s == -3).any():
        return O
    return 0


def legal_moves(board) -> np.ndarray:
    """The empty squares (0-8, row by row)."""
    return np.flatnonzero(np.asarray(board) == 0)


def to_move(board) -> int:
    """Whose turn it is: X (+1) when the counts are equal, else O (-1)."""
    return X if int(np.count_nonzero(board)) % 2 == 0 else O


def render_board(board) -> str:
    """The board as three text rows; empty squares show their number 1-9."""
    marks = {X: "X", O: "O"}
    cells = [marks.get(int(v), str(i + 1)) for i, v in enumerate(np.asarray(board))]
    rows = [" " + " | ".join(cells[r * 3:r * 3 + 3]) for r in range(3)]
    return "\n---+---+---\n".join(rows)


class TicTacToeEnv:
    """Tic-tac-toe in Gymnasium's interface (``reset``/``step``), for two players who take
    turns in the same environment.

    Observation: the board, 9 values row by row (+1 X, -1 O, 0 empty). Action: a square
    0-8. ``step`` returns the reward of the player who just moved (+1 for a win, 0
    otherwise); ``info`` holds ``"to_move"``, ``"legal_moves"`` and, at the end,
    ``"winner"``. An occupied or out-of-range square is a ``ValueError``.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.board = np.zeros(9, dtype=np.int8)
        self.done = False

    @property
    def action_space(self):
        from gymnasium.spaces import Discrete

        return Discrete(9)

    @property
    def observation_space(self):
        from gymnasium.spaces import Box

        return Box(-1, 1, shape=(9,), dtype=np.int8)

    def _info(self) -> dict:
        info = {"to_move": to_move(self.board), "legal_moves": legal_moves(self.board)}
        if self.done:
            info["winner"] = winner(self.board)
        return info

    def reset(self, seed: int | None = None, options=None):
        self.board = np.zeros(9, dtype=np.int8)
        self.done = False
        return self.board.copy(), self._info()

    def step(self, action):
        if self.done:
            raise ValueError("TicTacToeEnv.step: the game is over; call reset()")
        a = int(action)
        if not 0 <= a < 9:
            raise ValueError(f"TicTacToeEnv.step: squares are 0-8, got {action}")
        if self.board[a] != 0:
            raise ValueError(f"TicTacToeEnv.step: square {a} is already taken")
        self.board[a] = to_move(self.board)
        w = winner(self.board)
        self.done = w != 0 or not (self.board == 0).any()
        return self.board.copy(), float(w != 0), self.done, False, self._info()

    def render(self) -> str:
        return render_board(self.board)


# ------------------------------------------------------------------ perfect play
@cache
def _solve(key: bytes) -> int:
    """Game value for the player to move (+1 win, 0 draw, -1 loss) under perfect play."""
    b = np.frombuffer(key, dtype=np.int8)
    p = to_move(b)
    best = -2
    for m in legal_moves(b):
        nb = b.copy()
        nb[m] = p
        if winner(nb) != 0:
            return 1
        v = 0 if not (nb == 0).any() else -_solve(nb.tobytes())
        best = max(best, v)
        if best == 1:
            break
    return best


def minimax_moves(board) -> np.ndarray:
    """Every move that keeps the best game value for the player to move."""
    b = np.asarray(board, dtype=np.int8)
    p = to_move(b)
    vals = []
    moves = legal_moves(b)
    for m in moves:
        nb = b.copy()
        nb[m] = p
        vals.append(1 if winner(nb) != 0 else 0 if not (nb == 0).any()
                    else -_solve(nb.tobytes()))
    vals = np.array(vals)
    return moves[vals == vals.max()]


class MinimaxPlayer:
    """Perfect play: a move of best game value (exhaustive minimax), ties broken at
    random."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def select_move(self, board) -> int:
        return int(self.rng.choice(minimax_moves(board)))


class RandomPlayer:
    """A uniformly random legal move."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def select_move(self, board) -> int:
        return int(self.rng.choice(legal_moves(board)))


def play_match(first, second, n_games: int = 1) -> dict:
    """Play ``n_games`` games, ``first`` as X; ``{"first": wins, "second": wins, "draw": n}``."""
    out = {"first": 0, "second": 0, "draw": 0}
    for _ in range(int(n_games)):
        b = np.zeros(9, dtype=np.int8)
        players = {X: first, O: second}
        while True:
            p = to_move(b)
            m = int(players[p].select_move(b.copy()))
            if b[m] != 0:
                raise ValueError(f"play_match: {type(players[p]).__name__} chose the taken "
                                 f"square {m}")
            b[m] = p
            w = winner(b)
            if w or not (b == 0).any():
                out["first" if w == X else "second" if w == O else "draw"] += 1
                break
    return out


def count_losses(player, as_first: bool, opponent: str = "any") -> tuple[int, int]:
    """``(losses, games)`` of the deterministic ``player`` over every game an opponent can
    play against it: ``opponent="any"`` branches over every legal reply, ``"minimax"``
    over every perfect reply (from every opening: as second player, all 9 first moves are
    tried whatever the opponent is)."""
    losses = games = 0
    me = X if as_first else O
    stack = [np.zeros(9, dtype=np.int8)]
    while stack:                                   # iterative walk of the game tree
        b = stack.pop()
        w = winner(b)
        if w or not (b == 0).any():
            games += 1
            losses += int(w == -me)
            continue
        p = to_move(b)
        if p == me:
            moves = [int(player.select_move(b.copy()))]
        elif opponent == "any" or not b.any():
            moves = legal_moves(b)
        else:
            moves = minimax_moves(b)
        for m in moves:
            nb = b.copy()
            nb[m] = p
            stack.append(nb)
    return losses, games


# ------------------------------------------------------------------ TD self-play
class TDSelfPlay:
    """A tic-tac-toe player that learns only by playing itself (TD(0) on afterstates).

    Parameters
    ----------
    hidden
        Hidden layer sizes of the value network (18 inputs: the mover's marks and the
        opponent's; one output).
    learning_rate
        Adam step size.
    epsilon
        Probability of a random move while learning (both sides explore).
    gamma
        Discount per move (below 1: a quicker win is worth more).
    batch_games
        Games played side by side (one network call per move for all of them), whose
        positions make one gradient step.
    symmetries
        Learn each position in its 8 rotations and reflections too (the board's symmetry:
        a fact of the game, not an evaluation of it).
    seed
        Seeds the network's initial weights and the self-play moves.
    """

    _config_names = ("hidden", "learning_rate", "epsilon", "gamma", "batch_games",
                     "symmetries", "seed")

    def __init__(self, hidden=(128, 128), learning_rate: float = 3e-3, epsilon: float = 0.3,
                 gamma: float = 0.9, batch_games: int = 8, symmetries: bool = True,
                 seed: int | None = None) -> None:
        from shendu.backend import manual_seed
        from shendu.optim import Adam
        from shendu.rl.common import mlp

        if not 0 <= epsilon <= 1:
            raise ValueError(f"TDSelfPlay: epsilon must be in [0, 1], got {epsilon}")
        self.hidden, self.learning_rate = [int(h) for h in hidden], float(learning_rate)
        self.epsilon, self.gamma = float(epsilon), float(gamma)
        self.batch_games, self.seed = int(batch_games), seed
        self.symmetries = bool(symmetries)
        if seed is not None:
            manual_seed(int(seed))
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.value_net = mlp(18, 1, self.hidden)
        self.optimizer = Adam(self.value_net.parameters(), lr=self.learning_rate)
        self.games_played = 0
        self.history = {"losses": [], "games": []}
        self._v = numpy_forward(self.value_net)

    # ---------------------------------------------------------------- scoring moves
    def _afterstates(self, board: np.ndarray):
        """Legal moves, the features of their afterstates (from the mover's view) and the
        value of each afterstate for the mover."""
        p = to_move(board)
        moves = legal_moves(board)
        k = len(moves)
        boards = np.repeat(board[None], k, axis=0)
        boards[np.arange(k), moves] = p
        feats = np.concatenate([boards == p, boards == -p], axis=1).astype(np.float32)
        won = (boards[:, LINES].sum(axis=2) == 3 * p).any(axis=1)
        full = (boards != 0).all(axis=1)
        values = self._v(feats)[:, 0]
        values = np.where(won, 1.0, np.where(full, 0.0, values)).astype(np.float32)
        terminal = won | full
        return moves, feats, values, terminal

    def move_values(self, board) -> dict:
        """``{square: value}`` of every legal move for the player to move."""
        moves, _, values, _ = self._afterstates(np.asarray(board, dtype=np.int8))
        return {int(m): float(v) for m, v in zip(moves, values)}

    def select_move(self, board) -> int:
        """The greedy move (highest afterstate value) for the player to move."""
        moves, _, values, _ = self._afterstates(np.asarray(board, dtype=np.int8))
        return int(moves[int(np.argmax(values))])

    # ---------------------------------------------------------------- learning
    def _self_play_batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Play ``n`` games against itself side by side (one network call per move for all
        of them) and return the features (N, 18) of every non-final afterstate with its TD
        target (N,)."""
        boards = np.zeros((n, 9), dtype=np.int8)
        alive = np.ones(n, dtype=bool)
        prev = np.zeros((n, 18), dtype=np.float32)  # the opponent's last afterstate
        has_prev = np.zeros(n, dtype=bool)
        feats_out, targets_out = [], []
        eye = np.eye(9, dtype=np.int8)
        for ply in range(9):
            p = X if ply % 2 == 0 else O
            g = np.flatnonzero(alive)
            b = boards[g]                                             # (G, 9)
            legal = b == 0                                            # (G, 9)
            after = b[:, None, :] + p * eye[None]                     # (G, 9 moves, 9)
            f = np.concatenate([after == p, after == -p], axis=2).astype(np.float32)
            won = (after[:, :, LINES].sum(axis=3) == 3 * p).any(axis=2)   # (G, 9)
            full = (after != 0).all(axis=2)
            v = self._v(f.reshape(-1, 18)).reshape(len(g), 9)
            v = np.where(won, 1.0, np.where(full, 0.0, v))
            v = np.where(legal, v, -np.inf)
            best = v.max(axis=1)
            hp = has_prev[g]                                          # TD targets
            feats_out.append(prev[g][hp])
            targets_out.append(-self.gamma * best[hp])
            choice = v.argmax(axis=1)
            explore = self.rng.random(len(g)) < self.epsilon
            if explore.any():                                         # a random legal move
                r = self.rng.random((len(g), 9)) * legal
                choice = np.where(explore, r.argmax(axis=1), choice)
            rows = np.arange(len(g))
            boards[g, choice] = p
            ended = won[rows, choice] | full[rows, choice]
            prev[g] = f[rows, choice]
            has_prev[g] = True
            alive[g[ended]] = False
            if not alive.any():
                break
        return (np.concatenate(feats_out),
                np.concatenate(targets_out).astype(np.float32))

    def learn(self, n_games: int, progress_bar: bool = False, callback=None):
        """Play ``n_games`` games against itself, ``batch_games`` at a time side by side,
        with one gradient step on each batch's positions; returns self."""
        from shendu.functional import mse_loss
        from shendu.tensor import Tensor

        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(n_games), desc="TDSelfPlay", unit="game", mininterval=0.5)
        left = int(n_games)
        try:
            while left > 0:
                k = min(self.batch_games, left)
                f, t = self._self_play_batch(k)                       # (N, 18), (N,)
                left -= k
                self.games_played += k
                if self.symmetries:                                   # (8N, 18), (8N,)
                    f = f[:, _FEATURE_SYMMETRIES].reshape(-1, 18)
                    t = np.repeat(t, len(SYMMETRIES))
                loss = mse_loss(self.value_net(Tensor(f)), Tensor(t[:, None]))
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                self.history["losses"].append(float(loss.data))
                self.history["games"].append(self.games_played)
                if bar is not None:
                    bar.update(k)
                if callback is not None and callback(self) is False:
                    break
        finally:
            if bar is not None:
                bar.close()
        return self

    # ---------------------------------------------------------------- saving
    def _shendu_state(self):
        from shendu.io import pack_state

        tree = {"config": {k: getattr(self, k) for k in self._config_names},
                "value_net": self.value_net, "optimizer": self.optimizer,
                "games_played": self.games_played, "history": self.history}
        arrays, skeleton = pack_state(tree, prefix="")
        return arrays, {"via": "tdselfplay", "state": skeleton}

    @classmethod
    def _shendu_restore(cls, arrays, state, path="<state>"):
        from shendu.io import FileFormatError, unpack_state

        if not isinstance(state, dict) or state.get("via") != "tdselfplay":
            raise FileFormatError(path, "malformed TDSelfPlay state")
        tree = unpack_state(state.get("state"), arrays, path)
        obj = cls.__new__(cls)
        for k in cls._config_names:
            setattr(obj, k, tree["config"][k])
        obj.value_net, obj.optimizer = tree["value_net"], tree["optimizer"]
        obj.games_played, obj.history = int(tree["games_played"]), tree["history"]
        obj.rng = np.random.Generator(np.random.PCG64(obj.seed))
        obj._v = numpy_forward(obj.value_net)
        return obj

    def save(self, path) -> None:
        from shendu.io import save

        save(self, path)

    @classmethod
    def load(cls, path) -> TDSelfPlay:
        from shendu.io import load

        obj = load(path)
        if not isinstance(obj, cls):
            raise TypeError(f"TDSelfPlay.load: {path} holds a {type(obj).__name__}")
        return obj
