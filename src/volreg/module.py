"""The LightningModule: an injected network, loss and optimizer, one step for every split."""

import random
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import (
    MeanAbsoluteError,
    MeanMetric,
    MeanSquaredError,
    MetricCollection,
    MinMetric,
)
from torchmetrics.regression import R2Score

from volreg.options import check_choice
from volreg.tf32 import check_tf32, set_tf32

SPLITS = ("train", "val", "test")
MEMORY_FORMATS = {
    "contiguous": torch.contiguous_format,
    "channels_last_3d": torch.channels_last_3d,
}


class VolumeRegressor(L.LightningModule):
    """Train, validate and test a volume regressor.

    Args:
        net: maps (N, C, D, H, W) volumes to (N, P) predictions and has ``num_targets``.
        loss: called as ``loss(prediction, target)``.
        optimizer: builds the optimizer from the parameters (a ``functools.partial``).
        scheduler: builds an epoch-wise learning-rate scheduler from the optimizer, or None.
        settings: plain-data description of the run's model settings, stored in checkpoints
            and logged as TensorBoard hyperparameters.
        memory_format: "contiguous" or "channels_last_3d", the memory layout of the network's
            weights and input volumes.
        compile: compile the network with torch.compile (in place, so checkpoint keys stay).
        tf32: allow (True) or forbid (False) TF32 for float32 convolutions and matrix products
            on NVIDIA GPUs, applied when the trainer sets the module up. None restores the
            flags the process started with (PyTorch's defaults unless the user changed them).
        target_mean, target_std: (P,) scale of standardised targets. Predictions and
            targets are mapped back to target units before the metrics see them.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], LRScheduler] | None = None,
        settings: dict[str, Any] | None = None,
        target_mean: torch.Tensor | None = None,
        target_std: torch.Tensor | None = None,
        memory_format: str = "contiguous",
        compile: bool = False,
        tf32: bool | None = None,
    ) -> None:
        super().__init__()
        # Hyperparameters go to the logger once, at the end, together with the final metrics.
        self.save_hyperparameters(
            ignore=[
                "net",
                "loss",
                "optimizer",
                "scheduler",
                "target_mean",
                "target_std",
                "memory_format",
                "compile",
                "tf32",
            ],
            logger=False,
        )
        self.memory_format = MEMORY_FORMATS[
            check_choice("memory_format", memory_format, MEMORY_FORMATS)
        ]
        self.net = net.to(memory_format=self.memory_format)
        if compile:
            self.net.compile()
        self.tf32 = check_tf32(tf32)
        self.loss_fn = loss
        self.make_optimizer = optimizer
        self.make_scheduler = scheduler
        # Random states of a loaded checkpoint, applied when its training resumes.
        self._resume_rng_states: dict[str, Any] | None = None

        num_targets = net.num_targets
        self.register_buffer("target_mean", _target_scale(target_mean, num_targets, 0.0))
        self.register_buffer("target_std", _target_scale(target_std, num_targets, 1.0))

        # ModuleDict keys may not shadow Module attributes such as train(), hence "_split".
        self.metrics = nn.ModuleDict(
            {
                f"{split}_split": MetricCollection(
                    {
                        "mae": MeanAbsoluteError(),
                        "mse": MeanSquaredError(),
                        "r2": R2Score(multioutput="uniform_average"),
                    },
                    prefix=f"{split}/",
                )
                for split in SPLITS
            }
        )
        # Keras reports the epoch loss as the per-sample mean, hence the batch-size weights.
        self.losses = nn.ModuleDict({f"{split}_split": MeanMetric() for split in SPLITS})
        self.val_loss_best = MinMetric()
        # (epoch, val/loss) of every validation run outside the sanity check; kept in checkpoints.
        self.val_history: list[tuple[int, float]] = []

    def setup(self, stage: str) -> None:
        # Lightning calls this in every process, DDP workers included.
        set_tf32(self.tf32)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.net(volume.contiguous(memory_format=self.memory_format))

    def to_target_units(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.target_std + self.target_mean

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        volume, target = batch  # (N, C, D, H, W), (N, P)
        prediction = self(volume)
        loss = self.loss_fn(prediction, target)

        self.losses[f"{split}_split"].update(loss.detach(), weight=volume.shape[0])
        self.metrics[f"{split}_split"].update(
            self.to_target_units(prediction.detach()), self.to_target_units(target)
        )
        return loss

    def training_step(self, batch, batch_idx):
        return self.shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self.shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self.shared_step(batch, "test")

    def predict_step(self, batch, batch_idx):
        volume, target = batch
        return self.to_target_units(self(volume)), self.to_target_units(target)

    def on_train_epoch_end(self) -> None:
        self._log_metrics("train")

    def on_validation_epoch_end(self) -> None:
        val_loss = self._log_metrics("val")
        if self.trainer.sanity_checking:
            return
        self.val_history.append((self.current_epoch, float(val_loss)))
        self.val_loss_best.update(val_loss)
        self.log("val/loss_best", self.val_loss_best.compute())

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def epoch_loss(self, split: str) -> float:
        """Return the mean loss of ``split`` over the batches of the current epoch so far."""
        return float(self.losses[f"{split}_split"].compute())

    def _log_metrics(self, split: str) -> torch.Tensor:
        # Metric objects reduce across processes in compute(), so the values need no sync_dist.
        loss = self.losses[f"{split}_split"].compute()
        self.log(f"{split}/loss", loss, prog_bar=split != "test")
        self.log_dict(self.metrics[f"{split}_split"].compute())
        self.losses[f"{split}_split"].reset()
        self.metrics[f"{split}_split"].reset()
        return loss

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self.parameters())
        if self.make_scheduler is None:
            return optimizer
        scheduler = self.make_scheduler(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }

    # Lightning checkpoints do not hold the random states, so a resumed run would draw other
    # dropout masks than an uninterrupted one. They are saved here and restored when training
    # resumes rather than at load time, so that what runs in between cannot shift them.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_history"] = list(self.val_history)
        name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        # Plain types and tensors only, so that torch.load(weights_only=True) accepts the file.
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy": [
                name,
                torch.from_numpy(keys.astype(np.int64)),
                int(position),
                int(has_gauss),
                float(cached_gaussian),
            ],
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_history = [tuple(item) for item in checkpoint.get("val_history", [])]
        for _, val_loss in self.val_history:
            self.val_loss_best.update(torch.tensor(val_loss))
        self._resume_rng_states = checkpoint.get("rng_states")

    def on_train_epoch_start(self) -> None:
        states, self._resume_rng_states = self._resume_rng_states, None
        if states is None:
            return
        torch.set_rng_state(states["torch"])
        name, keys, position, has_gauss, cached_gaussian = states["numpy"]
        np.random.set_state(
            (name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian)
        )
        random.setstate(states["python"])


def regressor_from_settings(
    settings: dict[str, Any], net: nn.Module | None = None, **target_scale: torch.Tensor
) -> VolumeRegressor:
    """Build a VolumeRegressor from a resolved ``cfg.model`` dict, the form checkpoints store.

    ``net`` replaces the network that ``settings["net"]`` describes (e.g. one holding imported
    weights); ``target_scale`` takes ``target_mean`` and ``target_std``.
    """
    scheduler = settings.get("scheduler")
    return VolumeRegressor(
        net=net if net is not None else instantiate(settings["net"]),
        loss=instantiate(settings["loss"]),
        optimizer=instantiate(settings["optimizer"]),
        scheduler=instantiate(scheduler) if scheduler else None,
        settings=settings,
        # Checkpoints written before these settings existed lack them.
        memory_format=settings.get("memory_format", "contiguous"),
        compile=settings.get("compile", False),
        tf32=settings.get("tf32"),
        **target_scale,
    )


def _target_scale(value: torch.Tensor | None, num_targets: int, fill: float) -> torch.Tensor:
    if value is None:
        return torch.full((num_targets,), fill)
    value = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if value.numel() != num_targets:
        raise ValueError(
            f"target scale has {value.numel()} values, but the network predicts "
            f"{num_targets} targets"
        )
    return value
