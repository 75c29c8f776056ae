"""``shendu.accelerator`` (torch's device-agnostic queries): shendu has no accelerator."""

from __future__ import annotations

__all__ = ["is_available", "current_accelerator", "device_count"]


def is_available() -> bool:
    return False


def current_accelerator(check_available: bool = False):
    """None, as torch when no accelerator is present."""
    return None


def device_count() -> int:
    return 0
