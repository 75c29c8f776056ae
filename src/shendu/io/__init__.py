r"""Saving and loading: weights as safetensors, everything else as JSON, no code deserialised.

``shendu.save(obj, path)`` writes a module, an optimizer, a learning-rate scheduler, a ready
model (estimator) or a dict of arrays; ``shendu.load(path)`` gives it back without the caller
re-creating anything. Training checkpoints (:func:`save_checkpoint`, and the
:class:`~shendu.checkpoint.ModelCheckpoint` callback) use the same file format.

The package, layer by layer (each guards something; ``docs/saving.md`` says what):

``format``
    The file: a plain safetensors file written and parsed by the ``safetensors`` package,
    sealed with a whole-file CRC-32 (``__metadata__["shendu.checksum"]``, computed with its
    own 8 hex digits read as zeros); opened so that pipes, sockets, devices and symlink
    loops are refused before a byte is read, and a file longer or shorter than its header
    says before its data is read. Atomic writes.
``classes``
    Classes by name: only shendu's, or those passed to :func:`register`.
``config``
    A module's architecture as JSON (class and constructor arguments, recorded by
    ``Module.__new__`` without keeping them alive; containers by their current children),
    checked at save time by rebuilding it, and rebuilt at load time under an explicit memory
    budget (no process-wide limit is touched).
``state``
    Nested state (optimizer and scheduler state, checkpoints, fitted estimators) as named
    arrays plus a JSON skeleton.
``api``
    :func:`save`, :func:`load`, :func:`save_checkpoint`, :func:`load_checkpoint`.

Whatever is wrong with a file — truncated, corrupted, wrongly typed or hostile — ends in one
:class:`FileFormatError` that names the file and the problem. A missing file is a
``FileNotFoundError``; calling :func:`load` without what a kind needs (an optimizer without
``params=``) is a ``TypeError``. Nothing is ever unpickled: unpickling runs whatever code the
file names, so a pickled model is a program, not data.
"""

from shendu.io.api import _checkpoint_bytes, load, load_checkpoint, save, save_checkpoint  # noqa: F401
from shendu.io.classes import register
from shendu.io.config import decode_config, encode_config
from shendu.io.format import (
    FORMAT_VERSION,
    MAX_HEADER_BYTES,
    FileFormatError,
    _serialize,  # noqa: F401 (tests build files with it)
    atomic_write,
    load_arrays,
    save_arrays,
)
from shendu.io.state import estimator_restore, estimator_state, pack_state, unpack_state

__all__ = ["FileFormatError", "save", "load", "save_arrays", "load_arrays", "atomic_write",
           "save_checkpoint", "load_checkpoint", "pack_state", "unpack_state", "register",
           "encode_config", "decode_config", "estimator_state", "estimator_restore",
           "MAX_HEADER_BYTES", "FORMAT_VERSION"]
