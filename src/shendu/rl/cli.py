"""The game-AI commands of ``shendu``: ``train cartpole`` / ``train rl --env ID`` /
``train tictactoe``, ``eval`` of a saved agent and ``play tictactoe``. The main CLI only
hooks these in (:func:`add_train_options`, :func:`add_eval_dispatch`, :func:`add_play`)."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["RL_MODELS", "add_train_options", "add_eval_dispatch", "add_play", "is_agent_file"]

#: ``shendu train NAME``: the game-AI models.
RL_MODELS = {"cartpole": "CartPole-v1", "rl": None, "dqn": None, "reinforce": None,
             "tictactoe": None}


class RLCommandError(Exception):
    pass


def add_train_options(tr: argparse.ArgumentParser) -> None:
    """Give ``shendu train`` the game-AI models: ``--data`` is then not needed."""
    for action in tr._actions:
        if "--data" in action.option_strings:
            action.required = False
    g = tr.add_argument_group("game AI (shendu train cartpole | rl --env ID | tictactoe)")
    g.add_argument("--env", metavar="ID", help="Gymnasium environment id for `train rl` "
                   "(default CartPole-v1)")
    g.add_argument("--agent", choices=["dqn", "reinforce"], default="dqn",
                   help="agent for `train rl` (default dqn)")
    g.add_argument("--timesteps", type=int, metavar="N",
                   help="environment steps (default 100000; tictactoe: games, default 30000)")
    g.add_argument("--stop-at", type=float, metavar="R",
                   help="stop once the greedy mean return over 100 evaluation episodes "
                        "reaches R (default: the environment's reward threshold)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    inner = tr.get_default("func")

    def dispatch(args):
        if str(args.model).lower() in RL_MODELS:
            return _run(cmd_train, args)
        if args.data is None:
            tr.error("the following arguments are required: --data")
        return inner(args)

    tr.set_defaults(func=dispatch)


def add_eval_dispatch(e: argparse.ArgumentParser) -> None:
    """``shendu eval AGENT`` for a file written by a game-AI ``train``."""
    e.add_argument("--episodes", type=int, default=100,
                   help="evaluation episodes of an agent (default 100)")
    inner = e.get_default("func")

    def dispatch(args):
        if is_agent_file(args.checkpoint):
            return _run(cmd_eval, args)
        return inner(args)

    e.set_defaults(func=dispatch)


def add_play(sub, parents) -> None:
    p = sub.add_parser("play", help="play tic-tac-toe against the self-taught network",
                       description="Play tic-tac-toe in the terminal against a value network "
                       "trained by self-play (TD learning). Squares are numbered 1-9, row by "
                       "row.", parents=parents)
    p.add_argument("game", choices=["tictactoe"], help="the game")
    p.add_argument("--agent", metavar="FILE", help="a player saved by `shendu train "
                   "tictactoe` (default: train one now, 30,000 self-play games)")
    p.add_argument("--second", action="store_true", help="let the computer move first")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=lambda args: _run(cmd_play, args))


def _run(fn, args) -> int:
    from shendu.cli import CLIError
    from shendu.tour import one_thread

    try:
        with one_thread():       # small networks: one BLAS thread is faster (see the tour)
            return fn(args)
    except (RLCommandError, ValueError) as e:
        raise CLIError(str(e)) from None


def is_agent_file(path) -> bool:
    """Whether ``path`` holds a shendu game-AI agent."""
    import json

    from shendu.io import FileFormatError, load_arrays

    if not os.path.isfile(path):
        return False
    try:
        _, meta = load_arrays(path)
        desc = json.loads(meta.get("shendu", "{}"))
    except (FileFormatError, ValueError, OSError):
        return False
    return isinstance(desc, dict) and str(desc.get("class", "")).startswith("shendu.rl.")


# ------------------------------------------------------------------ train
def cmd_train(args) -> int:
    import shendu
    from shendu.rl import DQN, REINFORCE, EvalCallback, TDSelfPlay, evaluate_policy

    model = str(args.model).lower()
    os.makedirs(args.out, exist_ok=True)
    if args.timesteps is not None and args.timesteps < 1:
        raise RLCommandError(f"--timesteps must be >= 1, got {args.timesteps}")
    seed = args.seed or 0
    if model == "tictactoe":
        from shendu.rl.tictactoe import RandomPlayer, count_losses, play_match

        agent = TDSelfPlay(seed=seed)
        agent.learn(args.timesteps or 30_000, progress_bar=not args.no_progress)
        path = os.path.join(args.out, "tictactoe.shendu")
        shendu.save(agent, path)
        _report_tictactoe(agent, count_losses, play_match, RandomPlayer)
        print(f"saved {path}")
        return 0
    env_id = RL_MODELS.get(model) or args.env or "CartPole-v1"
    cls = REINFORCE if (model == "reinforce" or args.agent == "reinforce") else DQN
    agent = cls(env_id, seed=seed)
    threshold = args.stop_at
    if threshold is None:
        spec = getattr(agent.env, "spec", None)
        threshold = getattr(spec, "reward_threshold", None)
    cb = EvalCallback(env_id, eval_freq=2500, n_eval_episodes=10, reward_threshold=threshold,
                      seed=seed + 1000)
    agent.learn(args.timesteps or 100_000, callback=cb, progress_bar=not args.no_progress)
    path = os.path.join(args.out, f"{env_id}.{cls.__name__.lower()}.shendu")
    shendu.save(agent, path)
    mean, std = evaluate_policy(agent, env_id, 100, seed=seed + 10_000)
    done = f"solved at step {cb.solved_at}" if cb.solved_at else \
        f"{agent.num_timesteps} steps"
    print(f"{cls.__name__} on {env_id}: {done}; greedy return over 100 episodes "
          f"{mean:.1f} ± {std:.1f}")
    print(f"saved {path}")
    return 0


def _report_tictactoe(agent, count_losses, play_match, RandomPlayer) -> None:
    l1, g1 = count_losses(agent, True, "minimax")
    l2, g2 = count_losses(agent, False, "minimax")
    r1 = play_match(agent, RandomPlayer(1), 1000)
    r2 = play_match(RandomPlayer(2), agent, 1000)
    print(f"against perfect play: {l1} losses in {g1} games as X, {l2} in {g2} as O")
    print(f"against random play (1000 games each side): as X {r1['first']} wins, "
          f"{r1['second']} losses; as O {r2['second']} wins, {r2['first']} losses")


# ------------------------------------------------------------------ eval
def cmd_eval(args) -> int:
    import shendu
    from shendu.rl import TDSelfPlay, evaluate_policy

    agent = shendu.load(args.checkpoint)
    if isinstance(agent, TDSelfPlay):
        from shendu.rl.tictactoe import RandomPlayer, count_losses, play_match

        print(f"TDSelfPlay ({agent.games_played} self-play games)")
        _report_tictactoe(agent, count_losses, play_match, RandomPlayer)
        return 0
    if args.episodes < 1:
        raise RLCommandError(f"--episodes must be >= 1, got {args.episodes}")
    env_id = agent.env_id
    if env_id is None:
        raise RLCommandError(f"{args.checkpoint}: the agent was trained on an environment "
                             "without a registered id; evaluate it from Python")
    mean, std = evaluate_policy(agent, env_id, args.episodes, seed=10_000)
    print(f"{type(agent).__name__} ({agent.num_timesteps} steps) on {env_id}: greedy return "
          f"over {args.episodes} episodes {mean:.1f} ± {std:.1f}")
    return 0


# ------------------------------------------------------------------ play
def cmd_play(args, stdin=None, stdout=None) -> int:
    import shendu
    from shendu.rl.tictactoe import TDSelfPlay, TicTacToeEnv, render_board

    stdin, out = stdin or sys.stdin, stdout or sys.stdout
    if args.agent:
        agent = shendu.load(args.agent)
        if not isinstance(agent, TDSelfPlay):
            raise RLCommandError(f"{args.agent} holds a {type(agent).__name__}, not a "
                                 "tic-tac-toe player")
    else:
        print("training the network by self-play (30000 games)...", file=out, flush=True)
        agent = TDSelfPlay(seed=args.seed).learn(30_000)
    env = TicTacToeEnv()
    board, info = env.reset()
    human = -1 if args.second else 1
    print("You are " + ("O" if args.second else "X") + ". Enter a square 1-9 (q to quit).",
          file=out)
    while True:
        if info["to_move"] == human:
            print(render_board(board), file=out)
            print("your move: ", end="", file=out, flush=True)
            line = stdin.readline()
            if not line or line.strip().lower() in ("q", "quit", "exit"):
                print("bye", file=out)
                return 0
            text = line.strip()
            if not text.isdigit() or not 1 <= int(text) <= 9:
                print(f"{text!r} is not a square: enter a number from 1 to 9", file=out)
                continue
            square = int(text) - 1
            if board[square] != 0:
                print(f"square {square + 1} is already taken: choose an empty one", file=out)
                continue
        else:
            square = agent.select_move(board)
            print(f"computer plays {square + 1}", file=out)
        board, reward, done, _, info = env.step(square)
        if done:
            print(render_board(board), file=out)
            w = info["winner"]
            print("draw" if w == 0 else "you win" if w == human else "computer wins",
                  file=out)
            return 0
