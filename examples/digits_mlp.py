"""Digits (scikit-learn's 1,797 8x8 images), stratified 80/20 split with seed 0: shendu's
MLPClassifier and Perceptron beside scikit-learn's, on the same arrays.

    python examples/digits_mlp.py            # prints the table of docs/models.md
    python examples/digits_mlp.py --quick    # two epochs each, 200 training images (a smoke run)

Every model runs with one BLAS thread (threadpoolctl) so the CPU times compare like with
like; the times are CPU seconds of the fit alone (``time.process_time``).
"""

from __future__ import annotations

import argparse
import time
import warnings

from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.linear_model import Perceptron as SkPerceptron
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from shendu.data.datasets import digits
from shendu.models import ConvergenceWarning, MLPClassifier, Perceptron


def models():
    """(library, what, estimator) in table order."""
    return [
        ("shendu", "MLPClassifier((256,), batch 64, 60 epochs, label_smoothing=0.1)",
         MLPClassifier(hidden_layer_sizes=(256,), batch_size=64, max_iter=60,
                       label_smoothing=0.1, random_state=0)),
        ("shendu", "MLPClassifier() defaults: (100,), adam, standardize",
         MLPClassifier(random_state=0)),
        ("sklearn", "StandardScaler + MLPClassifier((256,), batch 64, 60 epochs)",
         make_pipeline(StandardScaler(), SkMLPClassifier(hidden_layer_sizes=(256,),
                                                         batch_size=64, max_iter=60,
                                                         random_state=0))),
        ("sklearn", "MLPClassifier() defaults",
         SkMLPClassifier(random_state=0)),
        ("shendu", "Perceptron(average=True, max_iter=20)",
         Perceptron(average=True, max_iter=20)),
        ("shendu", "Perceptron(shuffle=True, tol=1e-3, random_state=0)",
         Perceptron(shuffle=True, tol=1e-3, random_state=0)),
        ("shendu", "Perceptron(shuffle=False, max_iter=20, tol=None)",
         Perceptron(shuffle=False, max_iter=20, tol=None)),
        ("sklearn", "Perceptron() defaults (shuffle, tol=1e-3, random_state=0)",
         SkPerceptron(random_state=0)),
        ("sklearn", "Perceptron(shuffle=False, max_iter=20, tol=None)",
         SkPerceptron(shuffle=False, max_iter=20, tol=None)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="two epochs each on 200 training images (checks that it runs)")
    args = ap.parse_args()
    X_train, X_test, y_train, y_test = digits(test_size=0.2, random_state=0,
                                              dtype="float64")
    if args.quick:
        X_train, y_train = X_train[:200], y_train[:200]
    print(f"digits: {len(X_train)} train / {len(X_test)} test, stratified, seed 0\n")
    print("| library | model | test accuracy | train accuracy | fit CPU s |")
    print("|---|---|---|---|---|")
    for lib, what, est in models():
        if args.quick:
            est.set_params(**{k: 2 for k in est.get_params()
                              if k.split("__")[-1] == "max_iter"})
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", SkConvergenceWarning)
            t0 = time.process_time()
            est.fit(X_train, y_train)
            cpu = time.process_time() - t0
        test = est.score(X_test, y_test)
        train = est.score(X_train, y_train)
        print(f"| {lib} | {what} | {test:.2%} ({round(test * len(y_test))}/{len(y_test)}) "
              f"| {train:.2%} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
