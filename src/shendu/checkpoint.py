"""Checkpoints of a training run, exact resume, and Ctrl-C that keeps the work.

A checkpoint holds everything the loop of :mod:`shendu.train` needs to go on as if it had
never stopped: the model's ``state_dict``, the optimizer's, every stateful callback's (the
learning-rate scheduler, :class:`~shendu.train.EarlyStopping`, :class:`ModelCheckpoint`),
the epoch, the batch within it and the global step, the running sums of the epoch in
progress, the history, shendu's random generator and each data loader's position (its epoch,
the batches it has yielded, this epoch's order and its own generator). It is one shendu file
(safetensors + JSON, see :mod:`shendu.io`), written atomically.

>>> from shendu.checkpoint import ModelCheckpoint                     # doctest: +SKIP
>>> fit(model, loss, opt, loader, epochs=10,
...     callbacks=[ModelCheckpoint("runs/a", every_n_steps=100, keep_last=3,
...                                monitor="val_loss")])              # doctest: +SKIP
>>> fit(model, loss, opt, loader, epochs=10, resume="runs/a")       # doctest: +SKIP

Resuming. ``fit(..., resume=path)`` (a checkpoint file, or a folder: its newest checkpoint,
or a fresh start if it has none) rebuilds nothing: build the model, optimizer, scheduler,
loaders and callbacks as for the first run, seed as for the first run, then resume. The run
then ends with weights, history and random state bit-identical to one that was never
interrupted, whether it stopped between epochs or in the middle of one.

Ctrl-C. During ``fit`` the first Ctrl-C (SIGINT) only raises a flag: the current batch
finishes (forward, backward, optimizer step, callbacks), every :class:`ModelCheckpoint`
writes a checkpoint, and ``fit`` returns the history of the epochs completed so far. A
second Ctrl-C aborts at once, as usual. A callback may ask for the same by raising
``KeyboardInterrupt`` from any hook. (A ``KeyboardInterrupt`` raised anywhere else — in the
model, in the data loading — propagates as usual, and the last periodic checkpoint is what
remains.)
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import warnings
from pathlib import Path

import numpy as np

from shendu import backend
from shendu.io import FileFormatError, _checkpoint_bytes, atomic_write, load_checkpoint
from shendu.train import (
    Callback,
    EarlyStopping,
    History,
    LRSchedulerCallback,
    _monitor_mode,
    _monitored,
)

__all__ = ["ModelCheckpoint", "latest_checkpoint", "list_checkpoints", "trainer_state",
           "restore_trainer", "deferred_interrupt", "CHECKPOINT_VERSION"]

#: Version of the trainer state inside a checkpoint.
CHECKPOINT_VERSION = 1
_NAME = re.compile(r"^epoch(\d{4,})-step(\d{8,})(-mid)?\.ckpt$")
_BEST = "best.ckpt"


# ------------------------------------------------------------------- the state
def _callback_state(cb):
    """A callback's state as a tree of arrays and JSON values, or ``None`` if it has none."""
    if callable(getattr(cb, "state_dict", None)):
        return cb.state_dict()
    if isinstance(cb, LRSchedulerCallback):
        return {"scheduler": cb.scheduler.state_dict()}
    if isinstance(cb, EarlyStopping):
        return {k: getattr(cb, k, None) for k in ("wait", "best", "best_epoch", "best_weights",
                                                   "stopped_epoch")}
    return None


def _load_callback_state(cb, state) -> None:
    if callable(getattr(cb, "load_state_dict", None)):
        cb.load_state_dict(state)
    elif isinstance(cb, LRSchedulerCallback):
        cb.scheduler.load_state_dict(state["scheduler"])
    elif isinstance(cb, EarlyStopping):
        for k, v in state.items():
            setattr(cb, k, v)


def _loader_state(loader):
    if not callable(getattr(loader, "state_dict", None)):
        return None
    st = dict(loader.state_dict())
    if st.get("order") is not None:  # an array in the data section, not a JSON list
        st["order"] = np.asarray(st["order"], dtype=np.int64)
    return st


def trainer_state(trainer) -> dict:
    """Everything needed to resume ``trainer`` exactly, as the parts of a checkpoint.

    ``trainer.in_epoch`` tells whether an epoch is in progress (then ``batch`` batches of
    epoch ``epoch`` are done and ``meter`` holds their sums) or epoch ``epoch`` is complete.
    """
    meter = getattr(trainer, "_meter", None)
    in_epoch = bool(getattr(trainer, "in_epoch", False))
    callbacks = []
    for cb in trainer.callbacks:
        st = _callback_state(cb)
        callbacks.append(None if st is None else {"class": type(cb).__name__, "state": st})
    return {
        "trainer": {"version": CHECKPOINT_VERSION, "epoch": int(trainer.epoch),
                    "batch": int(getattr(trainer, "batch", 0)) if in_epoch else 0,
                    "in_epoch": in_epoch, "global_step": int(trainer.global_step),
                    "stop_training": bool(trainer.stop_training),
                    "epochs": int(getattr(trainer, "epochs", 0))},
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "callbacks": callbacks,
        "history": {"epochs": list(trainer.history.epochs),
                    "values": {k: list(v) for k, v in trainer.history.items()}},
        "meter": ({"sums": dict(meter.sums), "counts": dict(meter.counts)}
                  if in_epoch and meter is not None else None),
        "train_loader": _loader_state(trainer.train_loader),
        "val_loader": _loader_state(trainer.val_loader),
        "rng": backend.get_rng_state(),
    }


def _resolve_resume(resume) -> Path | None:
    p = Path(os.fspath(resume))
    if p.is_dir():
        return latest_checkpoint(p)
    if not p.exists():
        raise FileNotFoundError(f"fit: resume={str(p)!r}: no such checkpoint file or folder")
    return p


def restore_trainer(trainer, resume) -> tuple[int, int] | None:
    """Put ``trainer`` (built as for the first run, after ``on_train_begin``) back where the
    checkpoint ``resume`` left it. ``resume`` is a checkpoint file, or a folder (its newest
    checkpoint; ``None`` is returned, and nothing changed, when it holds none).

    Returns ``(epoch, batch)``: the epoch to run next and how many of its batches are done.
    """
    from shendu.train import _Meter

    path = _resolve_resume(resume)
    if path is None:
        return None
    st = load_checkpoint(path)
    t = st.get("trainer")
    if not isinstance(t, dict) or t.get("version") != CHECKPOINT_VERSION:
        raise FileFormatError(path, "not a checkpoint of the training loop (no trainer state "
                                    f"of version {CHECKPOINT_VERSION})")
    where = f"fit: resume={str(path)!r}"
    try:
        trainer.model.load_state_dict(st["model"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise ValueError(f"{where}: the checkpoint's weights do not fit this model: {e}") \
            from None
    try:
        trainer.optimizer.load_state_dict(st["optimizer"])
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{where}: the checkpoint's optimizer state does not fit this "
                         f"optimizer: {e}") from None
    _restore_callbacks(trainer, st.get("callbacks") or [], where)
    h = History()
    hist = st.get("history") or {}
    h.epochs = list(hist.get("epochs", []))
    for k, v in (hist.get("values") or {}).items():
        h[k] = list(v)
    trainer.history = h
    trainer.global_step = int(t["global_step"])
    trainer.stop_training = bool(t.get("stop_training", False))
    for name in ("train_loader", "val_loader"):
        saved, loader = st.get(name), getattr(trainer, name)
        if saved is not None and callable(getattr(loader, "load_state_dict", None)):
            loader.load_state_dict(saved)
    epoch, in_epoch = int(t["epoch"]), bool(t["in_epoch"])
    if in_epoch:
        meter = _Meter(trainer.metrics)
        saved = st.get("meter") or {}
        for k in meter.sums:
            meter.sums[k] = saved.get("sums", {}).get(k, 0.0)
            meter.counts[k] = saved.get("counts", {}).get(k, 0)
        trainer._meter = meter
        start = (epoch, int(t["batch"]))
    else:
        start = (epoch + 1, 0)
    trainer.epoch = epoch
    backend.set_rng_state(st["rng"])
    if trainer.stop_training:  # a callback had ended the run: it stays ended
        return (max(start[0], int(getattr(trainer, "epochs", start[0]))), 0)
    return start


def _restore_callbacks(trainer, saved: list, where: str) -> None:
    """Give each saved callback state to the next callback of the same class, in order."""
    used: set[int] = set()
    for entry in saved:
        if entry is None:
            continue
        for i, cb in enumerate(trainer.callbacks):
            if i not in used and type(cb).__name__ == entry.get("class") \
                    and _callback_state(cb) is not None:
                _load_callback_state(cb, entry["state"])
                used.add(i)
                break
        else:
            if entry.get("class") == "ModelCheckpoint":
                continue  # its state (the best so far) does not change the run
            warnings.warn(f"{where}: the checkpoint holds the state of a "
                          f"{entry.get('class')} callback, but this fit has none to give it "
                          "to; the resumed run may differ from an uninterrupted one",
                          UserWarning, stacklevel=4)


# ---------------------------------------------------------------- the callback
def _key(name: str) -> tuple[int, int, int] | None:
    m = _NAME.match(name)
    if m is None:
        return None
    return (int(m.group(2)), 0 if m.group(3) else 1, int(m.group(1)))


def list_checkpoints(dirpath) -> list[Path]:
    """The periodic checkpoints :class:`ModelCheckpoint` wrote in ``dirpath``, oldest first
    (by global step; at the same step the mid-epoch one before the end-of-epoch one)."""
    d = Path(os.fspath(dirpath))
    if not d.is_dir():
        return []
    found = [(k, d / n) for n in os.listdir(d) if (k := _key(n)) is not None]
    return [p for _, p in sorted(found)]


def latest_checkpoint(dirpath) -> Path | None:
    """The newest checkpoint in ``dirpath``, or ``None``."""
    found = list_checkpoints(dirpath)
    return found[-1] if found else None


class ModelCheckpoint(Callback):
    """Write checkpoints of the run into ``dirpath``.

    Parameters
    ----------
    dirpath : folder for the checkpoints (created if needed).
    every_n_epochs : write one after every n-th epoch (``None``: never at epoch ends).
    every_n_steps : also write one after every n-th optimizer step, mid-epoch included.
    keep_last : keep the newest ``keep_last`` periodic checkpoints, delete older ones
        (``None`` keeps all).
    monitor, mode : also keep the best epoch by this logged value (``"val_loss"``,
        ``"accuracy"``...) in ``best.ckpt``; ``mode`` ``"min"``, ``"max"`` or ``"auto"``
        (``max`` for accuracies).
    save_on_interrupt : write one when Ctrl-C stops ``fit``.

    Files are ``epochNNNN-stepSSSSSSSS.ckpt`` after epoch NNNN (counted from 1) and
    ``epochNNNN-stepSSSSSSSS-mid.ckpt`` inside it. Each is written atomically, so after a
    crash at any moment the newest file on disk (:func:`latest_checkpoint`) is whole.
    ``last_path`` and ``best_path`` name the newest and the best file written.
    """

    def __init__(self, dirpath, every_n_epochs: int | None = 1, every_n_steps: int | None = None,
                 keep_last: int | None = 3, monitor: str | None = None, mode: str = "auto",
                 save_on_interrupt: bool = True, verbose: int = 0) -> None:
        for name, v in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps),
                        ("keep_last", keep_last)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                  or v < 1):
                raise ValueError(f"ModelCheckpoint: {name} must be an int >= 1 or None, got "
                                 f"{v!r}")
        self.dirpath = Path(os.fspath(dirpath))
        self.every_n_epochs, self.every_n_steps = every_n_epochs, every_n_steps
        self.keep_last, self.monitor = keep_last, monitor
        self.mode = _monitor_mode(monitor, mode, "ModelCheckpoint") if monitor else None
        self.save_on_interrupt, self.verbose = save_on_interrupt, verbose
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_path: Path | None = None
        self.last_path: Path | None = None
        self._saved_at = None

    # -- state, so a resumed run keeps comparing against the same best
    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")

    def on_train_begin(self, logs: dict) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        for n in os.listdir(self.dirpath):  # temporaries of a save that a crash cut short
            if n.startswith(".tmp-") and n.endswith(".part"):
                with contextlib.suppress(OSError):
                    os.unlink(self.dirpath / n)
        self._saved_at = None

    def on_checkpoint(self, event: str) -> None:
        t = self.trainer
        if event == "batch":
            if self.every_n_steps and t.global_step % self.every_n_steps == 0:
                self._write(periodic=True, best=False)
        elif event == "epoch":
            due = bool(self.every_n_epochs) and (t.epoch + 1) % self.every_n_epochs == 0
            improved = False
            if self.monitor is not None:
                logs = {k: v[-1] for k, v in t.history.items() if v}
                value = _monitored(logs, self.monitor, "ModelCheckpoint")
                if self.best is None or (value < self.best if self.mode == "min"
                                         else value > self.best):
                    self.best, self.best_epoch, improved = value, int(t.epoch), True
            if due or improved:
                self._write(periodic=due, best=improved)
        elif event == "interrupt" and self.save_on_interrupt:
            self._write(periodic=True, best=False)

    def _write(self, periodic: bool, best: bool) -> None:
        t = self.trainer
        in_epoch = bool(getattr(t, "in_epoch", False))
        at = (t.global_step, in_epoch, t.epoch)
        if not best and at == self._saved_at:
            return
        data = _checkpoint_bytes(trainer_state(t))
        if periodic:
            name = f"epoch{t.epoch + 1:04d}-step{t.global_step:08d}{'-mid' if in_epoch else ''}"
            path = self.dirpath / f"{name}.ckpt"
            atomic_write(path, data)
            self.last_path, self._saved_at = path, at
            self._prune(keep=path)
        if best:
            self.best_path = self.dirpath / _BEST
            atomic_write(self.best_path, data)
        if self.verbose:
            what = ", ".join(w for w, on in (("checkpoint", periodic), ("best", best)) if on)
            print(f"ModelCheckpoint: wrote {what} at epoch {t.epoch + 1}, step "
                  f"{t.global_step}", file=sys.stderr)

    def _prune(self, keep: Path) -> None:
        if self.keep_last is None:
            return
        found = list_checkpoints(self.dirpath)
        for p in found[:max(len(found) - self.keep_last, 0)]:
            if p != keep:
                with contextlib.suppress(OSError):
                    p.unlink()


# ------------------------------------------------------------------- Ctrl-C
@contextlib.contextmanager
def deferred_interrupt(trainer):
    """While training, turn the first Ctrl-C into ``trainer.interrupted = True`` (the loop
    finishes the batch, checkpoints and returns); a second Ctrl-C raises
    ``KeyboardInterrupt`` at once. Only in the main thread, and only if SIGINT still has
    Python's default handler (a handler of the user's own is left alone)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def handler(signum, frame):
        trainer.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nfit: interrupted - finishing the current batch, then stopping (Ctrl-C again "
              "to abort now)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
