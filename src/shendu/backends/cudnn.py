"""``shendu.backends.cudnn``: no cuDNN; its switches are accepted and change nothing (NumPy's
results are deterministic already)."""

deterministic = False
benchmark = False
enabled = True
allow_tf32 = False


def is_available() -> bool:
    return False
