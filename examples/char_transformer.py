"""Train shendu.models.CharTransformerLM (a small causal, GPT-style transformer) on a text
file, character by character, and print samples — by default tiny-shakespeare from the
shared data folder, first 90% of the characters for training, last 10% for validation.

    python examples/char_transformer.py [--text PATH] [--steps 3000] [--d-model 96]
                                        [--layers 3] [--block 64]

The default budget: 3,000 AdamW steps of 32 windows of 64 characters (6.1 M characters
seen), cosine-annealed learning rate, one BLAS thread; about 5 minutes of CPU time.
Prints the validation loss (nats/char) every ``--eval-every`` steps on the first 20,000
validation characters, then on the whole held-out 10% beside the unigram baseline, the
CPU time used, and samples at temperature 0.8. See docs/attention.md for the result.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import shendu
from shendu.data.sequences import CharCorpus
from shendu.models import CharTransformerLM

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "..", "shared", "data", "text", "tinyshakespeare.txt")


def one_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", default=DEFAULT, help="a UTF-8 text file")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--d-model", type=int, default=96)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--block", type=int, default=64, help="context length (characters)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not os.path.isfile(args.text):
        ap.error(f"--text {args.text}: no such file (tiny-shakespeare is in the shared "
                 "data folder, data/text/tinyshakespeare.txt; or give any UTF-8 text file)")

    shendu.manual_seed(args.seed)
    corpus = CharCorpus(args.text, val_fraction=0.1)
    print(f"{len(corpus.train)} training and {len(corpus.val)} validation characters, "
          f"vocabulary {corpus.vocab_size}; unigram baseline {corpus.unigram_nats():.3f} "
          f"nats/char", flush=True)
    lm = CharTransformerLM(corpus.vocab_size, d_model=args.d_model, nhead=args.heads,
                           num_layers=args.layers, dim_feedforward=4 * args.d_model,
                           dropout=args.dropout, block_size=args.block)
    n_params = sum(p.numel() for p in lm.parameters())
    print(f"{n_params} parameters: d_model {args.d_model}, {args.layers} layers, "
          f"{args.heads} heads, context {args.block}", flush=True)
    with one_thread():
        t0 = time.process_time()
        lm.fit(corpus, steps=args.steps, batch_size=args.batch, learning_rate_init=args.lr,
               eval_every=args.eval_every, eval_chars=20_000, verbose=1)
        cpu = time.process_time() - t0
        val = lm.evaluate(corpus, "val")
    print(f"CPU time {cpu:.0f} s; validation {val:.3f} nats/char on all "
          f"{len(corpus.val)} held-out characters (unigram {corpus.unigram_nats():.3f})",
          flush=True)
    for prompt in ("ROMEO:\n", "First Citizen:\n"):
        print("-" * 60)
        out = lm.generate(corpus.encode(prompt)[None], 300, temperature=0.8)
        print(corpus.decode(out[0]))


if __name__ == "__main__":
    main()
