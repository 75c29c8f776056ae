import os
import pathlib

import numpy as np
import pytest

import shendu

try:  # one BLAS thread: the suite's matrices are small, and extra threads only contend
    from threadpoolctl import threadpool_limits

    _blas_limits = threadpool_limits(1)
except ImportError:  # pragma: no cover
    pass
try:  # property and fuzz tests draw the same examples every run (same seed, same result);
    # HYPOTHESIS_PROFILE=explore draws fresh ones to hunt for new failures
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("repeatable", derandomize=True)
    _hypothesis_settings.register_profile("explore", derandomize=False)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
except ImportError:  # pragma: no cover
    pass
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(autouse=True)
def _reset_state():
    """Each test starts from the same seed and default dtype."""
    shendu.manual_seed(0)
    shendu.set_default_dtype("float32")
    np.random.seed(0)
    yield
    shendu.set_default_dtype("float32")


def data_dir() -> pathlib.Path | None:
    """The shared real-data folder: $SHENDU_DATA, else ../shared/data beside the project."""
    env = os.environ.get("SHENDU_DATA")
    if env:
        return pathlib.Path(env)
    here = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return here if here.exists() else None
