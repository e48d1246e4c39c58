"""Run outputs: metrics.json, predictions.npz and pred_vs_true.png in the run directory."""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # runs write files and have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

STATUSES = ("running", "completed", "diverged", "failed", "interrupted")


@dataclass
class RunRecord:
    """The contents of ``metrics.json``; written on success and on every failure."""

    status: str = "running"
    error: str | None = None
    best_val_loss: float | None = None
    best_epoch: int | None = None
    epochs_run: int = 0
    wall_time_s: float = 0.0
    # Samples/s of the first process in training batches, validation excluded. Under DDP the
    # whole job trains about speed_settings["processes"] times as many.
    train_samples_per_s: float | None = None
    # What train_samples_per_s depends on besides the model settings.
    speed_settings: dict[str, Any] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    seed: int | None = None
    tags: list[str] = field(default_factory=list)

    def set_history(self, val_history: list[tuple[int, float]]) -> None:
        """Take the best finite val/loss and its epoch from (epoch, val/loss) pairs."""
        finite = [(loss, epoch) for epoch, loss in val_history if math.isfinite(loss)]
        if finite:
            self.best_val_loss, self.best_epoch = min(finite)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save_predictions(
    path: Path, prediction: np.ndarray, target: np.ndarray, target_names: tuple[str, ...]
) -> None:
    """Write predicted and true targets (N, P) in target units."""
    np.savez(path, prediction=prediction, target=target, target_names=np.array(target_names))


def plot_pred_vs_true(
    prediction: np.ndarray, target: np.ndarray, target_names: tuple[str, ...]
) -> Figure:
    """Scatter predicted against true values, one panel per target, with the identity line."""
    count = prediction.shape[1]
    figure, axes = plt.subplots(1, count, figsize=(4.5 * count, 4.5), squeeze=False)
    for index, axis in enumerate(axes[0]):
        true, predicted = target[:, index], prediction[:, index]
        low = float(min(true.min(), predicted.min()))
        high = float(max(true.max(), predicted.max()))
        axis.plot([low, high], [low, high], color="black", linewidth=1, label="identity")
        axis.scatter(true, predicted, s=8, alpha=0.6)
        mae = float(np.abs(predicted - true).mean())
        axis.set_title(f"{target_names[index]} (MAE {mae:.4f})")
        axis.set_xlabel("actual")
        axis.set_ylabel("predicted")
        axis.set_aspect("equal", adjustable="datalim")
        axis.legend(loc="upper left")
    figure.tight_layout()
    return figure
