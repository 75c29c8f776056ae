"""Train shendu.models.CharLM (a 2-layer LSTM character language model) on a text file and
print samples — by default tiny-shakespeare from the shared data folder, 90/10 split.

    python examples/char_lm.py [--text PATH] [--steps 2000] [--hidden 256] [--layers 2]

Prints the validation loss (nats/char over the whole held-out 10%) every ``--eval-every``
steps, the CPU time used, and samples at temperature 0.8. See docs/recurrent.md for the
result.
"""

from __future__ import annotations

import argparse
import os
import time

import shendu
from shendu.data.sequences import CharCorpus
from shendu.models import CharLM

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "..", "shared", "data", "text", "tinyshakespeare.txt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", default=os.environ.get("SHENDU_TEXT", DEFAULT))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-every", type=int, default=250)
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
    model = CharLM(corpus.vocab, hidden_size=args.hidden, num_layers=args.layers)
    t0 = time.process_time()
    log = model.fit(corpus, steps=args.steps, batch_size=args.batch, seq_len=args.seq_len,
                    learning_rate_init=args.lr, eval_every=args.eval_every, verbose=1)
    print(f"CPU time {time.process_time() - t0:.0f} s; final validation "
          f"{log[-1]['val_nats']:.3f} nats/char", flush=True)
    for prompt in ("ROMEO:", "First Citizen:\n"):
        print("-" * 60)
        print(model.generate(prompt, 300, temperature=0.8))


if __name__ == "__main__":
    main()
