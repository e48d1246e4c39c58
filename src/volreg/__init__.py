"""Regression on 3D volumes with a residual CNN whose Keras/PyTorch differences are settings."""

__version__ = "0.1.0"
