"""torchvision.transforms' ToTensor, Normalize and Compose on uint8 NumPy images."""

import numpy as np

import standins


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class ToTensor:
    """(H, W) or (H, W, C) uint8 → float32 (C, H, W) in [0, 1], as torchvision."""

    def __call__(self, img):
        a = np.asarray(img)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return standins.LIB.from_numpy(np.ascontiguousarray(a, np.float32) / np.float32(255))


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, t):
        lib = standins.LIB
        m = lib.tensor(np.asarray(self.mean, np.float32).reshape(-1, 1, 1))
        s = lib.tensor(np.asarray(self.std, np.float32).reshape(-1, 1, 1))
        return (t - m) / s
