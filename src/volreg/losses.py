"""Regression losses with an explicit target layout."""

import torch
import torch.nn.functional as F
from torch import nn

from volreg.options import check_choice

LOSS_FUNCTIONS = {"l1": F.l1_loss, "mse": F.mse_loss}
TARGET_LAYOUTS = ("matched", "broadcast")


class RegressionLoss(nn.Module):
    """L1 or MSE between predictions (N, P) and targets.

    Args:
        kind: "l1" (Keras 'mae') or "mse".
        target_layout: "matched" expects targets of the prediction's shape and raises a
            ValueError naming both shapes otherwise. "broadcast" exists only to reproduce
            a common porting bug: the single target is squeezed to (N,) and compared with
            the (N, 1) prediction, so PyTorch broadcasts both to (N, N) and warns
            "Using a target size ... different to the input size". Every prediction is then
            pulled towards every target of the batch, and the network learns the batch
            median. Keras's 'mae' avoids this by giving y_true the rank of y_pred.
    """

    def __init__(self, kind: str = "l1", target_layout: str = "matched") -> None:
        super().__init__()
        self.kind = check_choice("loss kind", kind, LOSS_FUNCTIONS)
        self.target_layout = check_choice("target_layout", target_layout, TARGET_LAYOUTS)
        self._loss = LOSS_FUNCTIONS[kind]

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.target_layout == "broadcast":
            target = self._as_port_target(prediction, target)
        elif prediction.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(prediction.shape)} and target shape "
                f"{tuple(target.shape)} differ; target_layout='matched' needs the same shape. "
                "Serve targets as (N, P), or set target_layout='broadcast' only to reproduce "
                "the broadcasting bug"
            )
        return self._loss(prediction, target)

    @staticmethod
    def _as_port_target(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.ndim != 2 or prediction.shape[1] != 1:
            raise ValueError(
                f"target_layout='broadcast' reproduces the single-target (N,) vs (N, 1) bug, "
                f"but the prediction has shape {tuple(prediction.shape)}. Use "
                "target_layout='matched' for more than one target"
            )
        return target.reshape(-1)  # (N,), as the port's DataLoader serves it
