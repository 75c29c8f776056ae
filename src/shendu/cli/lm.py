"""``shendu train char-lm | char-transformer``: a character language model trained for
``--steps`` steps by the training loop, checkpointed into ``--out``/trainer beside the run's
settings, so that ``--resume`` continues a stopped run exactly."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from shendu.cli.errors import CLIError
from shendu.cli.registry import save_model_checkpoint

#: The settings of a language-model run, kept beside its training-loop checkpoints so that
#: ``--resume`` rebuilds the same run.
_LM_SETTINGS = ("model", "steps", "hidden", "explicit_hidden", "lr", "batch_size", "vocab")


def _lm_run_folder(path: str) -> Path:
    """The folder of training-loop checkpoints of a language-model run, from ``--resume``:
    the run's ``--out`` folder, its ``last.ckpt``, the ``trainer`` folder or one file in it."""
    p = Path(path)
    if not p.exists():
        raise CLIError(f"--resume {path}: no such file or folder")
    for cand in (p, p / "trainer", p.parent, p.parent / "trainer"):
        if (cand / "settings.json").is_file():
            return cand
    raise CLIError(f"--resume {path}: no language-model run there (a run's --out folder "
                   "holds trainer/settings.json and its checkpoints)")


def _lm_settings(args, spec, corpus) -> tuple[dict, str | None]:
    """This run's settings and, with ``--resume``, the checkpoint to continue from (the
    saved settings win; a different value given on the command line is an error)."""
    given = {"steps": args.steps, "hidden": (args.hidden or [None])[0], "lr": args.lr,
             "batch_size": args.batch_size}
    if not args.resume:
        st = {"model": spec.cls, "steps": args.steps or 300, "hidden": given["hidden"] or 128,
              "explicit_hidden": bool(args.hidden), "batch_size": args.batch_size or 32,
              "lr": args.lr or (2e-3 if spec.cls == "CharLM" else 3e-3),
              "vocab": corpus.vocab}
        return st, None
    folder = _lm_run_folder(args.resume)
    try:
        st = json.loads((folder / "settings.json").read_text())
    except (OSError, ValueError) as e:
        raise CLIError(f"--resume {args.resume}: cannot read {folder / 'settings.json'}: "
                       f"{e}") from None
    if not isinstance(st, dict) or set(st) != set(_LM_SETTINGS):
        raise CLIError(f"--resume {args.resume}: {folder / 'settings.json'} is not the "
                       "settings file of a language-model run")
    if st["model"] != spec.cls:
        raise CLIError(f"--resume {args.resume}: that run trains a {st['model']}, not a "
                       f"{spec.cls}")
    for k, v in given.items():
        if v is not None and v != st[k]:
            raise CLIError(f"--resume {args.resume}: the run was started with "
                           f"--{k.replace('_', '-')} {st[k]}, not {v} (leave it out to go on "
                           "with the run's own)")
    if st["vocab"] != corpus.vocab:
        raise CLIError(f"--resume {args.resume}: the run was trained on another text "
                       "(its characters differ); give the same --data")
    p = Path(args.resume)
    return st, str(p if p.is_file() and p.parent == folder else folder)


def train_lm(args, spec, cls, data, info) -> int:
    """A character language model: ``--steps`` Adam steps on random windows of the text,
    run by the training loop, which checkpoints every fifth of the steps (and on Ctrl-C)
    into ``--out``/trainer; ``--resume`` continues such a run exactly."""
    from shendu.checkpoint import ModelCheckpoint

    corpus = data.corpus
    st, resume = _lm_settings(args, spec, corpus)
    steps, hidden = int(st["steps"]), int(st["hidden"])
    kw = {"learning_rate_init": float(st["lr"]), "batch_size": int(st["batch_size"]),
          "eval_every": max(steps // 5, 1), "eval_chars": 20000, "verbose": 1}
    if spec.cls == "CharLM":
        model = cls(corpus.vocab, hidden_size=hidden, num_layers=1)
    else:
        d = hidden if st["explicit_hidden"] else 64
        model = cls(corpus.vocab_size, d_model=d, nhead=4, num_layers=2,
                    dim_feedforward=4 * d, dropout=0.0, block_size=64)
    folder = Path(args.out) / "trainer"
    main = getattr(args, "main_process", True)
    if main:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "settings.json").write_text(json.dumps(
            {k: st[k] for k in _LM_SETTINGS}, indent=1))
    ckpt = ModelCheckpoint(folder, every_n_epochs=1, keep_last=2, save_on_interrupt=True)
    t0 = time.perf_counter()
    try:
        log = model.fit(corpus, steps=steps, callbacks=[ckpt], resume=resume, **kw)
    except (ValueError, OSError) as e:
        raise CLIError(f"{spec.cls}: {e}") from None
    done = int(model.n_steps_)
    val = model.evaluate(corpus, "val")
    info.update(epoch=0, steps=done, vocab=corpus.vocab, history=log,
                rng=__import__("shendu").get_rng_state())
    last, best = os.path.join(args.out, "last.ckpt"), os.path.join(args.out, "best.ckpt")
    if main:
        save_model_checkpoint(last, model, info)
        save_model_checkpoint(best, model, info)
    print(f"{spec.cls} on {data.name}: {len(corpus.train):,} train / {len(corpus.val):,} "
          f"validation characters, vocabulary {corpus.vocab_size}, {done} of {steps} steps, "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"validation: {val:.4f} nats/char ({val / math.log(2):.3f} bits/char); unigram "
          f"baseline {corpus.unigram_nats():.4f} nats/char")
    print(f"checkpoints: {last} (last), {best} (best = last)")
    if done < steps:
        print(f"stopped after step {done} of {steps}: go on with --resume {args.out}")
    return 0
