"""The adding problem (Hochreiter & Schmidhuber 1997, experiment 4) at full size: an LSTM
and a tanh RNN of the same size, trained with the same budget, on sequences of T=100.

    python examples/adding_problem.py [--T 100] [--n-train 10000] [--epochs 30] [--hidden 64]

Prints each model's test MSE (predicting the mean scores about 0.167) and CPU time, and the
vanishing-gradient picture: ||dL/dh_t|| at a few steps t for a loss on the last step, from
``shendu.nn.bptt_gradient_norms`` on one batch of the trained models. See
docs/recurrent.md for the result.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import shendu
from shendu import nn
from shendu.data.sequences import adding_problem
from shendu.models import LongShortTermMemory, RecurrentNeuralNetwork


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-2)
    args = ap.parse_args()
    Xtr, ytr = adding_problem(args.n_train, args.T, seed=0)
    Xte, yte = adding_problem(2000, args.T, seed=1)
    print(f"adding problem, T={args.T}: {args.n_train} training and 2000 test sequences; "
          f"predicting the mean: test MSE {np.mean((yte - ytr.mean()) ** 2):.3f}")
    kw = dict(hidden_size=args.hidden, task="regression", max_iter=args.epochs,
              batch_size=32, learning_rate_init=args.lr, random_state=0)
    for cls in (LongShortTermMemory, RecurrentNeuralNetwork):
        t0 = time.process_time()
        model = cls(**kw).fit(Xtr, ytr)
        mse = float(np.mean((model.predict(Xte) - yte) ** 2))
        print(f"{cls.__name__:<24} test MSE {mse:.2e}   CPU {time.process_time() - t0:6.0f} s",
              flush=True)
        untrained = cls(**{**kw, "epochs": 0}).fit(Xtr[:64], ytr[:64])
        steps = [0, args.T // 4, args.T // 2, 3 * args.T // 4, args.T - 1]
        for when, m in (("at init", untrained), ("trained", model)):
            net = m.model_

            def loss(out, head=net.head, y=shendu.tensor(yte[:64, None])):
                return ((head(out[:, -1]) - y) ** 2).mean()

            norms = nn.bptt_gradient_norms(net.rnn, shendu.tensor(Xte[:64]), loss)
            print(f"    ||dL/dh_t|| {when:<8} "
                  + "  ".join(f"t={t}: {norms[t]:.1e}" for t in steps))


if __name__ == "__main__":
    main()
