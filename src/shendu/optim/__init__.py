"""Optimizers with torch's exact update rules (``shendu.optim``)."""
