"""torchvision.datasets.MNIST on the shared MNIST test files (no download): ``train=True``
is its first ``SIZES["train"]`` images, ``train=False`` the next ``SIZES["test"]``."""

import pathlib

from shendu.data import read_idx

ROOT = None  # the folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz
SIZES = {"train": 256, "test": 128}


class MNIST:
    def __init__(self, root, train=True, download=False, transform=None,
                 target_transform=None):
        d = pathlib.Path(ROOT)
        images = read_idx(d / "t10k-images-idx3-ubyte.gz")
        labels = read_idx(d / "t10k-labels-idx1-ubyte.gz")
        n_tr, n_te = SIZES["train"], SIZES["test"]
        sl = slice(0, n_tr) if train else slice(n_tr, n_tr + n_te)
        self.data, self.targets = images[sl], labels[sl]
        self.transform, self.target_transform = transform, target_transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        img, target = self.data[i], int(self.targets[i])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target
