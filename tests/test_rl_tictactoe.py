"""Tic-tac-toe: the environment, perfect play, and a value network that learns by TD
self-play only — trained here, then checked against perfect and random play."""

import numpy as np
import pytest
from processes import python, run_side_by_side

import shendu
from shendu.rl.tictactoe import (
    MinimaxPlayer,
    RandomPlayer,
    TDSelfPlay,
    TicTacToeEnv,
    count_losses,
    minimax_moves,
    play_match,
    winner,
)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # small networks: extra BLAS threads only wait for each other (and on a busy 2-core
    # machine they make a run several times slower)
    tp = pytest.importorskip("threadpoolctl")
    with tp.threadpool_limits(1):
        yield


def test_env_rules():
    env = TicTacToeEnv()
    board, info = env.reset()
    assert board.tolist() == [0] * 9 and info["to_move"] == 1
    for a in (0, 3, 1, 4):
        _, r, done, trunc, info = env.step(a)
        assert r == 0 and not done and not trunc
    with pytest.raises(ValueError, match="square 4 is already taken"):
        env.step(4)
    with pytest.raises(ValueError, match="squares are 0-8"):
        env.step(9)
    board, r, done, _, info = env.step(2)          # X completes the top row
    assert r == 1 and done and info["winner"] == 1 and winner(board) == 1
    with pytest.raises(ValueError, match="the game is over"):
        env.step(5)


def test_minimax_knows_the_classic_positions():
    b = np.zeros(9, dtype=np.int8)
    assert sorted(minimax_moves(b).tolist()) == list(range(9))    # every opening draws
    b[0] = 1                                                       # X in a corner:
    assert minimax_moves(b).tolist() == [4]                        # only the centre holds
    b = np.array([1, 0, 0, 0, -1, 0, 0, 0, 1], dtype=np.int8)      # X opposite corners
    assert sorted(minimax_moves(b).tolist()) == [1, 3, 5, 7]       # O must take an edge


def test_minimax_never_loses_and_random_loses():
    assert count_losses(MinimaxPlayer(0), True)[0] == 0
    assert count_losses(MinimaxPlayer(0), False)[0] == 0
    assert count_losses(RandomPlayer(0), True, "minimax")[0] > 0   # the check can fail


#: the seeds trained; all but one must give an unbeatable player. Which of the close moves
#: training settles on depends on the products' last bits (which differ between BLAS
#: libraries and processors): over seeds about one in ten loses a game or two as O to
#: perfect play (docs/game_ai.md), so one seed alone would test the library's rounding
SEEDS = (0, 1, 2)


def _train_side_by_side(runs):
    """Players ``TDSelfPlay(seed).learn(games)`` for each ``(seed, games, path)`` of
    ``runs``, each trained in its own process (one BLAS thread, as here, and one kernel
    thread: the processes fill the cores already) side by side on the usable cores, saved
    to ``path`` and loaded back."""
    code = ("import numpy, shendu, threadpoolctl\n"
            "from shendu.functional import conv\n"
            "from shendu.rl.tictactoe import TDSelfPlay\n"
            "shendu.manual_seed(0); numpy.random.seed(0)       # as conftest does\n"
            "conv.set_kernel_threads(1)\n"
            "with threadpoolctl.threadpool_limits(1):\n"
            "    TDSelfPlay(seed={seed}).learn({games}).save({path!r})")
    done = run_side_by_side([python(code.format(seed=seed, games=games, path=str(path)))
                             for seed, games, path in runs])
    for (seed, _, _), r in zip(runs, done):
        assert r.returncode == 0, f"seed {seed}:\n" + r.stdout[-2000:] + r.stderr[-3000:]
    return [shendu.load(path) for _, _, path in runs]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """TD(0) self-play only, 30,000 games per seed (about 10 s each), the seeds side by
    side (:func:`_train_side_by_side`): the players one process would train, in about half
    the time on two cores."""
    folder = tmp_path_factory.mktemp("tictactoe")
    return _train_side_by_side([(seed, 30_000, folder / f"seed{seed}.shendu")
                                for seed in SEEDS])


def test_trained_in_a_process_as_here(tmp_path):
    """The side-by-side training gives this process's players: a short run of one seed
    there (one kernel thread) and here (the suite's two) gives the same games and the same
    values."""
    there = _train_side_by_side([(5, 300, tmp_path / "p.shendu")])[0]
    here = TDSelfPlay(seed=5).learn(300)
    assert there.history["losses"] == here.history["losses"]
    board = np.array([1, 0, 0, 0, -1, 0, 0, 0, 0], dtype=np.int8)
    assert there.move_values(board) == here.move_values(board)


def _losing(players, opponent):
    """The seeds whose player loses a game to ``opponent`` as X or as O, with the counts."""
    out = {}
    for seed, player in zip(SEEDS, players):
        counts = [count_losses(player, as_first, opponent=opponent) for as_first in (True, False)]
        assert all(games > 0 for _, games in counts)
        if any(losses for losses, _ in counts):
            out[seed] = counts
    return out


@pytest.mark.slow
def test_never_loses_to_perfect_play_from_every_opening(trained):
    # every opening (all nine first moves when it plays second) and every perfect reply
    losing = _losing(trained, "minimax")
    assert len(losing) <= 1, losing


@pytest.mark.slow
def test_never_loses_to_any_opponent(trained):
    # stronger still: every legal reply of the opponent at every turn
    losing = _losing(trained, "any")
    assert len(losing) <= 1, losing


@pytest.mark.slow
def test_against_random_play(trained):
    unbeaten = [p for s, p in zip(SEEDS, trained) if s not in _losing(trained, "minimax")]
    assert unbeaten
    for player in unbeaten:
        first = play_match(player, RandomPlayer(1), 1000)
        second = play_match(RandomPlayer(2), player, 1000)
        assert first["second"] == 0 and first["first"] >= 900, first
        assert second["first"] == 0 and second["second"] >= 700, second


def test_untrained_network_is_beaten():
    fresh = TDSelfPlay(seed=0)
    lost = count_losses(fresh, True, "minimax")[0] + count_losses(fresh, False, "minimax")[0]
    assert lost > 0


def test_self_play_is_reproducible_and_saves(tmp_path):
    a = TDSelfPlay(seed=3).learn(200)
    b = TDSelfPlay(seed=3).learn(200)
    assert a.history["losses"] == b.history["losses"]
    a.save(tmp_path / "t.shendu")
    c = shendu.load(tmp_path / "t.shendu")
    assert isinstance(c, TDSelfPlay) and c.games_played == 200
    board = np.array([1, 0, 0, 0, -1, 0, 0, 0, 0], dtype=np.int8)
    assert c.move_values(board) == a.move_values(board)
