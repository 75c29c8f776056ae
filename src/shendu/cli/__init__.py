"""The ``shendu`` command: ``tour``, ``train``, ``eval``, ``predict``, ``gradcheck``, ``bench``.

Every subcommand has ``--help`` with examples (``shendu train --help``). A problem the user
can fix — a bad argument, a missing or malformed file, data of the wrong shape — ends in one
line on stderr naming it, and a non-zero exit status (2 for a bad command line, 1 otherwise);
``--debug`` shows the full traceback instead.

Checkpoints are shendu files (``shendu.io.save_checkpoint``: safetensors weights and a JSON
description; see shendu.io) holding the model, the epoch, the training history and where the
data came from, so ``shendu eval`` and ``shendu predict`` need nothing else.
"""

from shendu.cli.data import BUILTIN_DATA, Data, _data_root, load_data  # noqa: F401
from shendu.cli.errors import CLIError
from shendu.cli.gradcheck import GRADCHECK_MODELS, _cmd_gradcheck, gradcheck_model  # noqa: F401
from shendu.cli.main import build_parser, main
from shendu.cli.registry import (  # noqa: F401
    MODELS,
    ModelSpec,
    _format_metrics,
    _metrics,
    load_model_checkpoint,
    save_model_checkpoint,
)

__all__ = ["main", "build_parser", "CLIError", "load_data", "MODELS", "GRADCHECK_MODELS"]

