"""Networks."""

from volreg.models.residual_cnn3d import ResidualCNN3d

__all__ = ["ResidualCNN3d"]
