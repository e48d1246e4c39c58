"""Predictions and the pred-vs-true plot of a tested model, shared by training and evaluation."""

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from volreg.module import VolumeRegressor, regressor_from_settings
from volreg.results import plot_pred_vs_true, save_predictions

log = logging.getLogger(__name__)


def write_predictions(
    trainer: L.Trainer, module: VolumeRegressor, datamodule, output_dir: Path
) -> None:
    """Predict the data module's predict split, write predictions.npz and pred_vs_true.png.

    With several processes, rank 0 predicts the whole split alone and the others return.
    """
    if trainer.world_size > 1:
        if not trainer.is_global_zero:
            return
        batches = predict_in_this_process(trainer, module, datamodule.predict_dataloader())
    else:
        batches = trainer.predict(module, dataloaders=datamodule.predict_dataloader())
    prediction = torch.cat([pred for pred, _ in batches]).cpu().numpy()
    target = torch.cat([true for _, true in batches]).cpu().numpy()
    names = tuple(datamodule.target_names)
    save_predictions(output_dir / "predictions.npz", prediction, target, names)

    figure = plot_pred_vs_true(prediction, target, names)
    figure.savefig(output_dir / "pred_vs_true.png", dpi=100)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure("pred_vs_true", figure, global_step=trainer.global_step)
    log.info("wrote predictions.npz and pred_vs_true.png to %s", output_dir)


def predict_in_this_process(
    trainer: L.Trainer, module: VolumeRegressor, loader
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run ``predict_step`` over ``loader`` in this process only, in the trainer's precision.

    ``trainer.predict`` under DDP splits the batches among the processes and returns each
    process only its own share, so rank 0 could not write every sample's prediction.
    """
    device = trainer.strategy.root_device
    module.to(device).eval()
    batches = []
    with torch.inference_mode(), trainer.precision_plugin.forward_context():
        for batch_idx, (volume, target) in enumerate(loader):
            batch = (volume.to(device), target.to(device))
            batches.append(module.predict_step(batch, batch_idx))
    return batches


def load_module(ckpt_path: str | Path) -> VolumeRegressor:
    """Rebuild a VolumeRegressor from a checkpoint's stored settings and load its weights."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    settings = checkpoint.get("hyper_parameters", {}).get("settings")
    if not settings or "net" not in settings:
        raise ValueError(
            f"{ckpt_path} stores no model settings (hyper_parameters['settings']): evaluate a "
            "checkpoint written by train.py or volreg-import-keras"
        )
    module = regressor_from_settings(settings)
    module.load_state_dict(checkpoint["state_dict"])
    return module
