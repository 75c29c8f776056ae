"""Reverse digit sequences with an RNN encoder-decoder, with and without attention.

The task of Bahdanau, Cho & Bengio (2014) in miniature: sequences of 10 to 20 digits
(vocabulary 10) must be written out reversed. Output step ``i`` needs input position
``L - 1 - i``: far back for a decoder that sees one fixed summary vector of the input
(Cho et al. 2014), one look away for a decoder with attention — whose attention map
should come out as the anti-diagonal.

Every model gets the same budget: the same 10,000 training sequences, the same number of
epochs (Adam, cosine-annealed learning rate, batch 64) and the same encoder and decoder
sizes; all are scored on the same 1,000 held-out sequences (exact-sequence accuracy: all
tokens and the length right). Run::

    python examples/seq2seq_reversal.py            # about 3 minutes on one CPU core
    python examples/seq2seq_reversal.py --epochs 2 --n-train 4000   # a quicker look

Models (``--models``): ``attention`` (the default AttentionMechanism: additive,
location-aware attention reading the source embeddings), ``bahdanau`` (attention reading
the encoder annotations, no location term: Bahdanau et al.'s model) and ``none`` (the same
encoder-decoder without attention).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

from shendu.data.tasks import sequence_task
from shendu.models import AttentionMechanism
from shendu.train import Callback

CONFIGS = {
    "attention": dict(attention=True),
    "bahdanau": dict(attention=True, values="annotations", location_aware=False),
    "none": dict(attention=False),
}


def mirrored_fraction(weights: np.ndarray, lengths: np.ndarray) -> tuple[float, float]:
    """Fractions of output steps ``i < L`` whose most-attended input position is the
    mirrored one (``L - 1 - i``), and the one right of it (``L - i``)."""
    hits = right = total = 0
    for w, L in zip(weights, lengths):
        am = w[:L].argmax(1)
        mirror = L - 1 - np.arange(L)
        hits += int((am == mirror).sum())
        right += int((am == mirror + 1).sum())
        total += int(L)
    return hits / total, right / total


class HeldOut(Callback):
    """Exact-sequence accuracy on held-out data after every epoch."""

    def __init__(self, model, X, y) -> None:
        self.model, self.X, self.y = model, X, y
        self.t0, self.eval_seconds = time.perf_counter(), 0.0

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        t = time.perf_counter()
        acc = self.model.score(self.X, self.y)
        self.eval_seconds += time.perf_counter() - t
        train_s = time.perf_counter() - self.t0 - self.eval_seconds
        print(f"  epoch {epoch + 1}: loss {logs['loss']:.4f}, held-out exact {acc:.1%} "
              f"(training {train_s:.0f} s so far)", flush=True)


def one_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--n-train", type=int, default=10_000)
    ap.add_argument("--n-test", type=int, default=1_000)
    ap.add_argument("--lengths", type=int, nargs=2, default=(10, 20))
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    lo, hi = args.lengths
    train = sequence_task("reverse", args.n_train, (lo, hi), vocab=10, seed=args.seed)
    test = sequence_task("reverse", args.n_test, (lo, hi), vocab=10, seed=args.seed + 1)
    rows = []
    with one_thread():
        for name in args.models:
            print(f"{name}:", flush=True)
            m = AttentionMechanism(vocab_size=10, pad_id=train.pad_id, embed_dim=32,
                                   hidden_size=args.hidden, max_iter=args.epochs,
                                   batch_size=64, learning_rate_init=3e-3,
                                   random_state=args.seed, **CONFIGS[name])
            probe = HeldOut(m, test.src, test.tgt)
            m.set_params(callbacks=[probe])
            t0 = time.perf_counter()
            m.fit(train.src, train.tgt)
            seconds = time.perf_counter() - t0 - probe.eval_seconds   # training time only
            acc = m.score(test.src, test.tgt)
            mirrored = right = float("nan")
            if m.attention:
                mirrored, right = mirrored_fraction(m.attention_weights(test.src),
                                                    test.lengths)
            rows.append((name, acc, mirrored, right, seconds))

    print(f"\nreversal, lengths {lo}-{hi}, vocab 10: {args.n_train} training sequences, "
          f"{args.epochs} epochs, hidden {args.hidden}; {args.n_test} held-out sequences")
    print("| model | held-out exact-sequence accuracy | most-attended = mirrored | "
          "= one right of it | train time |")
    print("|---|---|---|---|---|")
    for name, acc, mir, right, sec in rows:
        a = "n/a" if np.isnan(mir) else f"{mir:.1%}"
        b = "n/a" if np.isnan(right) else f"{right:.1%}"
        print(f"| {name} | {acc:.1%} | {a} | {b} | {sec:.0f} s |")


if __name__ == "__main__":
    main()
