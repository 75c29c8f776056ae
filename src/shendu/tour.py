"""``shendu tour``: each classic algorithm on its classic task, with the result that made
it famous. Chapters are added as the algorithms land."""

from __future__ import annotations

import time

import numpy as np


def _xor_mlp(quick: bool) -> dict:
    """Rumelhart, Hinton & Williams (1986): a hidden layer trained by backpropagation
    solves XOR, which no single-layer perceptron can (Minsky & Papert 1969)."""
    import shendu
    from shendu import nn, optim
    from shendu.utils import progress

    shendu.manual_seed(0)
    x = shendu.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype="float32")
    y = np.array([0, 1, 1, 0])
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    epochs = 200 if quick else 500
    bar = progress(range(epochs), desc="mlp on XOR")
    for _ in bar:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    with shendu.no_grad():
        acc = float((model(x).data.argmax(1) == y).mean())
    return {"result": f"{acc:.0%} accuracy", "loss": loss.item()}


CHAPTERS = {
    "mlp": ("Multi-layer perceptron + backpropagation",
            "Rumelhart, Hinton & Williams 1986", "XOR", _xor_mlp),
}


def run_tour(quick: bool = False, only: str | None = None) -> int:
    names = list(CHAPTERS)
    if only is not None:
        if only not in CHAPTERS:
            raise ValueError(f"tour: unknown chapter {only!r}; choose from {', '.join(names)}")
        names = [only]
    rows = []
    for name in names:
        title, who, task, fn = CHAPTERS[name]
        t0 = time.perf_counter()
        res = fn(quick)
        rows.append((title, who, task, res["result"], f"{time.perf_counter() - t0:.1f}"))
    header = ("algorithm", "who and when", "task", "result", "seconds")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(5)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print()
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return 0
