"""The argument parser of every subcommand and the ``shendu`` entry point."""

from __future__ import annotations

import argparse
import sys

from shendu.cli.bench import _cmd_bench
from shendu.cli.commands import _cmd_eval, _cmd_predict, _cmd_tour, _cmd_train
from shendu.cli.data import BUILTIN_DATA
from shendu.cli.errors import CLIError
from shendu.cli.gradcheck import GRADCHECK_MODELS, _cmd_gradcheck
from shendu.cli.registry import _ALIASES, MODELS, TASKS, resolve_task


# ========================================================================== parser
def _chapters(text: str) -> str:
    """``--only``: chapter names separated by commas, each one the tour has."""
    from shendu.tour import chapter_names

    try:
        chapter_names(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("tour: ")) from None
    return text


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``shendu train: error: ... (see shendu train --help)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_EPILOGS = {
    "tour": """examples:
  shendu tour                       # every chapter (about 2 CPU minutes; about one minute
                                    # on 2 cores, two chapters at a time)
  shendu tour --quick               # small budgets (about 25 CPU seconds)
  shendu tour --only lstm --out tour-lstm
  shendu tour --only mlp,cnn --jobs 1
chapters: {chapters}""",
    "train": """examples:
  shendu train mlp --data digits --epochs 20 --out runs/mlp
  shendu train Perceptron --data blobs --epochs 5
  shendu train MLPRegressor --data my.csv --target price --lr 1e-3 --out runs/price
  shendu train mlp --data digits --epochs 30 --resume runs/mlp/last.ckpt --out runs/mlp
  shendu train mlp --data train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz
  shendu train cnn --data mnist --data-root /path/to/data --epochs 3
  shendu train lstm --data adding --epochs 10
  shendu train gru --data sequential-digits
  shendu train attention --data reverse --epochs 8
  shendu train char-lm --data shakespeare --steps 500
  shendu train char-transformer --data my_text.txt --steps 300
  shendu train NeuralNetwork --data xor --epochs 2000 --lr 2 --hidden 4
  shendu train mnist --epochs 3              # the classic task: cnn (LeNet) on MNIST
  mpiexec -n 4 shendu train mnist --epochs 3 --out runs/cnn4
distributed: started by an MPI launcher (mpiexec -n N, mpirun, srun), each of the N
processes trains on 1/N of every batch of the models that train through shendu.train
(mlp, MLPRegressor, cnn, the recurrent and attention models), gradients averaged over MPI:
the same batches, so one process's result (up to rounding). Rank 0 alone prints and writes the
checkpoints; --out (and --resume) must be a folder every process can read; kill -USR1 on
mpiexec stops every process after the current epoch (Ctrl-C on mpiexec ends them at once).
The other models train identically on every process. Needs pip install 'shendu[dist]'.
models: {models}
tasks: {tasks}
built-in data: {data}
files: .csv (numeric; target = last column or --target), .npz (X, y or
X_train/y_train/X_test/y_test), IDX images (+ labels file), .txt (text for the
character language models)""",
    "eval": """examples:
  shendu eval runs/mlp/best.ckpt                  # the data it was trained on, test split
  shendu eval runs/mlp/best.ckpt --data digits --split train
  shendu eval runs/price/last.ckpt --data holdout.csv --target price""",
    "predict": """examples:
  shendu predict runs/mlp/best.ckpt new.csv                # one prediction per line
  shendu predict runs/mlp/best.ckpt new.npy --output pred.csv
  shendu predict runs/mlp/best.ckpt new.npz --proba --output proba.npy
  shendu predict runs/charlm/last.ckpt "ROMEO:" --length 300
  shendu predict runs/reverse/last.ckpt "3 1 4 1 5 9"      # -> 9 5 1 4 1 3""",
    "gradcheck": """examples:
  shendu gradcheck mlp
  shendu gradcheck lstm --max-elements 50
  shendu gradcheck transformer --tol 1e-6
  shendu gradcheck attention --max-elements 20
models: {gc}""",
    "bench": """examples:
  shendu bench                 # every workload in benchmarks/
  shendu bench --only mlp --steps 100
  shendu bench --quick --no-torch
  shendu bench --list""",
}


def build_parser() -> argparse.ArgumentParser:
    from shendu import __version__
    from shendu.rl import cli as rl_cli
    from shendu.tour import CHAPTERS

    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="shendu",
                description="shendu (深度): the classic algorithms of deep learning on NumPy.",
                epilog="examples:\n  shendu tour\n  shendu train mlp --data digits\n"
                       "  shendu gradcheck lstm\n  shendu COMMAND --help",
                formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"shendu {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name, help_, desc, **fmtargs):
        return sub.add_parser(name, help=help_, description=desc, parents=[common],
                              epilog=_EPILOGS[name].format(**fmtargs), formatter_class=fmt)

    t = add("tour", "train the classic algorithms on built-in data, show their famous results",
            "Train each classic algorithm of deep learning on its classic task (built-in data, "
            "no network), print a table of results and write pictures and report.html.",
            chapters=", ".join(CHAPTERS))
    t.add_argument("--quick", action="store_true", help="small budgets (under a minute)")
    t.add_argument("--only", metavar="NAME[,NAME...]", type=_chapters,
                   help="run these chapters (comma-separated): " + ", ".join(CHAPTERS))
    t.add_argument("--jobs", "-j", metavar="N", type=_positive_int, default=None,
                   help="run up to N chapters at once, each in its own process on one "
                        "thread (default: one per core; 1: all in this process); the "
                        "results do not depend on N")
    t.add_argument("--out", metavar="DIR", default="shendu-tour",
                   help="folder for the pictures and report.html (default: %(default)s)")
    t.add_argument("--no-report", action="store_true", help="print the table only")
    t.set_defaults(func=_cmd_tour)

    tr = add("train", "train a ready model on built-in data or your file",
             "Train a ready model (shendu.models) and write checkpoints into --out: "
             "last.ckpt after every epoch and best.ckpt (best test score).",
             models=", ".join(s.cls for s in MODELS.values()) + " (aliases: "
             + ", ".join(_ALIASES) + ")",
             data=", ".join(BUILTIN_DATA),
             tasks=", ".join(f"{t} (= {m} --data {d})" for t, (m, d) in TASKS.items()))
    tr.add_argument("model", metavar="MODEL", help="model name, e.g. mlp or Perceptron, "
                    "or a classic task: " + ", ".join(TASKS))
    tr.add_argument("--data", required=True, metavar="NAME|PATH",
                    help="built-in data set name or a .csv/.npz/IDX file")
    tr.add_argument("--target", metavar="COL", help="CSV target column (name or index; "
                    "default: last)")
    tr.add_argument("--labels", metavar="PATH", help="IDX labels file (default: found "
                    "beside the images by the MNIST naming)")
    tr.add_argument("--test-size", type=float, default=0.2, metavar="F",
                    help="held-out fraction of a file without a test split (default 0.2)")
    tr.add_argument("--epochs", type=int, help="epochs in all (default 20; with --resume, "
                    "the total to reach)")
    tr.add_argument("--lr", type=float, help="learning rate (model default if omitted)")
    tr.add_argument("--batch-size", type=int, help="mini-batch size (model default)")
    tr.add_argument("--hidden", type=int, nargs="+", metavar="N",
                    help="hidden layer sizes of an MLP, e.g. --hidden 128 64")
    tr.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tr.add_argument("--steps", type=int, help="training steps of a character language "
                    "model (default 300)")
    tr.add_argument("--data-root", metavar="DIR", help="folder of mnist / tinyshakespeare "
                    "files (default: $SHENDU_DATA)")
    tr.add_argument("--out", metavar="DIR", default="shendu-run",
                    help="folder for checkpoints (default: %(default)s)")
    tr.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint (char-lm and "
                    "char-transformer: the run's --out folder, which --resume continues "
                    "exactly after a Ctrl-C or a crash)")
    tr.set_defaults(func=_cmd_train)
    rl_cli.add_train_options(tr)  # train cartpole | rl --env ID | tictactoe

    e = add("eval", "print a checkpoint's metrics on data",
            "Evaluate a checkpoint written by `shendu train`: accuracy (and log-loss) for "
            "classifiers, MSE/MAE/R^2 for regressors.")
    e.add_argument("checkpoint", metavar="CKPT")
    e.add_argument("--data", metavar="NAME|PATH", help="default: the data it was trained on")
    e.add_argument("--split", choices=["test", "train"], default="test",
                   help="which half of the data (default: test)")
    e.add_argument("--target", metavar="COL", help="CSV target column")
    e.add_argument("--labels", metavar="PATH", help="IDX labels file")
    e.add_argument("--data-root", metavar="DIR", help="folder of mnist / tinyshakespeare "
                   "files (default: as when trained, else $SHENDU_DATA)")
    e.set_defaults(func=_cmd_eval)
    rl_cli.add_eval_dispatch(e)  # eval of a saved game-AI agent
    rl_cli.add_play(sub, [common])  # play tictactoe
    from shendu.onnx import cli as onnx_cli  # onnx itself loads only when export runs

    onnx_cli.add_export(sub, [common])  # export MODEL OUT.onnx

    pr = add("predict", "predict with a checkpoint", "Predict for every row of INPUT "
             "(.csv, .npz, .npy or IDX features) with a checkpoint written by `shendu train`; "
             "for a character language model INPUT is the prompt to continue, for a "
             "sequence-to-sequence model token sequences ('3 1 4 1 5') or a file of them.")
    pr.add_argument("checkpoint", metavar="CKPT")
    pr.add_argument("input", metavar="INPUT")
    pr.add_argument("more_inputs", nargs="*", metavar="FILE",
                    help="more audio files (an AudioClassifier answers each .wav)")
    pr.add_argument("--output", metavar="FILE", help=".csv/.txt or .npy (default: stdout)")
    pr.add_argument("--proba", action="store_true", help="class probabilities")
    pr.add_argument("--length", type=int, default=200,
                    help="characters to generate (language models; default 200)")
    pr.add_argument("--temperature", type=float, default=0.8,
                    help="sampling temperature (language models; 0 = greedy; default 0.8)")
    pr.add_argument("--top-k", type=int, help="sample among the k likeliest characters")
    pr.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    pr.set_defaults(func=_cmd_predict)

    g = add("gradcheck", "gradcheck a whole model in float64",
            "Compare backpropagation with central differences for every parameter of a small "
            "float64 model and print the worst relative error per parameter; exit 1 if any "
            "exceeds --tol.", gc=", ".join(GRADCHECK_MODELS))
    g.add_argument("model", metavar="MODEL", help=", ".join(GRADCHECK_MODELS))
    g.add_argument("--eps", type=float, default=1e-6, help="finite-difference step")
    g.add_argument("--tol", type=float, default=1e-5, help="largest relative error allowed")
    g.add_argument("--floor", type=float, default=1e-4,
                   help="derivatives smaller than this are compared absolutely (default "
                        "1e-4: an absolute error of at most tol * floor)")
    g.add_argument("--max-elements", type=int, metavar="N",
                   help="check at most N elements of each parameter (default: all)")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_cmd_gradcheck)

    b = add("bench", "run the benchmark workloads (shendu vs torch)",
            "Run the workloads of benchmarks/ (DESIGN.md) and print steps/s of shendu and "
            "torch and their ratio (shendu alone when torch is absent).")
    b.add_argument("--only", nargs="+", metavar="NAME", help="workloads to run")
    b.add_argument("--steps", type=int, default=50)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--quick", action="store_true", help="10 steps x 2 repeats")
    b.add_argument("--no-torch", action="store_true", help="time shendu alone")
    b.add_argument("--list", action="store_true", help="list the workloads")
    b.add_argument("--dir", metavar="PATH", help="benchmarks folder (default: the repo's)")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv=None) -> int:
    """Entry point of the ``shendu`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command", None) == "train":
        resolve_task(args)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("shendu: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line unless --debug
        if args.debug:
            raise
        msg = str(e) if isinstance(e, CLIError) else f"{type(e).__name__}: {e}"
        msg = " ".join(msg.split())
        print(f"shendu {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
