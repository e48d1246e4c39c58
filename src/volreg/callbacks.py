"""Callbacks that keep a run recoverable: stop on a non-finite loss, checkpoint on Ctrl-C."""

import logging
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class DivergedError(RuntimeError):
    """A training or validation loss became NaN or infinite."""


class DivergenceGuard(L.Callback):
    """Stop the run at the first non-finite loss.

    Raising (instead of setting ``trainer.should_stop``) ends fit before ModelCheckpoint can
    write the broken weights, so ``last.ckpt`` stays the last finite state.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._check(trainer, outputs, "training", batch_idx)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not trainer.sanity_checking:
            self._check(trainer, outputs, "validation", batch_idx)

    @staticmethod
    def _check(trainer: L.Trainer, outputs, phase: str, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None or torch.isfinite(loss).all():
            return
        raise DivergedError(
            f"the {phase} loss is {float(loss)} at epoch {trainer.current_epoch}, "
            f"global step {trainer.global_step}, batch {batch_idx}. Check the learning rate "
            "(model.optimizer.lr), the inputs and targets for NaN or huge values, and the "
            "target scale (data.standardize). The last checkpoint before this epoch is kept."
        )


class InterruptCheckpoint(L.Callback):
    """Write ``last.ckpt`` when the run is stopped with Ctrl-C or SIGTERM, so it can be resumed."""

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or checkpoint.dirpath is None:
            log.warning("interrupted: no ModelCheckpoint callback, so no last.ckpt is written")
            return
        path = Path(checkpoint.dirpath) / "last.ckpt"
        trainer.save_checkpoint(path)
        log.info(
            "interrupted at epoch %d, step %d: resume with ckpt_path=%s",
            trainer.current_epoch,
            trainer.global_step,
            path,
        )


class EpochSummary(L.Callback):
    """Log one line per epoch with the losses and the epoch time.

    The progress bar draws nothing when the output is not a terminal (SLURM logs, CI,
    ``nohup``), so this line is the progress record of such runs.
    """

    def __init__(self) -> None:
        self._epoch_start = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        # A run resumed from a mid-epoch checkpoint starts without on_train_epoch_start.
        self._epoch_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Callbacks run before the module's epoch-end hook logs train/loss, so the current
        # epoch's value comes from the module; validation has already run for this epoch.
        parts = [f"train/loss {pl_module.epoch_loss('train'):.4f}"]
        metrics = trainer.callback_metrics
        for name in ("val/loss", "val/loss_best"):
            if name in metrics:
                parts.append(f"{name} {float(metrics[name]):.4f}")
        log.info(
            "epoch %d/%d: %s (%.1f s)",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            ", ".join(parts),
            time.perf_counter() - self._epoch_start,
        )


class ThroughputMeter(L.Callback):
    """Count training samples and the time spent in training batches (validation excluded)."""

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self._batch_start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._batch_start
        self.samples += len(batch[0])

    @property
    def samples_per_second(self) -> float | None:
        return self.samples / self.seconds if self.seconds > 0 else None
