"""Optimizers."""

from volreg.optim.keras_adam import KerasAdam

__all__ = ["KerasAdam"]
