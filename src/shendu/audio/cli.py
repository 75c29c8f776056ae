"""``shendu train audio --data DIR`` and ``shendu predict CKPT a.wav b.wav ...``.

``train``: DIR is a folder of WAV files in FSDD's naming (``{digit}_{speaker}_{take}.wav``:
FSDD's split, takes 0-4 for testing) or a folder with one sub-folder of recordings per class
(the sub-folder's name is the label; a stratified ``--test-size`` share is held out).
``fsdd`` names the FSDD folder of the shared data ($SHENDU_DATA/fsdd).

``eval``: a checkpoint of ``shendu train audio`` scored (accuracy, log-loss) on the split of
the folder it was trained on (``--data`` for another folder, ``--split train|test``).

``predict``: one line per file, ``path: label (probability p)``; a file that cannot be used
(missing, empty, too short, too long, corrupt, not audio) gives one line on stderr naming the
file and the problem, the other files are still answered, and the exit status is 1.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

__all__ = ["AUDIO_MODELS", "AUDIO_SUFFIXES", "train_audio", "predict_audio", "eval_audio",
           "is_audio_predict", "is_audio_checkpoint", "read_folder"]

AUDIO_MODELS = ("audio", "audioclassifier")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
#: the longest recording ``predict`` reads (seconds); longer files are refused unread
MAX_SECONDS = 60.0


def _error(msg: str):
    from shendu.cli import CLIError

    return CLIError(msg)


def read_folder(path: str, test_size: float = 0.2, seed: int = 0, sample_rate: int = 8000):
    """``(X_train, X_test, y_train, y_test, name)`` from FSDD naming or class sub-folders."""
    from shendu.audio.io import load
    from shendu.data.datasets import stratified_split
    from shendu.data.fsdd import _NAME, fsdd

    if not os.path.isdir(path):
        raise _error(f"{path}: no such folder (pass a folder of WAV files: FSDD's naming "
                     "{digit}_{speaker}_{take}.wav, or one sub-folder per class)")
    names = os.listdir(path)
    if any(_NAME.match(n) for n in names):
        s = fsdd(path, sample_rate=sample_rate)
        return s.X_train, s.X_test, s.y_train, s.y_test, f"FSDD ({path})"
    waves, labels = [], []
    for c in sorted(n for n in names if os.path.isdir(os.path.join(path, n))):
        for f in sorted(os.listdir(os.path.join(path, c))):
            if f.lower().endswith(AUDIO_SUFFIXES):
                waves.append(load(os.path.join(path, c, f), sample_rate)[0])
                labels.append(c)
    if len(set(labels)) < 2:
        raise _error(f"{path}: found no recordings to train on (expected FSDD's naming "
                     "{digit}_{speaker}_{take}.wav, or one sub-folder of audio files per "
                     "class, at least two classes)")
    idx = np.arange(len(waves))
    tr, te, ytr, yte = stratified_split(idx, np.array(labels), test_size, seed)
    return [waves[i] for i in tr], [waves[i] for i in te], ytr, yte, path


def _resolve_data(data: str, data_root: str | None) -> str:
    """``fsdd`` as the shared FSDD folder when no folder of that name exists."""
    from shendu.cli import _data_root

    if data.lower() == "fsdd" and not os.path.isdir(data):
        root = _data_root(data_root)
        if root is None or not (root / "fsdd").is_dir():
            raise _error("fsdd: the recordings are not here; pass --data DIR (the "
                         "recordings/ folder of "
                         "https://github.com/Jakobovski/free-spoken-digit-dataset) or set "
                         "$SHENDU_DATA")
        data = str(root / "fsdd")
    return data


def train_audio(args) -> int:
    """``shendu train audio``: fit an AudioClassifier, write last.ckpt and best.ckpt."""
    import shendu
    from shendu.cli import save_model_checkpoint
    from shendu.models.audio import AudioClassifier

    data = _resolve_data(args.data, args.data_root)
    Xtr, Xte, ytr, yte, name = read_folder(data, args.test_size, args.seed or 0)
    kw = {"random_state": args.seed or 0, "verbose": 1}
    if args.epochs is not None:
        kw["max_iter"] = args.epochs
    if args.lr is not None:
        kw["learning_rate_init"] = args.lr
    if args.batch_size is not None:
        kw["batch_size"] = args.batch_size
    shendu.manual_seed(args.seed or 0)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    model = AudioClassifier(**kw).fit(Xtr, ytr)
    seconds = time.perf_counter() - t0
    acc_tr = model.score(Xtr, ytr)
    acc_te = model.score(Xte, yte) if len(Xte) else float("nan")
    info = {"model": "AudioClassifier", "data": data, "seed": args.seed or 0,
            "test_size": args.test_size,
            "epoch": model.n_iter_, "history": [{"epoch": model.n_iter_, "accuracy": acc_tr,
                                                 "val_accuracy": acc_te}]}
    last, best = os.path.join(args.out, "last.ckpt"), os.path.join(args.out, "best.ckpt")
    save_model_checkpoint(last, model, info)
    save_model_checkpoint(best, model, info)
    print(f"AudioClassifier on {name}: {len(Xtr)} train / {len(Xte)} test, "
          f"{model.n_iter_} epochs, {seconds:.1f} s")
    print(f"train: accuracy {acc_tr:.4f}")
    print(f"test:  accuracy {acc_te:.4f}")
    print(f"checkpoints: {last} (last), {best} (best)")
    return 0


def _load_audio_checkpoint(path: str):
    """``(model, info)`` of a checkpoint, or ``(None, None)`` when it holds no
    AudioClassifier (or is not a checkpoint)."""
    from shendu.io import FileFormatError, load_checkpoint
    from shendu.models.audio import AudioClassifier

    if not os.path.isfile(path):
        return None, None
    try:
        state = load_checkpoint(path)
    except (FileFormatError, OSError):
        return None, None
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, AudioClassifier):
        return None, None
    info = state.get("cli")
    return model, info if isinstance(info, dict) else {}


def is_audio_checkpoint(path: str) -> bool:
    """Whether ``path`` is a checkpoint holding an AudioClassifier."""
    return _load_audio_checkpoint(path)[0] is not None


def eval_audio(args) -> int:
    """``shendu eval CKPT [--data DIR] [--split test|train]`` for an AudioClassifier: accuracy
    and log-loss on FSDD's split (or the stratified split) of the folder."""
    from shendu.cli import _format_metrics, _metrics

    model, info = _load_audio_checkpoint(args.checkpoint)
    if model is None:
        raise _error(f"{args.checkpoint}: not a checkpoint of `shendu train audio`")
    data = args.data or info.get("data")
    if not data:
        raise _error("no data: pass --data DIR (a folder of recordings)")
    data = _resolve_data(str(data), getattr(args, "data_root", None))
    Xtr, Xte, ytr, yte, name = read_folder(data, info.get("test_size", 0.2),
                                           info.get("seed", 0), model.sample_rate)
    X, y = (Xte, yte) if args.split == "test" else (Xtr, ytr)
    if not len(X):
        raise _error(f"{data}: no recordings in the {args.split} split")
    try:
        m = _metrics(model, X, np.asarray(y))
    except ValueError as e:
        raise _error(f"{data}: {e}") from None
    print(f"{info.get('model', 'AudioClassifier')} (epoch {info.get('epoch')}) on {name} "
          f"[{args.split}, {len(X)} samples]")
    print(_format_metrics(m))
    return 0


def is_audio_predict(args) -> bool:
    """Whether ``shendu predict`` was given audio files."""
    inputs = [args.input, *getattr(args, "more_inputs", [])]
    return any(str(p).lower().endswith(AUDIO_SUFFIXES) for p in inputs)


def predict_audio(args) -> int:
    """``shendu predict CKPT a.wav b.wav ...``: one answer line per file."""
    from shendu.audio.io import AudioFileError, load
    from shendu.io import FileFormatError, load_checkpoint
    from shendu.models.audio import AudioClassifier

    if not os.path.isfile(args.checkpoint):
        raise _error(f"{args.checkpoint}: no such checkpoint")
    try:
        state = load_checkpoint(args.checkpoint)
    except FileFormatError as e:
        raise _error(str(e)) from None
    model = state.get("model")
    if not isinstance(model, AudioClassifier):
        raise _error(f"{args.checkpoint}: holds a {type(model).__name__}, not an "
                     "AudioClassifier; audio files need a model from `shendu train audio`")
    inputs = [args.input, *getattr(args, "more_inputs", [])]
    bad = 0
    lines = []
    for p in inputs:
        try:
            x, _ = load(p, model.sample_rate, max_seconds=MAX_SECONDS)
        except AudioFileError as e:
            print(f"{e.path}: error: {e.problem}", file=sys.stderr, flush=True)
            bad += 1
            continue
        proba = model.predict_proba([x])[0]
        k = int(np.argmax(proba))
        label = model.classes_[k]
        label = label.item() if hasattr(label, "item") else label
        line = f"{p}: {label} (probability {proba[k]:.3f})"
        print(line, flush=True)
        lines.append(line)
    if getattr(args, "output", None):
        with open(args.output, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return 1 if bad else 0
