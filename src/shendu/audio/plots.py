"""Pictures for speech (matplotlib, through :mod:`shendu.report.plots`' helpers)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["logmel_grid"]


def logmel_grid(path, specs: Sequence[np.ndarray], labels: Sequence[str], hop_seconds: float,
                title: str = "Log-mel spectrograms") -> str:
    """One panel per ``specs[i]`` (n_mels, frames) in dB, titled ``labels[i]``, 2 rows."""
    from shendu.report.plots import _pyplot, _save

    plt = _pyplot()
    n = len(specs)
    cols = (n + 1) // 2
    fig, axes = plt.subplots(2, cols, figsize=(1.9 * cols, 4.2), squeeze=False)
    lo = min(float(np.min(s)) for s in specs)
    hi = max(float(np.max(s)) for s in specs)
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.axis("off")
            continue
        s = specs[k]
        ax.imshow(s, origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi,
                  extent=(0, s.shape[1] * hop_seconds, 0, s.shape[0]))
        ax.set_title(str(labels[k]), fontsize=9)
        ax.tick_params(labelsize=6)
        if k % cols == 0:
            ax.set_ylabel("mel band", fontsize=7)
        if k >= cols:
            ax.set_xlabel("seconds", fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
