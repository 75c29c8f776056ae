"""What :class:`shendu.train.Trainer` does when it trains on a process group.

``fit(..., distributed=True)`` (or any ``fit`` while a process group of more than one
process is initialized) runs the same loop on every rank, with these changes:

- **Data.** The data loader is built as for one process: its batch size is the *global*
  batch. Every rank draws the same order (each epoch starts from rank 0's random state)
  and keeps its own contiguous slice of each batch — rank ``r`` of ``R`` the rows
  ``np.array_split`` gives it. A loader whose sampler is a
  :class:`~shendu.data.DistributedSampler` is already one rank's share: its batches are
  used whole (the trainer calls a sampler's ``set_epoch`` each epoch, on one process too).
- **Gradients.** The model is wrapped in :class:`~shendu.nn.parallel.DistributedDataParallel`
  (unless it already is one). Each rank's loss (a mean over its slice) is weighted by
  ``n_r R / N`` before backward, so the average DDP forms is the mean over the whole
  global batch even when the slices are unequal (the last batch of an epoch). A rank whose
  slice is empty (a batch smaller than the world) runs one row with weight 0, so that every
  rank joins every collective. A loss with ``reduction="sum"`` is weighted by ``R``.
- **Metrics.** After each forward, every rank's sums of the loss and metrics (and its stop
  request) start one small non-blocking all-reduce that completes during backward: the
  epoch's values, the progress bar and ``logs["loss"]`` of ``on_batch_end`` are over the
  global batch and the same on every rank. Validation is sliced and summed the same way.
- **Rank 0 alone** shows progress, prints and writes checkpoints; the checkpoint is the
  one-process format (every rank's state is the same but for the random state, which may
  differ within an epoch — unequal slices draw unequal dropout masks — so a checkpoint also
  holds every rank's, ``rng_ranks``), so a run may be resumed with any number of processes,
  and with the same number it continues bit for bit.
- **Stopping.** Ctrl-C (SIGINT) on any rank, or ``KeyboardInterrupt`` from a callback, is
  a request that rides on the next batch's all-reduce; every rank stops after the same
  batch, rank 0 checkpoints, and ``fit`` returns on every rank. ``stop_training`` set by a
  callback on any rank stops every rank after the epoch. An exception on one rank (or a
  second Ctrl-C) prints the error with its rank and ends every process (``MPI_Abort``);
  SIGTERM from the launcher (what ``mpiexec`` sends the others when a rank dies, and every
  rank when ``mpiexec`` itself gets Ctrl-C) prints where training stopped and exits; a
  collective that waits longer than the group's ``timeout`` raises
  :class:`~shendu.distributed.DistributedTimeoutError`, then aborts. SIGUSR1, which
  ``mpiexec`` forwards to every rank (``kill -USR1 <mpiexec pid>``), stops the run cleanly
  as Ctrl-C on a rank does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
import zlib

import numpy as np

from shendu.distributed import backend as _dist
from shendu.tensor import Tensor

__all__ = ["TrainerGroup"]


def _slice(obj, lo: int, hi: int):
    """Rows ``lo:hi`` of every tensor or array in a (nested) batch."""
    if isinstance(obj, Tensor):
        return Tensor(obj.data[lo:hi], requires_grad=obj.requires_grad)
    if isinstance(obj, np.ndarray) and obj.ndim:
        return obj[lo:hi]
    if isinstance(obj, (tuple, list)):
        return type(obj)(_slice(o, lo, hi) for o in obj)
    if isinstance(obj, dict):
        return {k: _slice(v, lo, hi) for k, v in obj.items()}
    return obj


def _rows(target) -> int:
    a = target.data if isinstance(target, Tensor) else np.asarray(target)
    return int(a.shape[0]) if a.ndim else 1


class TrainerGroup:
    """The process group as one ``fit`` sees it (built by :meth:`resolve`)."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.rank = _dist.get_rank()
        self.world = _dist.get_world_size()
        self.ddp = None
        self._old: dict = {}
        self.presharded = self.is_presharded(trainer.train_loader)
        self.sum_loss = getattr(trainer.loss_fn, "reduction", "mean") == "sum"

    @staticmethod
    def is_presharded(loader) -> bool:
        """A loader whose sampler is a DistributedSampler yields this rank's share."""
        from shendu.data.sampler import DistributedSampler

        return isinstance(getattr(loader, "sampler", None), DistributedSampler)

    @staticmethod
    def resolve(trainer, distributed) -> TrainerGroup | None:
        """``distributed``: ``True`` joins (or starts) the process group, ``None`` follows
        an initialized one, ``False`` trains alone. ``None`` is returned for one process."""
        if distributed is False:
            return None
        if distributed is not None and distributed is not True:
            raise ValueError(f"fit: distributed must be True, False or None, got "
                             f"{distributed!r}")
        if not _dist.is_initialized():
            if distributed is None:
                return None
            _dist.init_process_group("mpi" if _dist.is_mpi_available() else "loopback")
        if _dist.get_world_size() == 1:
            return None
        return TrainerGroup(trainer)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def alive() -> bool:
        """The process group has not been destroyed since."""
        return _dist.is_initialized()

    # ------------------------------------------------------------------ set-up
    def wrap(self) -> None:
        """Wrap the model in DistributedDataParallel (rank 0's weights to every rank)."""
        from shendu.nn.parallel import DistributedDataParallel

        model = self.trainer.model
        self.ddp = model if isinstance(model, DistributedDataParallel) else \
            DistributedDataParallel(model)
        self._own_ddp = self.ddp is not model

    def forward_model(self):
        return self.ddp if self.ddp is not None else self.trainer.model

    def install_signals(self) -> None:
        """SIGTERM (the launcher ending the run: another rank failed, or Ctrl-C on
        ``mpiexec``): say where training stopped, then exit. SIGUSR1 (which ``mpiexec``
        forwards to every rank): stop cleanly after the current batch, as Ctrl-C on a
        rank. Main thread only, and only over the default handlers."""
        if threading.current_thread() is not threading.main_thread():
            return
        t = self.trainer

        def term(signum, frame):
            print(f"\nfit: rank {self.rank} of {self.world} terminated (SIGTERM) at epoch "
                  f"{t.epoch + 1}, batch {t.batch}, step {t.global_step}: the launcher is "
                  "ending the run (another rank failed, or mpiexec was interrupted); resume "
                  "from the last checkpoint", file=sys.stderr, flush=True)
            os._exit(128 + signal.SIGTERM)

        def usr1(signum, frame):
            t._request_stop()
            if self.main:
                print("\nfit: SIGUSR1 - every rank stops after the current batch, then "
                      "rank 0 checkpoints", file=sys.stderr, flush=True)

        self._old = {}
        for sig, handler in ((signal.SIGTERM, term), (signal.SIGUSR1, usr1)):
            if signal.getsignal(sig) is signal.SIG_DFL:
                self._old[sig] = signal.signal(sig, handler)

    def close(self) -> None:
        if self.ddp is not None and self._own_ddp:
            self.ddp._remove_hooks()
        self.ddp = None
        for sig, old in getattr(self, "_old", {}).items():
            signal.signal(sig, old)
        self._old = {}

    def fail(self, exc: BaseException) -> None:
        """An exception escaped one rank's loop: print it with the rank and end every
        process, so that no rank waits forever in a collective this one will not join."""
        what = ("interrupted twice (Ctrl-C)" if isinstance(exc, KeyboardInterrupt)
                else f"{type(exc).__name__}: {exc}")
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        print(f"{tb}\nfit: rank {self.rank} of {self.world} failed ({what}); stopping every "
              "rank (MPI_Abort). The last checkpoint written is intact; resume from it.",
              file=sys.stderr, flush=True)
        _dist.abort(1)

    # ------------------------------------------------------------------ epochs
    def start_epoch(self) -> None:
        """Before ``iter(loader)``: every rank takes rank 0's random state (the same
        shuffle)."""
        from shendu import backend

        state = json.dumps(backend.get_rng_state()).encode() if self.main else None
        backend.set_rng_state(json.loads(_dist.broadcast_bytes(state, 0, "fit")))

    def rng_states(self) -> list[dict]:
        """Every rank's random state, in rank order (a collective: every rank calls it)."""
        from shendu import backend

        mine = json.dumps(backend.get_rng_state()).encode()
        return [json.loads(b) for b in _dist.all_gather_bytes(mine, "fit (checkpoint)")]

    def check_order(self, state: dict | None, n_batches) -> None:
        """The loader's order this epoch (``state["order"]``) must be the same on every
        rank (or, with a DistributedSampler, the number of batches)."""
        order = None if state is None or self.presharded else state.get("order")
        key = 0 if order is None else zlib.crc32(np.ascontiguousarray(order, np.int64)
                                                 .tobytes())
        nb = -1 if n_batches is None else int(n_batches)
        mine = np.array([key, -key, nb, -nb], np.float64)
        got = _dist.allreduce_array(mine, _dist.ReduceOp.MAX, "fit")
        if got[0] != -got[1]:
            raise RuntimeError(
                "fit: the ranks' data loaders drew different orders this epoch; seed every "
                "rank alike (shendu.manual_seed(s) on each rank before building the loader) "
                "or give the DataLoader the same generator seed everywhere")
        if got[2] != -got[3]:
            raise RuntimeError(f"fit: the ranks' data loaders have different numbers of "
                               f"batches per epoch (this rank {nb}); give every rank the same "
                               "data and batch size")

    # ------------------------------------------------------------------ batches
    def shard(self, inputs: tuple, target) -> tuple[tuple, object, int, float]:
        """This rank's rows of a global batch: ``(inputs, target, rows, loss weight)``."""
        if self.presharded:
            return inputs, target, _rows(target), 1.0
        n, r, world = _rows(target), self.rank, self.world
        base, extra = divmod(n, world)
        lo = r * base + min(r, extra)
        mine = base + (r < extra)
        if mine == 0:       # an empty slice: one row, weighted 0, to join the collectives
            lo, hi, weight = n - 1, n, 0.0
        else:
            hi = lo + mine
            weight = float(world) if self.sum_loss else mine * world / n
        return _slice(inputs, lo, hi), _slice(target, lo, hi), mine, weight

    def eval_shard(self, inputs: tuple, target, presharded: bool):
        """This rank's rows of a validation batch, or ``None`` when it has none."""
        if presharded:
            return inputs, target
        n, r, world = _rows(target), self.rank, self.world
        base, extra = divmod(n, world)
        lo = r * base + min(r, extra)
        hi = lo + base + (r < extra)
        if hi == lo:
            return None
        return _slice(inputs, lo, hi), _slice(target, lo, hi)

    @staticmethod
    def start_sum(vec: np.ndarray):
        """Start the all-reduce (sum) of ``vec`` in place; returns what :meth:`finish`
        takes."""
        buf = np.ascontiguousarray(vec, np.float64)
        return buf, _dist.iallreduce_array(buf, _dist.ReduceOp.SUM)

    @staticmethod
    def finish(started) -> np.ndarray:
        buf, req = started
        _dist.wait(req, "fit (metrics)")
        return buf

    def agree(self, *flags: bool) -> list[bool]:
        """Each flag, true on any rank -> true on every rank."""
        got = _dist.allreduce_array(np.array(flags, np.float64), _dist.ReduceOp.MAX, "fit")
        return [bool(v > 0) for v in got]

    def resume_path(self, resolve) -> str:
        """Rank 0 runs ``resolve()`` (a path, ``""`` for none, or raises); every rank gets
        its answer, or raises the same error."""
        msg = None
        if self.main:
            try:
                msg = "ok:" + resolve()
            except (OSError, ValueError) as e:
                msg = f"error:{type(e).__name__}:{e}"
        got = _dist.broadcast_bytes(None if msg is None else msg.encode(), 0, "fit").decode()
        if got.startswith("error:"):
            kind, _, text = got[6:].partition(":")
            raise (FileNotFoundError if kind == "FileNotFoundError" else ValueError)(text)
        return got[3:]
