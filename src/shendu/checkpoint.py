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

The state itself is :meth:`shendu.train.Trainer.state_dict` (each callback's own
``state_dict()`` included); this module writes it to files and names them. It depends on
:mod:`shendu.train`, never the other way round.

Ctrl-C. During ``fit`` the first Ctrl-C (SIGINT) only raises a flag: the current batch
finishes (forward, backward, optimizer step, callbacks), every :class:`ModelCheckpoint`
writes a checkpoint, and ``fit`` returns the history of the epochs completed so far. A
second Ctrl-C aborts at once, as usual. A callback may ask for the same by raising
``KeyboardInterrupt`` from any hook. (A ``KeyboardInterrupt`` raised anywhere else — in the
model, in the data loading — propagates as usual, and the last periodic checkpoint is what
remains.)

Distributed runs (``fit(..., distributed=True)``). Every rank holds the same state (but for
its random state, which the checkpoint holds for every rank as ``rng_ranks``), so rank 0
alone writes, in the same format; the folder given to ``resume`` must be visible to every
rank (rank 0 picks the file, every rank reads it). A Ctrl-C on any rank stops every rank
after the same batch and rank 0 writes the checkpoint; a rank that dies leaves the newest
file whole (each is written atomically).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from shendu.io import _checkpoint_bytes, atomic_write
from shendu.train import (  # noqa: F401 - deferred_interrupt and the names, for old imports
    TRAINER_STATE_VERSION,
    Callback,
    _monitor_mode,
    _monitored,
    deferred_interrupt,
    latest_checkpoint,
    list_checkpoints,
)

__all__ = ["ModelCheckpoint", "latest_checkpoint", "list_checkpoints", "trainer_state",
           "restore_trainer", "deferred_interrupt", "CHECKPOINT_VERSION"]

#: Version of the trainer state inside a checkpoint.
CHECKPOINT_VERSION = TRAINER_STATE_VERSION
_BEST = "best.ckpt"


def trainer_state(trainer) -> dict:
    """``trainer.state_dict()``: everything needed to resume it exactly."""
    return trainer.state_dict()


def restore_trainer(trainer, resume) -> tuple[int, int] | None:
    """``trainer.resume(resume)``: put ``trainer`` back where the checkpoint file (or a
    folder's newest checkpoint) left it; ``(epoch, batch)`` to go on from, or ``None``."""
    return trainer.resume(resume)


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
        self._saved_at = None
        if not getattr(self.trainer, "is_main_process", True):
            return      # on a process group rank 0 alone writes
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
        main = getattr(t, "is_main_process", True)  # the others know the names, write nothing
        ranks = t._rank_states() if callable(getattr(t, "_rank_states", None)) else {}
        data = _checkpoint_bytes({**t.state_dict(), **ranks}) if main else b""
        if periodic:
            name = f"epoch{t.epoch + 1:04d}-step{t.global_step:08d}{'-mid' if in_epoch else ''}"
            path = self.dirpath / f"{name}.ckpt"
            if main:
                atomic_write(path, data)
                self._prune(keep=path)
            self.last_path, self._saved_at = path, at
        if best:
            self.best_path = self.dirpath / _BEST
            if main:
                atomic_write(self.best_path, data)
        if self.verbose and main:
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
