"""Small shared helpers (progress bars)."""

from __future__ import annotations

import sys


def progress(iterable, desc: str = "", total=None, disable: bool = False, leave: bool = True):
    """A tqdm progress bar (falls back to the plain iterable if tqdm is missing)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return _Plain(iterable)
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=leave,
                file=sys.stderr, dynamic_ncols=True)


class _Plain:
    def __init__(self, it):
        self.it = it

    def __iter__(self):
        return iter(self.it)

    def set_postfix(self, *a, **kw):
        pass

    def set_postfix_str(self, *a, **kw):
        pass

    def update(self, n=1):
        pass

    def close(self):
        pass
