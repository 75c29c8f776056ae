"""``shendu tour``, ``train``, ``eval`` and ``predict``."""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from shendu.cli.data import load_data, read_features
from shendu.cli.errors import CLIError
from shendu.cli.registry import (
    MODELS,
    ModelSpec,
    _check_fits,
    _construct,
    _format_metrics,
    _metrics,
    _model_spec,
    _regression_metrics,
    _shape_for,
    load_model_checkpoint,
    save_model_checkpoint,
)


# ======================================================================= commands
def _cmd_tour(args) -> int:
    from shendu.tour import default_jobs, run_tour

    res = run_tour(quick=args.quick, only=args.only,
                   out=None if args.no_report else args.out, debug=args.debug,
                   jobs=args.jobs or default_jobs())
    if res.failed:
        raise CLIError(f"tour: chapter(s) {', '.join(res.failed)} failed (see the table; "
                       "--debug shows the traceback)")
    return 0


#: Set by MPI launchers in the processes they start: Open MPI, MPICH/Intel MPI/Slurm's PMI,
#: PMIx (Slurm ``srun --mpi=pmix``).
_MPI_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")


def _join_mpi_run() -> int:
    """When an MPI launcher started this process, join the process group; returns the
    world size (1 when not launched by MPI, or launched as one process)."""
    if not any(v in os.environ for v in _MPI_LAUNCHER_VARS):
        return 1
    import shendu.distributed as dist

    if not dist.is_initialized():
        if not dist.is_mpi_available():
            raise CLIError("started by an MPI launcher, but mpi4py is not installed: "
                           "pip install 'shendu[dist]'")
        dist.init_process_group("mpi")
    return dist.get_world_size()


def _cmd_train(args) -> int:
    if args.model.lower() in ("audio", "audioclassifier"):   # speech: shendu.audio.cli
        from shendu.audio.cli import train_audio

        return train_audio(args)
    world = _join_mpi_run()
    rank = 0
    if world > 1:
        import shendu.distributed as dist

        rank = dist.get_rank()
        if rank == 0:
            print(f"distributed: {world} processes (MPI); each trains on 1/{world} of every "
                  "batch, rank 0 prints and writes the checkpoints")
    args.main_process, args.world = rank == 0, world
    if world == 1:
        return _train(args)
    with contextlib.ExitStack() as stack:
        if rank != 0:   # the other ranks: same work, nothing printed or written
            stack.enter_context(contextlib.redirect_stdout(
                stack.enter_context(open(os.devnull, "w"))))
        try:
            return _train(args)
        except BaseException as e:  # a rank that stops alone would leave the others waiting
            import shendu.distributed as dist

            print(f"shendu train: rank {rank} of {world} failed ({type(e).__name__}: {e}); "
                  "stopping every rank", file=sys.stderr, flush=True)
            dist.abort(1)
            raise


class _EpochStop:
    """Under ``mpiexec``: SIGUSR1 (which ``mpiexec`` forwards to every rank) or Ctrl-C on a
    rank asks the epoch loop of ``shendu train`` to stop after the current epoch; the ranks
    agree on it after each epoch (an all-reduce), so they stop together."""

    def __init__(self) -> None:
        self.asked = False
        self._old: dict = {}

    def __enter__(self) -> _EpochStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGUSR1, signal.SIGINT):
                if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
                    self._old[sig] = signal.signal(sig, self._ask)
        return self

    def _ask(self, signum, frame) -> None:
        if self.asked and signum == signal.SIGINT:
            raise KeyboardInterrupt   # a second Ctrl-C: now
        self.asked = True
        print("\nshendu train: stopping after this epoch (every rank)", file=sys.stderr,
              flush=True)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def agreed(self) -> bool:
        import shendu.distributed as dist
        from shendu.distributed.backend import allreduce_array

        flag = np.array([1.0 if self.asked else 0.0])
        return bool(allreduce_array(flag, dist.ReduceOp.MAX, "shendu train")[0] > 0)


def _train(args) -> int:
    import shendu

    spec, cls = _model_spec(args.model)
    for name in ("epochs", "batch_size", "steps"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.lr is not None and not args.lr > 0:
        raise CLIError(f"--lr must be > 0, got {args.lr}")
    data = load_data(args.data, args.target, args.labels, args.test_size, args.seed or 0,
                     args.data_root)
    _check_fits(spec, data, args.data)
    shendu.manual_seed(args.seed or 0)
    os.makedirs(args.out, exist_ok=True)
    info = {"model": spec.cls, "data": args.data, "data_root": args.data_root,
            "input": spec.input, "seed": args.seed or 0, "target": args.target,
            "labels": args.labels, "test_size": args.test_size}
    if spec.how == "steps":
        from shendu.cli.lm import train_lm

        return train_lm(args, spec, cls, data, info)
    if spec.how == "fit" and args.resume:
        raise CLIError(f"{spec.cls} trains all its epochs in one fit and cannot resume; "
                       "resuming works for Perceptron, MLPClassifier, MLPRegressor and "
                       "ConvolutionalNeuralNetwork")
    if spec.input == "seq2seq":
        Xtr, Xte, ytr, yte = data.X_train, data.X_test, data.y_train, data.y_test
        info.update(pad_id=data.pad_id, n_features=[])
        key = "exact"
    else:
        if data.y_train is None:
            raise CLIError(f"{args.data}: no labels to train on")
        Xtr = _shape_for(spec, data.X_train, args.data)
        Xte = _shape_for(spec, data.X_test, args.data)
        ytr, yte = data.y_train, data.y_test
        integer = np.issubdtype(np.asarray(ytr).dtype, np.integer)
        if spec.task == "classify" and not integer:
            raise CLIError(f"{args.data}: {spec.cls} is a classifier and needs whole-number "
                           f"class labels, got {np.asarray(ytr).dtype} targets (use "
                           "MLPRegressor)")
        info["n_features"] = list(Xtr.shape[1:])
        key = "accuracy" if spec.task == "classify" or (spec.task == "auto" and integer) \
            else "mse"
    last, best = os.path.join(args.out, "last.ckpt"), os.path.join(args.out, "best.ckpt")
    t0 = time.perf_counter()
    if spec.how in ("epochs", "seed"):
        model, start_epoch, history, best_val = _train_epochs(args, spec, cls, Xtr, ytr, Xte,
                                                              yte, key, info, last, best)
    else:
        start_epoch = 0
        model = _train_once(args, spec, cls, Xtr, ytr, key, data)
        te = _scores(model, spec, Xte, yte)
        history = [{"epoch": args.epochs or 20, key: _scores(model, spec, Xtr, ytr)[key],
                    f"val_{key}": te[key]}]
        best_val = te[key]
        info.update(epoch=history[-1]["epoch"], history=history, rng=shendu.get_rng_state())
        if getattr(args, "main_process", True):
            save_model_checkpoint(last, model, info)
            save_model_checkpoint(best, model, info)
    seconds = time.perf_counter() - t0
    print(f"{spec.cls} on {data.name}: {len(Xtr)} train / {len(Xte)} test, "
          f"epochs {start_epoch + 1}-{history[-1]['epoch']}, {seconds:.1f} s")
    print(f"train: {_format_metrics(_scores(model, spec, Xtr, ytr))}")
    print(f"test:  {_format_metrics(_scores(model, spec, Xte, yte))}")
    print(f"checkpoints: {last} (last), {best} (best {key} {best_val:.4g})")
    return 0


def _train_epochs(args, spec, cls, Xtr, ytr, Xte, yte, key, info, last, best):
    """One ``partial_fit`` (or the seed's ``train``) per epoch; a checkpoint after each."""
    import warnings

    import shendu
    from shendu.utils import progress

    epochs = args.epochs
    start_epoch, history = 0, []
    if args.resume:
        model, old = load_model_checkpoint(args.resume)
        if old.get("model") != spec.cls:
            raise CLIError(f"{args.resume}: the checkpoint holds a {old.get('model')}, not a "
                           f"{spec.cls}")
        start_epoch, history = int(old.get("epoch", 0)), list(old.get("history", []))
        if isinstance(old.get("rng"), dict):
            shendu.set_rng_state(old["rng"])
        if epochs is None:
            epochs = start_epoch + 1
        if epochs <= start_epoch:
            raise CLIError(f"{args.resume} is at epoch {start_epoch}; ask for --epochs > "
                           f"{start_epoch} to train further")
    elif spec.how == "seed":
        if args.hidden and len(args.hidden) > 1:
            raise CLIError("NeuralNetwork has one hidden layer: give one --hidden size")
        ycols = 1 if np.ndim(ytr) == 1 else int(np.shape(ytr)[1])
        model = cls(Xtr.shape[1], (args.hidden or [16])[0], ycols)
        epochs = epochs or 20
    else:
        model = _construct(cls, args)
        epochs = epochs or 20
    better = (lambda a, b: a > b) if key == "accuracy" else (lambda a, b: a < b)
    best_val = None
    for h in history:
        v = h.get(f"val_{key}")
        if v is not None and (best_val is None or better(v, best_val)):
            best_val = v
    classes = np.unique(ytr) if spec.task == "classify" else None
    every = max(1, (epochs - start_epoch) // 50)     # at most ~50 checkpoints per run
    bar = progress(range(start_epoch, epochs), desc=f"{spec.cls} on {info['data']}",
                   total=epochs - start_epoch, disable=not getattr(args, "main_process", True))
    stop = _EpochStop() if getattr(args, "world", 1) > 1 else None
    with warnings.catch_warnings(), (stop or contextlib.nullcontext()):
        warnings.simplefilter("ignore")
        for epoch in bar:
            try:
                if spec.how == "seed":
                    model.train(Xtr, np.asarray(ytr, np.float64).reshape(len(ytr), -1), 1,
                                args.lr or 0.1)
                elif classes is not None and epoch == 0:
                    model.partial_fit(Xtr, ytr, classes=classes)
                else:
                    model.partial_fit(Xtr, ytr)
            except (ValueError, TypeError, FloatingPointError) as e:
                raise CLIError(f"{spec.cls} on {info['data']}: {e}") from None
            halt = stop is not None and stop.agreed()
            if not halt and (epoch + 1) % every and epoch + 1 != epochs:
                continue
            tr, te = _scores(model, spec, Xtr, ytr), _scores(model, spec, Xte, yte)
            row = {"epoch": epoch + 1, key: tr[key], f"val_{key}": te[key]}
            history.append(row)
            bar.set_postfix({key: f"{tr[key]:.4g}", f"val_{key}": f"{te[key]:.4g}"})
            info.update(epoch=epoch + 1, history=history, rng=shendu.get_rng_state())
            main = getattr(args, "main_process", True)
            if main:
                save_model_checkpoint(last, model, info)
            if best_val is None or better(te[key], best_val):
                best_val = te[key]
                if main:
                    save_model_checkpoint(best, model, info)
            if halt:
                print(f"stopped after epoch {epoch + 1}: go on with --resume {last}")
                break
    return model, start_epoch, history, best_val


def _train_once(args, spec, cls, Xtr, ytr, key, data):
    """Recurrent, transformer and seq2seq estimators: one ``fit`` of all the epochs (one
    line per epoch)."""
    extra = {"verbose": 2}
    if spec.task == "auto":
        extra["task"] = "classification" if key == "accuracy" else "regression"
    if spec.input == "seq2seq":
        extra.update(pad_id=data.pad_id, vocab_size=int(data.pad_id))
    model = _construct(cls, args)
    # scikit-learn's name for the number of epochs where the model has it
    extra["max_iter" if hasattr(model, "max_iter") else "epochs"] = args.epochs or 20
    for k, v in extra.items():
        if hasattr(model, k):
            setattr(model, k, v)
    try:
        model.fit(Xtr, ytr)
    except (ValueError, TypeError) as e:
        raise CLIError(f"{spec.cls} on {data.name}: {e}") from None
    model.verbose = 0
    return model


def _scores(model, spec: ModelSpec, X, y) -> dict:
    if spec.input == "seq2seq":
        return {"exact": float(model.score(X, y)), "n": len(X)}
    if spec.how == "seed":
        pred = np.asarray(model.predict(X), np.float64).reshape(len(X), -1)
        return _regression_metrics(pred, y)
    return _metrics(model, X, y)


def _load_for(args):
    """Model, info, spec and (unless ``--data`` is not needed) the data of a checkpoint."""
    model, info = load_model_checkpoint(args.checkpoint)
    return model, info, MODELS[info["model"].lower()]


def _cmd_eval(args) -> int:
    from shendu.audio.cli import eval_audio, is_audio_checkpoint

    if is_audio_checkpoint(args.checkpoint):                  # speech: shendu.audio.cli
        return eval_audio(args)
    model, info, spec = _load_for(args)
    data_spec = args.data or info.get("data")
    if not data_spec:
        raise CLIError("no data: pass --data NAME|PATH")
    data = load_data(data_spec, args.target if args.target is not None else info.get("target"),
                     args.labels or info.get("labels"), info.get("test_size", 0.2),
                     info.get("seed", 0), args.data_root or info.get("data_root"))
    _check_fits(spec, data, data_spec)
    split = args.split
    if spec.input == "text":
        if data.corpus.vocab != info.get("vocab"):
            missing = sorted(set(data.corpus.vocab) - set(info.get("vocab", "")))
            if missing:
                raise CLIError(f"{data_spec}: the text has characters the model never saw: "
                               f"{''.join(missing[:20])!r}")
            from shendu.data.sequences import CharCorpus

            corpus = CharCorpus.__new__(CharCorpus)
            corpus.vocab = info["vocab"]
            corpus._index = {c: i for i, c in enumerate(corpus.vocab)}
            corpus.train = corpus.encode(data.corpus.decode(data.corpus.train))
            corpus.val = corpus.encode(data.corpus.decode(data.corpus.val))
        else:
            corpus = data.corpus
        nats = model.evaluate(corpus, "val" if split == "test" else "train")
        print(f"{info['model']} ({info.get('steps')} steps) on {data.name} "
              f"[{'validation' if split == 'test' else 'train'}]")
        print(f"{nats:.4f} nats/char ({nats / math.log(2):.3f} bits/char); unigram baseline "
              f"{corpus.unigram_nats():.4f} nats/char")
        return 0
    X, y = (data.X_test, data.y_test) if split == "test" else (data.X_train, data.y_train)
    if y is None:
        raise CLIError(f"{data_spec}: no labels to evaluate against")
    if spec.input != "seq2seq":
        X = _shape_for(spec, X, data_spec)
        want = tuple(info.get("n_features", X.shape[1:]))
        if tuple(X.shape[1:]) != want:
            raise CLIError(f"{data_spec}: the model was trained on inputs of shape (N, "
                           f"{', '.join(map(str, want))}), got {X.shape}")
    try:
        m = _scores(model, spec, X, y)
    except ValueError as e:
        raise CLIError(f"{data_spec}: {e}") from None
    print(f"{info['model']} (epoch {info.get('epoch')}) on {data.name} [{split}, "
          f"{len(X)} samples]")
    print(_format_metrics(m))
    return 0


def _cmd_predict(args) -> int:
    from shendu.audio.cli import is_audio_predict, predict_audio

    if is_audio_predict(args):                                # speech: shendu.audio.cli
        return predict_audio(args)
    model, info, spec = _load_for(args)
    if spec.input == "text":
        return _generate(args, model, info)
    if spec.input == "seq2seq":
        return _predict_sequences(args, model, info)
    X = _shape_for(spec, read_features(args.input), args.input)
    want = tuple(info.get("n_features", X.shape[1:]))
    if tuple(X.shape[1:]) != want:
        if spec.input == "flat" and X.ndim == 2 and X.shape[1] == want[0] + 1:
            X = X[:, :want[0]] if info.get("target") is None else X  # drop a label column
        if tuple(X.shape[1:]) != want:
            raise CLIError(f"{args.input}: the model takes inputs of shape (N, "
                           f"{', '.join(map(str, want))}), got {X.shape}")
    try:
        out = np.asarray(model.predict_proba(X) if args.proba else model.predict(X))
    except (ValueError, AttributeError) as e:
        raise CLIError(f"{args.input}: {e}") from None
    _write_predictions(args, out)
    return 0


def _write_predictions(args, out: np.ndarray) -> None:
    if args.output:
        if args.output.endswith(".npy"):
            arr = np.asarray(out)
            # labels of mixed Python types would be an object array: store them as text
            np.save(args.output, arr.astype(str) if arr.dtype.kind == "O" else arr)
        else:
            np.savetxt(args.output, out.reshape(len(out), -1), delimiter=",",
                       fmt="%d" if np.issubdtype(out.dtype, np.integer) else "%.6g")
        print(f"wrote {len(out)} predictions to {args.output}")
    else:
        for row in out.reshape(len(out), -1):
            print(",".join(str(int(v)) if np.issubdtype(out.dtype, np.integer) else f"{v:.6g}"
                           for v in row))


def _generate(args, model, info) -> int:
    """``shendu predict CKPT "prompt" --length N``: text from a character language model."""
    import shendu

    vocab = info.get("vocab") or getattr(model, "vocab", None)
    if not vocab:
        raise CLIError(f"{args.checkpoint}: the checkpoint has no vocabulary")
    prompt = args.input
    bad = sorted(set(prompt) - set(vocab))
    if not prompt or bad:
        raise CLIError("the prompt needs at least one character" if not prompt else
                       f"the prompt has characters the model never saw: {''.join(bad)!r}")
    if args.length < 0 or args.temperature < 0:
        raise CLIError("--length and --temperature must be >= 0")
    shendu.manual_seed(args.seed)
    if hasattr(model, "vocab"):                                  # CharLM
        text = model.generate(prompt, args.length, temperature=args.temperature,
                              top_k=args.top_k)
    else:                                                        # CharTransformerLM
        index = {c: i for i, c in enumerate(vocab)}
        ids = model.generate(np.array([[index[c] for c in prompt]]), args.length,
                             temperature=args.temperature, top_k=args.top_k)
        text = "".join(vocab[int(i)] for i in ids[0])
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {len(text)} characters to {args.output}")
    else:
        print(text)
    return 0


def _predict_sequences(args, model, info) -> int:
    """Token sequences from a file (rows padded with the pad id) or the command line
    (``"3 1 4 1 5"``, one sequence; ``;`` separates several)."""
    if os.path.exists(args.input):
        X = np.asarray(read_features(args.input))
        if X.ndim == 1:
            X = X[None]
        if X.ndim != 2 or not np.all(X == np.round(X)):
            raise CLIError(f"{args.input}: expected rows of integer tokens, got shape "
                           f"{X.shape}")
        seqs = X.astype(np.int64)
    else:
        try:
            seqs = [np.array([int(t) for t in re.split(r"[\s,]+", part.strip()) if t],
                             np.int64) for part in args.input.split(";") if part.strip()]
        except ValueError:
            raise CLIError(f"{args.input!r} is neither a file nor integer tokens such as "
                           "'3 1 4 1 5'") from None
        if not seqs:
            raise CLIError("no tokens to predict from")
    try:
        out = model.predict(seqs)
    except ValueError as e:
        raise CLIError(f"{args.input}: {e}") from None
    rows = [np.asarray(r) for r in out]
    pad = info.get("pad_id")
    lines = [" ".join(str(int(v)) for v in r if pad is None or v != pad) for r in rows]
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {len(lines)} predictions to {args.output}")
    else:
        print("\n".join(lines))
    return 0
