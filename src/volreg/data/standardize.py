"""Standardisation to zero mean and unit variance with statistics of the training split."""

import numpy as np
import torch

STANDARDIZE = ("none", "inputs", "targets", "both")


class Scaler:
    """Per-feature mean and standard deviation along axis 1 (channels of volumes, or targets).

    Statistics are accumulated in float64 over chunks, so a split never has to be in memory.
    The identity scaler (mean 0, std 1) represents standardisation that is switched off.
    """

    def __init__(self, features: int) -> None:
        self.mean = torch.zeros(features)
        self.std = torch.ones(features)
        self._sum = np.zeros(features)
        self._sum_squares = np.zeros(features)
        self._count = 0

    def update(self, chunk: np.ndarray) -> None:
        """Add a float32 chunk of shape (n, features, ...) to the statistics."""
        axes = tuple(axis for axis in range(chunk.ndim) if axis != 1)
        values = chunk.astype(np.float64)
        self._sum += values.sum(axis=axes)
        self._sum_squares += np.square(values).sum(axis=axes)
        self._count += chunk.size // chunk.shape[1]

    def finish(self) -> None:
        """Turn the accumulated sums into mean and std; a constant feature keeps std 1."""
        mean = self._sum / self._count
        variance = np.maximum(self._sum_squares / self._count - mean**2, 0.0)
        std = np.sqrt(variance)
        std[std == 0] = 1.0
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.std = torch.as_tensor(std, dtype=torch.float32)

    def _broadcast(self, stat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # (features,) -> (1, features, 1, ...) to match (n, features, ...)
        shape = (1, -1) + (1,) * (like.ndim - 2)
        return stat.to(device=like.device, dtype=like.dtype).reshape(shape)

    def transform(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self._broadcast(self.mean, values)) / self._broadcast(self.std, values)

    def inverse_transform(self, values: torch.Tensor) -> torch.Tensor:
        return values * self._broadcast(self.std, values) + self._broadcast(self.mean, values)
