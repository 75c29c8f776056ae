"""``shendu.Generator``: torch's generator object, a handle on a NumPy PCG64 stream.

``g = shendu.Generator().manual_seed(0)`` can be passed as ``generator=`` to the random
factories, samplers, ``DataLoader`` and ``random_split``; reseeding it re-seeds the stream in
place, so every holder sees the new seed (torch's behaviour)."""

from __future__ import annotations

import numpy as np

from shendu.device import check_device

__all__ = ["Generator", "as_numpy_generator"]

_DEFAULT_SEED = 67280421310721  # torch's default seed of a fresh Generator


class Generator:
    """A random stream (``Generator(device="cpu")``)."""

    def __init__(self, device="cpu") -> None:
        self.device = check_device(device, "Generator")
        self._seed = _DEFAULT_SEED
        self._np = np.random.Generator(np.random.PCG64(_DEFAULT_SEED))

    def manual_seed(self, seed: int) -> Generator:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"Generator.manual_seed expected an int, got {seed!r}")
        self._seed = int(seed) % (1 << 64)
        self._np.bit_generator.state = np.random.PCG64(self._seed).state
        return self

    def seed(self) -> int:
        """Re-seed from fresh entropy and return the seed."""
        s = int(np.random.SeedSequence().entropy % (1 << 63))
        self.manual_seed(s)
        return s

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> dict:
        """The stream's state as a JSON-serialisable dict (not torch's byte tensor)."""
        return self._np.bit_generator.state

    def set_state(self, state: dict) -> Generator:
        self._np.bit_generator.state = state
        return self

    def __repr__(self) -> str:
        return "<shendu.Generator>"


def as_numpy_generator(generator) -> np.random.Generator:
    """The NumPy generator to draw from: ``generator``'s, or shendu's seeded one if None."""
    if generator is None:
        from shendu.backend import rng

        return rng()
    if isinstance(generator, Generator):
        return generator._np
    if isinstance(generator, np.random.Generator):
        return generator
    raise TypeError(f"generator must be a shendu.Generator or numpy.random.Generator, got "
                    f"{type(generator).__name__}")
