"""Small local stand-ins for what the client scripts import from outside torch (torchvision's
MNIST and transforms), so they run without a network. ``LIB`` is the tensor library the
stand-ins hand tensors to: shendu, or torch for the reference run."""

import shendu

LIB = shendu
