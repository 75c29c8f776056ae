"""Spoken digits at full size (FSDD, 2,500 recordings, 5 speakers): AudioClassifier on
FSDD's split (train on takes 5-49, test on takes 0-4) and leave-one-speaker-out (train on
four speakers, test on the unseen fifth), each fold's accuracy and CPU time.

    python examples/speech_loso.py [--data DIR] [--folds takes george ...] [--epochs N]
                                   [--set key=value ...]

``--data`` defaults to $SHENDU_DATA/fsdd or ../shared/data/fsdd; ``--set`` overrides any
AudioClassifier parameter (``--set speed_range=0.2``); ``--folds all`` times a fit on every
recording. One BLAS thread. The numbers of
docs/speech.md come from this script with its defaults.
"""

from __future__ import annotations

import argparse
import ast
import os
import time
from pathlib import Path

import numpy as np

from shendu.data.fsdd import fsdd_recordings, leave_one_speaker_out
from shendu.models import AudioClassifier

SPEAKERS = ["george", "jackson", "lucas", "nicolas", "yweweler"]


def default_root() -> Path:
    env = os.environ.get("SHENDU_DATA")
    if env:
        return Path(env) / "fsdd"
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(default_root()))
    ap.add_argument("--folds", nargs="+", default=["takes", *SPEAKERS],
                    help="'takes' (FSDD's split) and/or speakers to hold out; 'all' fits on "
                         "every recording (its CPU time; no test)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--also-test-speeds", nargs="+", type=float, metavar="S",
                    help="also score each trained model with test_speeds=S... (test-time "
                         "averaging over playback speeds)")
    ap.add_argument("--quick", action="store_true",
                    help="one epoch of FSDD's split on 60 recordings (checks that it runs)")
    args = ap.parse_args()
    if args.quick:
        args.folds, args.epochs = ["takes"], 1
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass
    kw = {"random_state": args.seed}
    if args.epochs:
        kw["max_iter"] = args.epochs
    for item in args.set:
        k, _, v = item.partition("=")
        kw[k] = ast.literal_eval(v)
    t = time.process_time()
    rec = fsdd_recordings(args.data)
    print(f"read {len(rec.waveforms)} recordings in {time.process_time() - t:.1f} s CPU; "
          f"AudioClassifier({', '.join(f'{k}={v!r}' for k, v in kw.items())})")
    folds = {spk: (tr, te) for spk, tr, te in leave_one_speaker_out(rec.speakers)}
    test_takes = np.isin(rec.takes, np.arange(5))
    folds["takes"] = (np.flatnonzero(~test_takes), np.flatnonzero(test_takes))
    folds["all"] = (np.arange(len(rec.labels)), np.arange(0))
    if args.quick:
        folds["takes"] = tuple(ix[::len(ix) // 30][:30] for ix in folds["takes"])
    loso, also = [], []
    for name in args.folds:
        tr, te = folds[name]
        t = time.process_time()
        m = AudioClassifier(**kw).fit([rec.waveforms[i] for i in tr], rec.labels[tr])
        cpu = time.process_time() - t
        if name == "all":
            print(f"{'all recordings':<30} fit {cpu:.1f} s CPU ({len(tr)} train)", flush=True)
            continue
        acc = m.score([rec.waveforms[i] for i in te], rec.labels[te])
        what = "FSDD split (takes 0-4 test)" if name == "takes" else f"unseen speaker {name}"
        line = (f"{what:<30} accuracy {acc:.4f}   ({len(tr)} train / {len(te)} test, "
                f"fit {cpu:.1f} s CPU)")
        if args.also_test_speeds:
            m.set_params(test_speeds=tuple(args.also_test_speeds))
            acc2 = m.score([rec.waveforms[i] for i in te], rec.labels[te])
            line += f"   with test_speeds {acc2:.4f}"
            if name != "takes":
                also.append(acc2)
        print(line, flush=True)
        if name != "takes":
            loso.append(acc)
    if loso:
        print(f"leave-one-speaker-out: mean {np.mean(loso):.4f}, lowest {np.min(loso):.4f} "
              f"over {len(loso)} folds")
    if also:
        print(f"with test_speeds {tuple(args.also_test_speeds)}: mean {np.mean(also):.4f}, "
              f"lowest {np.min(also):.4f}")


if __name__ == "__main__":
    main()
