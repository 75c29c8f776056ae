"""The training loop: one :class:`Trainer` (and the :func:`fit` shortcut) that you can read
top to bottom, with callbacks for everything users plug in.

One epoch is::

    model.train()
    for batch in train_loader:                   # (inputs..., target)
        optimizer.zero_grad()
        loss = loss_fn(model(*inputs), target)
        guard: the loss must be finite           # else stop, naming epoch and batch
        loss.backward()                          # backpropagation (the autograd engine)
        guard: every gradient must be finite
        optimizer.step()
    model.eval(); with no_grad(): the same over val_loader, no step
    history += the epoch's mean loss and metrics; callbacks see them

and a :class:`Callback` can act at each point: ``on_train_begin``, ``on_epoch_begin``,
``on_batch_begin``, ``on_after_backward`` (e.g. to clip gradients), ``on_batch_end``,
``on_epoch_end`` and ``on_train_end``; setting ``trainer.stop_training = True`` ends
training after the current epoch. Built in: :class:`EarlyStopping` (patience, restore
the best weights), :class:`LRSchedulerCallback` (any ``shendu.optim.lr_scheduler``,
including ``ReduceLROnPlateau`` on a monitored metric), :class:`GradientClipping` and
:class:`LambdaCallback` (plain functions as hooks).

Epochs are numbered from 0 in callbacks and in ``History.epochs`` (as in Keras) and from 1
in messages and the progress bar. The trainer keeps its state in plain attributes
(``epoch``, ``global_step``, ``history``, ``stop_training``, and ``in_epoch``/``batch``
for the epoch in progress); :meth:`Trainer.state_dict` gathers them with the model,
optimizer, callbacks (their own ``state_dict()``), data-loader positions and random state,
and :meth:`Trainer.load_state_dict` puts them back. :class:`shendu.checkpoint.ModelCheckpoint`
writes that state to files, ``fit(..., resume=path)`` continues from one bit for bit, and
the first Ctrl-C finishes the current batch, checkpoints and returns the history so far.
(This module never imports :mod:`shendu.checkpoint`; the dependency is one-way.)

On a process group of several processes (``fit(..., distributed=True)``, or any ``fit``
under ``mpiexec``) the same loop runs on every rank, each on its slice of every batch, with
gradients averaged, values reduced, rank 0 alone printing and checkpointing, and a stop
asked on any rank agreed on by all: :mod:`shendu.distributed.training` says how.

>>> import numpy as np, shendu
>>> from shendu import nn, optim
>>> from shendu.data import DataLoader, TensorDataset
>>> from shendu.train import fit
>>> _ = shendu.manual_seed(0)
>>> X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
>>> y = (X.sum(1) > 0).astype(np.int64)
>>> model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
>>> h = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.5),
...         DataLoader(TensorDataset(X, y), batch_size=16), epochs=20,
...         metrics=["accuracy"], verbose=0)
>>> h["accuracy"][-1] > 0.9
True
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shendu import backend
from shendu.autograd import no_grad
from shendu.tensor import Tensor

__all__ = ["fit", "Trainer", "History", "Callback", "EarlyStopping", "LRSchedulerCallback",
           "GradientClipping", "LambdaCallback", "NonFiniteError", "accuracy", "mse", "mae",
           "list_checkpoints", "latest_checkpoint"]


class NonFiniteError(FloatingPointError):
    """The loss or a gradient became NaN or infinite during training."""


# ------------------------------------------------------------------------------ metrics
# A metric maps (output, target) arrays of one batch to (sum over samples, number of
# samples); the epoch's value is the total sum over the total count, so it is exact however
# the data is cut into batches.

def _as_np(t) -> np.ndarray:
    return t.data if isinstance(t, Tensor) else np.asarray(t)


def accuracy(output, target) -> tuple[float, int]:
    """Correct predictions. ``output`` (N, C) scores -> argmax; (N,) or (N, 1) logits of a
    binary model -> ``> 0`` (use with ``BCEWithLogitsLoss``). ``target`` holds class
    indices, or one-hot/probabilities (N, C) -> argmax."""
    out, tgt = _as_np(output), _as_np(target)
    if out.ndim >= 2 and out.shape[-1] > 1:
        pred = out.argmax(axis=-1)
    else:
        pred = (out.reshape(out.shape[0], -1)[:, 0] > 0).astype(np.int64)
    if tgt.ndim == pred.ndim + 1 and tgt.shape[-1] > 1:
        tgt = tgt.argmax(axis=-1)
    tgt = tgt.reshape(pred.shape)
    return float(np.count_nonzero(pred == tgt)), pred.size


def mse(output, target) -> tuple[float, int]:
    """Squared error summed over all elements (divided by their count at the epoch end)."""
    out, tgt = _as_np(output), _as_np(target)
    d = out.astype(np.float64) - np.asarray(tgt, np.float64).reshape(out.shape)
    return float((d * d).sum()), d.size


def mae(output, target) -> tuple[float, int]:
    """Absolute error summed over all elements."""
    out, tgt = _as_np(output), _as_np(target)
    d = out.astype(np.float64) - np.asarray(tgt, np.float64).reshape(out.shape)
    return float(np.abs(d).sum()), d.size


_METRICS: dict[str, Callable] = {"accuracy": accuracy, "acc": accuracy, "mse": mse, "mae": mae}


def _resolve_metrics(metrics) -> dict[str, Callable]:
    """Names or callables -> {name: fn}. A user's callable ``fn(output, target)`` may
    return a batch mean (weighted by batch size at the end) or a ``(sum, count)`` pair."""
    out = {}
    for m in metrics or ():
        if isinstance(m, str):
            if m not in _METRICS:
                raise ValueError(f"fit: unknown metric {m!r}; choose from "
                                 f"{sorted(_METRICS)} or pass a function(output, target)")
            out["accuracy" if m == "acc" else m] = _METRICS[m]
        elif callable(m):
            out[getattr(m, "__name__", type(m).__name__)] = m
        else:
            raise TypeError(f"fit: a metric must be a name or a callable, got {m!r}")
    return out


# ------------------------------------------------------------------------------ history
class History(dict):
    """What ``fit`` returns: a dict from ``"loss"``, ``"val_loss"``, ``"accuracy"``,
    ``"lr"``... to a list with one value per epoch, plus ``epochs`` (their numbers).
    ``lr`` is the learning rate of the first parameter group during that epoch (before
    the scheduler's end-of-epoch step)."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[int] = []

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epochs.append(epoch)
        for k, v in logs.items():
            self.setdefault(k, []).append(v)

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.items() if v)
        return f"History({len(self.epochs)} epochs; last: {last})"


# ---------------------------------------------------------------------------- callbacks
class Callback:
    """Base class: override the hooks you need. ``self.trainer`` is set before training,
    so a hook can read ``trainer.model``, ``trainer.optimizer``, ``trainer.history``, or set
    ``trainer.stop_training``. ``logs`` holds the values so far (batch: ``loss``,
    ``batch_size``; epoch end: the epoch's loss, metrics, ``val_*`` and ``lr``)."""

    trainer: Trainer

    def set_trainer(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs: dict) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        pass

    def on_batch_begin(self, batch: int, logs: dict) -> None:
        pass

    def on_after_backward(self, batch: int, logs: dict) -> None:
        pass

    def on_batch_end(self, batch: int, logs: dict) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        pass

    def on_train_end(self, logs: dict) -> None:
        pass

    def on_checkpoint(self, event: str) -> None:
        """The training state is complete and consistent: after a batch (``"batch"``, once
        every ``on_batch_end`` has run), after an epoch (``"epoch"``, its history entry
        added) or when Ctrl-C stops training (``"interrupt"``). Checkpoints are written
        here."""


class LambdaCallback(Callback):
    """Plain functions as hooks: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``.
    Each takes the arguments of the :class:`Callback` method of the same name."""

    _HOOKS = ("on_train_begin", "on_epoch_begin", "on_batch_begin", "on_after_backward",
              "on_batch_end", "on_epoch_end", "on_train_end", "on_checkpoint")

    def __init__(self, **hooks: Callable) -> None:
        for name, fn in hooks.items():
            if name not in self._HOOKS:
                raise TypeError(f"LambdaCallback: unknown hook {name!r}; hooks are "
                                f"{', '.join(self._HOOKS)}")
            if not callable(fn):
                raise TypeError(f"LambdaCallback: {name} must be callable, got {fn!r}")
            setattr(self, name, fn)


def _monitor_mode(monitor: str, mode: str, who: str) -> str:
    if mode == "auto":
        return "max" if ("acc" in monitor or "r2" in monitor) else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"{who}: mode must be 'min', 'max' or 'auto', got {mode!r}")
    return mode


def _monitored(logs: dict, monitor: str, who: str) -> float:
    if monitor not in logs:
        raise KeyError(f"{who}: monitored value {monitor!r} is not among this epoch's logs "
                       f"{sorted(logs)}" + ("; pass val_loader= to fit to get val_* values"
                                            if monitor.startswith("val_") else ""))
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs in a row (Prechelt 1998, "Early stopping — but when?").

    ``mode`` ``"min"`` (losses), ``"max"`` (accuracies) or ``"auto"`` (``max`` when the name
    contains "acc"). With ``restore_best_weights`` the model ends training — stopped early
    or not — with the parameters and buffers of its best epoch. ``best``, ``best_epoch``
    and ``stopped_epoch`` (``None`` if it never fired) tell what happened.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False,
                 verbose: int = 0) -> None:
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        if min_delta < 0:
            raise ValueError(f"EarlyStopping: min_delta must be >= 0, got {min_delta}")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        self.mode = _monitor_mode(monitor, mode, "EarlyStopping")
        self.restore_best_weights, self.verbose = restore_best_weights, verbose

    def on_train_begin(self, logs: dict) -> None:
        self.wait = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.best_weights: dict | None = None
        self.stopped_epoch: int | None = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        value = _monitored(logs, self.monitor, "EarlyStopping")
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = {k: np.array(v, copy=True) for k, v in
                                     self.trainer.model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True
            if self.verbose and getattr(self.trainer, "is_main_process", True):
                print(f"EarlyStopping: {self.monitor} has not improved for {self.wait} "
                      f"epochs; best {self.best:.6g} at epoch {self.best_epoch + 1}; "
                      f"stopping after epoch {epoch + 1}")

    def on_train_end(self, logs: dict) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)

    _STATE = ("wait", "best", "best_epoch", "best_weights", "stopped_epoch")

    def state_dict(self) -> dict:
        """What a resumed run needs to go on counting as this one would have."""
        return {k: getattr(self, k, None) for k in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            if k in state:
                setattr(self, k, state[k])


class LRSchedulerCallback(Callback):
    """Step a learning-rate scheduler once per epoch (``interval="epoch"``, after the
    epoch's validation) or once per optimizer step (``interval="batch"``, e.g. for
    ``OneCycleLR``). ``ReduceLROnPlateau`` is stepped with the epoch's ``monitor`` value
    (default ``val_loss`` if there is a validation set, else ``loss``)."""

    def __init__(self, scheduler, interval: str = "epoch", monitor: str | None = None) -> None:
        if interval not in ("epoch", "batch"):
            raise ValueError(f"LRSchedulerCallback: interval must be 'epoch' or 'batch', got "
                             f"{interval!r}")
        self.scheduler, self.interval, self.monitor = scheduler, interval, monitor
        self.on_plateau = type(scheduler).__name__ == "ReduceLROnPlateau"
        if self.on_plateau and interval == "batch":
            raise ValueError("LRSchedulerCallback: ReduceLROnPlateau steps on an epoch's "
                             "metric; use interval='epoch'")

    def on_batch_end(self, batch: int, logs: dict) -> None:
        if self.interval == "batch":
            self.scheduler.step()

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.interval != "epoch":
            return
        if self.on_plateau:
            monitor = self.monitor or ("val_loss" if "val_loss" in logs else "loss")
            self.scheduler.step(_monitored(logs, monitor, "ReduceLROnPlateau"))
        else:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])


class GradientClipping(Callback):
    """Clip the gradients after ``backward`` and before the optimizer step: each element to
    ``[-max_value, max_value]`` (``clip_grad_value_``), then the total ``norm_type``-norm
    to ``max_norm`` (``clip_grad_norm_``). ``parameters`` default to the model's."""

    def __init__(self, max_norm: float | None = None, norm_type: float = 2.0,
                 max_value: float | None = None, parameters: Iterable | None = None) -> None:
        if max_norm is None and max_value is None:
            raise ValueError("GradientClipping: give max_norm, max_value or both")
        for name, v in (("max_norm", max_norm), ("max_value", max_value)):
            if v is not None and not v > 0:
                raise ValueError(f"GradientClipping: {name} must be > 0, got {v!r}")
        self.max_norm, self.norm_type, self.max_value = max_norm, float(norm_type), max_value
        self.parameters = None if parameters is None else list(parameters)
        self.last_norm: float | None = None   # the total norm before the last clipping

    def on_after_backward(self, batch: int, logs: dict) -> None:
        from shendu.nn.utils import clip_grad_norm_, clip_grad_value_

        params = self.parameters
        if params is None:
            params = self.parameters = list(self.trainer.model.parameters())
        if self.max_value is not None:
            clip_grad_value_(params, self.max_value)
        if self.max_norm is not None:
            self.last_norm = float(clip_grad_norm_(params, self.max_norm, self.norm_type))


# --------------------------------------------------------------- state and Ctrl-C
#: Version of the trainer state inside a checkpoint.
TRAINER_STATE_VERSION = 1
#: Names of the periodic checkpoints :class:`shendu.checkpoint.ModelCheckpoint` writes.
CHECKPOINT_NAME = re.compile(r"^epoch(\d{4,})-step(\d{8,})(-mid)?\.ckpt$")


def _checkpoint_key(name: str) -> tuple[int, int, int] | None:
    m = CHECKPOINT_NAME.match(name)
    if m is None:
        return None
    return (int(m.group(2)), 0 if m.group(3) else 1, int(m.group(1)))


def list_checkpoints(dirpath) -> list[Path]:
    """The periodic checkpoints in ``dirpath``, oldest first (by global step; at the same
    step the mid-epoch one before the end-of-epoch one)."""
    d = Path(os.fspath(dirpath))
    if not d.is_dir():
        return []
    found = [(k, d / n) for n in os.listdir(d) if (k := _checkpoint_key(n)) is not None]
    return [p for _, p in sorted(found)]


def latest_checkpoint(dirpath) -> Path | None:
    """The newest checkpoint in ``dirpath``, or ``None``."""
    found = list_checkpoints(dirpath)
    return found[-1] if found else None


def _loader_state(loader):
    if not callable(getattr(loader, "state_dict", None)):
        return None
    st = dict(loader.state_dict())
    if st.get("order") is not None:  # an array in the data section, not a JSON list
        st["order"] = np.asarray(st["order"], dtype=np.int64)
    return st


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
        request = getattr(trainer, "_request_stop", None)
        if request is not None:
            request()   # (on a process group: every rank stops after the same batch)
        else:
            trainer.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nfit: interrupted - finishing the current batch, then stopping (Ctrl-C again "
              "to abort now)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------------------ trainer
def _process_group(trainer, distributed):
    """The process group a ``fit`` trains on, or ``None`` (one process)."""
    if distributed is None and "shendu.distributed.backend" not in sys.modules:
        size = os.environ.get("OMPI_COMM_WORLD_SIZE") or os.environ.get("PMI_SIZE")
        if size and size.isdigit() and int(size) > 1:
            warnings.warn(f"fit: started by an MPI launcher as one of {size} processes, but "
                          "no process group is initialized: each process trains alone on "
                          "all the data. Pass distributed=True (or call shendu.distributed."
                          "init_process_group('mpi') first) to train data-parallel",
                          UserWarning, stacklevel=4)
        return None    # no group can have been initialized: nothing to import
    if distributed is False:
        return None
    from shendu.distributed.training import TrainerGroup

    return TrainerGroup.resolve(trainer, distributed)


def _split_batch(batch, where: str) -> tuple[tuple, Any]:
    """A batch is ``(inputs..., target)``."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return tuple(batch[:-1]), batch[-1]
    raise TypeError(f"{where}: expected each batch to be (inputs..., target), a tuple of at "
                    f"least 2, got {type(batch).__name__}"
                    + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))


def _bar(desc: str, total: int | None, show: bool):
    """A tqdm bar on stderr that we advance by hand (so it stays open for the epoch's
    validation numbers), or ``None`` when silent."""
    if not show:
        return None
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=True)


class _Meter:
    """Sums of the loss and metrics over an epoch (sample-weighted)."""

    def __init__(self, metrics: dict[str, Callable]) -> None:
        self.metrics = metrics
        self.sums = {name: 0.0 for name in ["loss", *metrics]}
        self.counts = {name: 0 for name in self.sums}

    def add(self, loss: float, n: int, output, target) -> None:
        sums, counts = self.batch_sums(loss, n, output, target)
        for name in self.sums:
            self.sums[name] += sums[name]
            self.counts[name] += counts[name]

    def batch_sums(self, loss: float, n: int, output, target) -> tuple[dict, dict]:
        """One batch's sums and counts (what :meth:`add` adds)."""
        sums, counts = {"loss": loss * n}, {"loss": n}
        for name, fn in self.metrics.items():
            r = fn(output, target)
            s, c = r if isinstance(r, tuple) else (float(r) * n, n)
            sums[name], counts[name] = float(s), int(c)
        return sums, counts

    def vector(self, sums: dict | None = None, counts: dict | None = None) -> np.ndarray:
        """Sums then counts as one float64 array (zeros when not given), to all-reduce."""
        return np.array([(sums or {}).get(k, 0.0) for k in self.sums]
                        + [(counts or {}).get(k, 0) for k in self.sums], np.float64)

    def add_vector(self, v: np.ndarray) -> tuple[float, int]:
        """Add a :meth:`vector` (summed over the ranks); returns that batch's mean loss
        and its number of samples."""
        k = len(self.sums)
        for i, name in enumerate(self.sums):
            self.sums[name] += float(v[i])
            self.counts[name] += int(v[k + i])
        n = int(v[k])
        return (float(v[0]) / n if n else 0.0), n

    def means(self, prefix: str = "") -> dict[str, float]:
        return {prefix + k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k]}


class Trainer:
    """Trains ``model`` on ``train_loader`` with ``loss_fn`` and ``optimizer``; see the
    module docstring for the loop and :func:`fit` for the arguments."""

    def __init__(self, model, loss_fn: Callable, optimizer, train_loader: Iterable,
                 val_loader: Iterable | None = None, metrics: Sequence = (),
                 callbacks: Sequence[Callback] = (), scheduler=None,
                 scheduler_interval: str = "epoch", verbose: int = 1,
                 check_finite: bool = True, distributed: bool | None = None) -> None:
        if distributed not in (None, True, False):
            raise ValueError(f"fit: distributed must be True, False or None, got "
                             f"{distributed!r}")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.train_loader, self.val_loader = train_loader, val_loader
        self.metrics = _resolve_metrics(metrics)
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"fit: callbacks must be Callback instances, got "
                                f"{type(cb).__name__}")
        if scheduler is not None:
            self.callbacks.append(LRSchedulerCallback(scheduler, scheduler_interval))
        self.verbose, self.check_finite = int(verbose), check_finite
        self.history = History()
        self.epoch = 0
        self.global_step = 0
        self.stop_training = False
        self.interrupted = False    # Ctrl-C: stop after the current batch
        self.in_epoch = False       # an epoch is in progress: ``batch`` of its batches done
        self.batch = 0
        self._meter: _Meter | None = None
        self.distributed = distributed
        self._dist = None           # the process group during a distributed fit
        self._stop_requested = False  # this rank's Ctrl-C, not yet agreed on by all
        for cb in self.callbacks:
            cb.set_trainer(self)
        if hasattr(loss_fn, "set_trainer"):   # a loss that needs the world size (see below)
            loss_fn.set_trainer(self)

    @property
    def world_size(self) -> int:
        """How many processes share each batch: the process group's size during a
        distributed fit, else 1. A loss term that divides by the batch, such as
        scikit-learn's L2 penalty ``alpha / 2 * ||W||^2 / n_batch``, divides by this many
        times its slice to stay the one-process term (each rank's loss is weighted by
        ``n_r R / N``; see :mod:`shendu.distributed.training`). A ``loss_fn`` with a
        ``set_trainer`` method is given the trainer when it is built."""
        return 1 if self._dist is None else int(self._dist.world)

    @property
    def is_main_process(self) -> bool:
        """False on the ranks other than 0 of a distributed fit: they neither print nor
        write checkpoints."""
        return self._dist is None or self._dist.main

    def _request_stop(self) -> None:
        """Ctrl-C: stop after the current batch (on a process group, after the batch on
        which every rank has heard of it)."""
        if self._dist is None:
            self.interrupted = True
        else:
            self._stop_requested = True

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            try:
                getattr(cb, hook)(*args)
            except KeyboardInterrupt:
                if self.interrupted or self._stop_requested:   # a second one aborts
                    raise
                self._request_stop()   # a callback asks to stop, as Ctrl-C does

    def _lr(self) -> float | None:
        groups = getattr(self.optimizer, "param_groups", None)
        return float(groups[0]["lr"]) if groups else None

    # ----------------------------------------------------------------------- guards
    def _guard_loss(self, value: float, batch: int, n_batches, inputs) -> None:
        if math.isfinite(value):
            return
        where = f"at epoch {self.epoch + 1}, batch {batch + 1}" + (
            f"/{n_batches}" if n_batches else "")
        bad_input = any(isinstance(x, (Tensor, np.ndarray)) and _as_np(x).dtype.kind == "f"
                        and not np.isfinite(_as_np(x)).all() for x in inputs)
        hint = ("the inputs of this batch contain NaN or inf" if bad_input else
                "try a lower learning rate, gradient clipping, or a check of the data")
        raise NonFiniteError(f"fit: the training loss is {value} {where}; stopped instead "
                             f"of training on garbage ({hint})")

    def _guard_grads(self, batch: int) -> None:
        named = getattr(self.model, "named_parameters", None)
        if named is None:
            return
        for name, p in named():
            if p.grad is not None and not np.isfinite(p.grad.data).all():
                raise NonFiniteError(
                    f"fit: the gradient of parameter {name!r} is NaN or inf at epoch "
                    f"{self.epoch + 1}, batch {batch + 1}; stopped before the optimizer "
                    f"step (try a lower learning rate or gradient clipping)")

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, start_batch: int = 0) -> dict[str, float]:
        """One pass over ``train_loader``, stepping the optimizer after every batch
        (``start_batch`` > 0: the rest of an epoch resumed from a checkpoint)."""
        self.model.train()
        meter = self._meter if start_batch and self._meter is not None else _Meter(self.metrics)
        self._meter, self.batch, self.in_epoch = meter, start_batch, True
        n_batches = len(self.train_loader) if hasattr(self.train_loader, "__len__") else None
        d = self._dist      # a process group: each rank takes its slice of every batch
        model = self.model if d is None else d.forward_model()
        bar = _bar(f"epoch {self.epoch + 1}/{self.epochs}", n_batches,
                   self.verbose == 1 and self.is_main_process)
        sampler = getattr(self.train_loader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(self.epoch)   # a DistributedSampler's shuffle for this epoch
        if d is not None and not start_batch:
            d.start_epoch()     # (a resumed epoch goes on with each rank's own state)
        batches = iter(self.train_loader)
        if d is not None:
            d.check_order(_loader_state(self.train_loader), n_batches)
        if start_batch and not hasattr(self.train_loader, "load_state_dict"):
            batches = itertools.islice(batches, start_batch, None)  # e.g. a list of batches
        for b, batch in enumerate(batches, start=start_batch):
            inputs, target = _split_batch(batch, "fit")
            weight = 1.0
            if d is None:
                n = len(_as_np(target))
            else:
                inputs, target, n, weight = d.shard(inputs, target)
            self._call("on_batch_begin", b, {})
            self.optimizer.zero_grad()
            output = model(*inputs)
            loss = self.loss_fn(output, target)
            value = loss.item()
            if self.check_finite:
                self._guard_loss(value, b, n_batches, inputs)
            if d is not None:   # every rank's sums (and stop request), reduced during backward
                sums = meter.vector(*(meter.batch_sums(value, n, output, target) if n
                                      else ({}, {})))
                summing = d.start_sum(np.concatenate([[float(self._stop_requested)], sums]))
                if weight != 1.0:
                    loss = loss * weight  # the average over the ranks is the global mean
            loss.backward()
            if self.check_finite:
                self._guard_grads(b)
            self._call("on_after_backward", b, {"loss": value})
            self.optimizer.step()
            self.global_step += 1
            if d is None:
                meter.add(value, n, output, target)
            else:
                total = d.finish(summing)
                value, n = meter.add_vector(total[1:])   # the global batch's
                if total[0] > 0:
                    self.interrupted = True   # some rank was asked to stop
            self.batch = b + 1
            self._call("on_batch_end", b, {"loss": value, "batch_size": n})
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in meter.means().items()},
                                refresh=False)
            self._call("on_checkpoint", "batch")
            if self.interrupted and (n_batches is None or b + 1 < n_batches):
                break  # (after the last batch the loader is run out, ending its epoch)
        self._bar = bar
        return meter.means()

    def evaluate(self, loader: Iterable) -> dict[str, float]:
        """Mean loss and metrics over ``loader`` in eval mode without recording a graph.
        After or during a distributed fit, while the process group lives, each rank takes
        its slice of every batch and the sums are reduced: every rank must call it."""
        was_training = getattr(self.model, "training", True)
        self.model.eval()
        meter = _Meter(self.metrics)
        d = self._dist if self._dist is not None and self._dist.alive() else None
        presharded = d is not None and d.is_presharded(loader)
        with no_grad():
            for batch in loader:
                inputs, target = _split_batch(batch, "evaluate")
                if d is not None:    # this rank's slice; the sums are reduced at the end
                    mine = d.eval_shard(inputs, target, presharded)
                    if mine is None:
                        continue
                    inputs, target = mine
                output = self.model(*inputs)
                value = self.loss_fn(output, target).item()
                meter.add(value, len(_as_np(target)), output, target)
        self.model.train(was_training)
        if d is not None:
            total = d.finish(d.start_sum(meter.vector(meter.sums, meter.counts)))
            meter = _Meter(self.metrics)
            meter.add_vector(total)
        return meter.means()

    # ------------------------------------------------------------------- the loop
    def fit(self, epochs: int, initial_epoch: int = 0, resume=None) -> History:
        """Train epochs ``initial_epoch .. epochs - 1`` (fewer if a callback stops it);
        ``resume``: a checkpoint file or folder to continue from (see :func:`fit`)."""
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
        self.epochs = int(epochs)
        was_training = getattr(self.model, "training", True)
        self.stop_training = self.interrupted = self.in_epoch = self._stop_requested = False
        d = self._dist = _process_group(self, self.distributed)
        self._call("on_train_begin", {})
        start_batch = 0
        try:
            if resume is not None:
                start = self.resume(resume)
                if start is not None:
                    initial_epoch, start_batch = start
            if d is not None:
                d.wrap()            # rank 0's weights to every rank
                d.install_signals()
            with deferred_interrupt(self):
                self._loop(initial_epoch, start_batch)
            if self.interrupted:
                self._call("on_checkpoint", "interrupt")
        except BaseException as e:
            if d is not None:
                d.fail(e)           # print it, and end every rank (none waits forever)
            raise
        finally:
            if d is not None:
                d.close()
            self._call("on_train_end", {"interrupted": True} if self.interrupted else {})
            self.model.train(was_training)
        return self.history

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to resume this run exactly, as the parts of a checkpoint: the
        loop's counters, the model's and optimizer's state, every callback's
        ``state_dict()``, the history, the sums of the epoch in progress, the data
        loaders' positions and shendu's random state. ``in_epoch`` tells whether an epoch
        is in progress (then ``batch`` of its batches are done)."""
        meter, in_epoch = self._meter, bool(self.in_epoch)
        callbacks = []
        for cb in self.callbacks:
            st = cb.state_dict() if callable(getattr(cb, "state_dict", None)) else None
            callbacks.append(None if st is None else {"class": type(cb).__name__, "state": st})
        trainer = {"version": TRAINER_STATE_VERSION, "epoch": int(self.epoch),
                   "batch": int(self.batch) if in_epoch else 0,
                   "in_epoch": in_epoch, "global_step": int(self.global_step),
                   "stop_training": bool(self.stop_training),
                   "epochs": int(getattr(self, "epochs", 0))}
        if self._dist is not None:
            trainer["world_size"] = self._dist.world   # (absent: one process)
        return {
            "trainer": trainer,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "callbacks": callbacks,
            "history": {"epochs": list(self.history.epochs),
                        "values": {k: list(v) for k, v in self.history.items()}},
            "meter": ({"sums": dict(meter.sums), "counts": dict(meter.counts)}
                      if in_epoch and meter is not None else None),
            "train_loader": _loader_state(self.train_loader),
            "val_loader": _loader_state(self.val_loader),
            "rng": backend.get_rng_state(),
        }

    def load_state_dict(self, state: dict, where: str = "Trainer.load_state_dict"
                        ) -> tuple[int, int]:
        """Put this trainer (built as for the first run, after ``on_train_begin``) back
        where :meth:`state_dict` was taken. Returns ``(epoch, batch)``: the epoch to run
        next and how many of its batches are done."""
        t = state["trainer"]
        world = 1 if self._dist is None else self._dist.world
        if int(t.get("world_size", 1)) != world:
            warnings.warn(f"{where}: the checkpoint was written by a run of "
                          f"{t.get('world_size', 1)} process(es), this one has {world}: "
                          "training goes on over the same global batches, equal up to "
                          "rounding but not bit for bit", UserWarning, stacklevel=3)
        try:
            self.model.load_state_dict(state["model"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise ValueError(f"{where}: the checkpoint's weights do not fit this model: {e}") \
                from None
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{where}: the checkpoint's optimizer state does not fit this "
                             f"optimizer: {e}") from None
        self._restore_callbacks(state.get("callbacks") or [], where)
        h = History()
        hist = state.get("history") or {}
        h.epochs = list(hist.get("epochs", []))
        for k, v in (hist.get("values") or {}).items():
            h[k] = list(v)
        self.history = h
        self.global_step = int(t["global_step"])
        self.stop_training = bool(t.get("stop_training", False))
        for name in ("train_loader", "val_loader"):
            saved, loader = state.get(name), getattr(self, name)
            if saved is not None and callable(getattr(loader, "load_state_dict", None)):
                loader.load_state_dict(saved)
        epoch, in_epoch = int(t["epoch"]), bool(t["in_epoch"])
        if in_epoch:
            meter = _Meter(self.metrics)
            saved = state.get("meter") or {}
            for k in meter.sums:
                meter.sums[k] = saved.get("sums", {}).get(k, 0.0)
                meter.counts[k] = saved.get("counts", {}).get(k, 0)
            self._meter = meter
            start = (epoch, int(t["batch"]))
        else:
            start = (epoch + 1, 0)
        self.epoch = epoch
        ranks = state.get("rng_ranks")      # every rank's, from a distributed run
        if self._dist is not None and isinstance(ranks, list) and len(ranks) == world:
            backend.set_rng_state(ranks[self._dist.rank])
        else:
            backend.set_rng_state(state["rng"])
        if self.stop_training:  # a callback had ended the run: it stays ended
            return (max(start[0], int(getattr(self, "epochs", start[0]))), 0)
        return start

    def _rank_states(self) -> dict:
        """On a process group, what a checkpoint needs beyond :meth:`state_dict`: every
        rank's random state (``rng_ranks``). A collective: every rank calls it at the same
        point (``ModelCheckpoint`` does, from ``on_checkpoint``); ``{}`` on one process."""
        return {} if self._dist is None else {"rng_ranks": self._dist.rng_states()}

    def _restore_callbacks(self, saved: list, where: str) -> None:
        """Give each saved callback state to the next callback of the same class."""
        used: set[int] = set()
        for entry in saved:
            if entry is None:
                continue
            for i, cb in enumerate(self.callbacks):
                if i not in used and type(cb).__name__ == entry.get("class") \
                        and callable(getattr(cb, "load_state_dict", None)):
                    cb.load_state_dict(entry["state"])
                    used.add(i)
                    break
            else:
                if entry.get("class") == "ModelCheckpoint":
                    continue  # its state (the best so far) does not change the run
                warnings.warn(f"{where}: the checkpoint holds the state of a "
                              f"{entry.get('class')} callback, but this fit has none to give "
                              "it to; the resumed run may differ from an uninterrupted one",
                              UserWarning, stacklevel=4)

    def resume(self, resume) -> tuple[int, int] | None:
        """:meth:`load_state_dict` from a checkpoint file, or a folder's newest checkpoint
        (``None``, and nothing changed, when it holds none)."""
        from shendu.io import FileFormatError, load_checkpoint

        def find() -> str:
            p = Path(os.fspath(resume))
            if p.is_dir():
                p = latest_checkpoint(p)
                return "" if p is None else str(p)
            if not p.exists():
                raise FileNotFoundError(f"fit: resume={str(p)!r}: no such checkpoint file or "
                                        "folder")
            return str(p)

        # on a process group rank 0 picks the file (the folder must be shared) for all
        found = find() if self._dist is None else self._dist.resume_path(find)
        if not found:
            return None
        p = Path(found)
        st = load_checkpoint(p)
        t = st.get("trainer")
        if not isinstance(t, dict) or t.get("version") != TRAINER_STATE_VERSION:
            raise FileFormatError(p, "not a checkpoint of the training loop (no trainer "
                                     f"state of version {TRAINER_STATE_VERSION})")
        return self.load_state_dict(st, where=f"fit: resume={str(p)!r}")

    def _loop(self, initial_epoch: int, start_batch: int) -> None:
        """The epochs, from batch ``start_batch`` of ``initial_epoch`` on."""
        for epoch in range(initial_epoch, self.epochs):
            self.epoch = epoch
            self._call("on_epoch_begin", epoch, {})
            logs = self.train_epoch(start_batch)
            start_batch = 0
            if self.interrupted and self.batch < self._n_batches():
                if self._bar is not None:
                    self._bar.close()
                break  # stopped inside the epoch: a resumed run continues it
            if self.val_loader is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(self.val_loader).items()})
                if self.check_finite and not math.isfinite(logs["val_loss"]):
                    raise NonFiniteError(f"fit: the validation loss is {logs['val_loss']} "
                                         f"after epoch {epoch + 1}")
            lr = self._lr()
            if lr is not None:
                logs["lr"] = lr
            self._call("on_epoch_end", epoch, logs)
            if self._dist is not None:   # a stop asked on any rank stops every rank
                self.stop_training, stop = self._dist.agree(self.stop_training,
                                                            self._stop_requested)
                self.interrupted = self.interrupted or stop
            self.history.append(epoch, logs)
            self.in_epoch = False
            self._report(logs)
            self._call("on_checkpoint", "epoch")
            if self.stop_training or self.interrupted:
                break

    def _n_batches(self) -> float:
        n = getattr(self.train_loader, "__len__", None)
        return n() if n is not None else math.inf

    def _report(self, logs: dict) -> None:
        text = {k: f"{v:.4g}" for k, v in logs.items()}
        if self._bar is not None:
            self._bar.set_postfix(text, refresh=False)
            self._bar.close()
        elif self.verbose >= 2 and self.is_main_process:
            print(f"epoch {self.epoch + 1}/{self.epochs}: "
                  + "  ".join(f"{k}={v}" for k, v in text.items()))


def fit(model, loss_fn: Callable, optimizer, train_loader: Iterable, epochs: int,
        val_loader: Iterable | None = None, metrics: Sequence = (),
        callbacks: Sequence[Callback] = (), scheduler=None, scheduler_interval: str = "epoch",
        verbose: int = 1, initial_epoch: int = 0, check_finite: bool = True,
        resume=None, distributed: bool | None = None) -> History:
    """Train ``model`` and return its :class:`History`.

    Parameters
    ----------
    model : an ``nn.Module`` (anything callable with ``train()``/``eval()``).
    loss_fn : ``loss_fn(output, target)`` -> scalar tensor, e.g. ``nn.CrossEntropyLoss()``.
    optimizer : a ``shendu.optim`` optimizer over the model's parameters.
    train_loader, val_loader : iterables of ``(inputs..., target)`` batches
        (e.g. ``shendu.data.DataLoader``); the validation loader is run after each epoch
        in eval mode under ``no_grad`` and its values are logged as ``val_*``.
    epochs : number of epochs (passes over ``train_loader``).
    metrics : names (``"accuracy"``, ``"mse"``, ``"mae"``) or functions
        ``fn(output, target)`` logged beside the loss each epoch.
    callbacks : :class:`Callback` instances (early stopping, hooks...).
    scheduler, scheduler_interval : a learning-rate scheduler stepped each ``"epoch"``
        (default; ``ReduceLROnPlateau`` on ``val_loss`` or ``loss``) or each ``"batch"``.
    verbose : 0 silent; 1 a progress bar per epoch with the running loss and metrics;
        2 one printed line per epoch.
    initial_epoch : the epoch to start from.
    check_finite : raise :class:`NonFiniteError`, naming epoch and batch, as soon as the
        loss or a gradient is NaN or infinite.
    resume : a checkpoint file written by :class:`shendu.checkpoint.ModelCheckpoint`, or its
        folder (the newest checkpoint in it; a fresh start if there is none). Build and seed
        everything as for the first run; training continues where the checkpoint left it
        (mid-epoch too) and ends bit-identical to an uninterrupted run.
    distributed : ``True``: data-parallel training on the process group of
        :mod:`shendu.distributed` (joined with ``init_process_group("mpi")`` if it is not
        yet; start the script with ``mpiexec -n 4 python train.py``); ``None`` (default):
        the same whenever a group of more than one process is initialized; ``False``: this
        process alone. The loaders are built as for one process (``batch_size`` is the
        global batch); each rank trains on its slice of every batch, gradients are averaged
        (DistributedDataParallel), the logged values are over the global batches, rank 0
        alone prints and writes checkpoints, and the result equals one process's run on the
        same batches (see :mod:`shendu.distributed.training`).

    The first Ctrl-C finishes the current batch, lets each ``ModelCheckpoint`` write a
    checkpoint and returns the history of the completed epochs; a second one aborts. On a
    process group a Ctrl-C on any rank stops every rank after the same batch.
    """
    trainer = Trainer(model, loss_fn, optimizer, train_loader, val_loader, metrics, callbacks,
                      scheduler, scheduler_interval, verbose, check_finite, distributed)
    return trainer.fit(epochs, initial_epoch, resume)
