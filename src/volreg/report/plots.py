"""curves.png (val L1 per epoch, mean over seeds with a min-max band) and effects.png."""

import matplotlib

matplotlib.use("Agg")  # reports are written to files, often on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from volreg.report.effects import SettingEffect  # noqa: E402
from volreg.report.variants import Variant  # noqa: E402


def plot_curves(variants: list[Variant]) -> Figure:
    """Plot val L1 per epoch, one panel per model, mean over seeds and the min-max band."""
    models = sorted({variant.model or "(no model choice)" for variant in variants})
    figure, axes = plt.subplots(
        1, len(models), figsize=(7 * len(models), 5), squeeze=False, sharey=True
    )
    for axis, model in zip(axes[0], models, strict=True):
        members = [v for v in variants if (v.model or "(no model choice)") == model]
        for variant in members:
            epochs, mean, low, high = _curve(variant)
            if len(epochs) == 0:
                continue
            unchanged = variant.change is None
            (line,) = axis.plot(
                epochs,
                mean,
                label=variant.change or f"{variant.label} (unchanged)",
                linewidth=2.5 if unchanged else 1.2,
                color="black" if unchanged else None,
            )
            axis.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
        axis.set_title(model)
        axis.set_xlabel("epoch")
        axis.set_ylabel("val L1 (val/mae)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    return figure


def _curve(variant: Variant) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return epochs and the mean, min and max over seeds at each epoch any seed reached."""
    by_epoch: dict[int, list[float]] = {}
    for job in variant.jobs:
        for epoch, value in job.val_l1:
            by_epoch.setdefault(epoch, []).append(value)
    epochs = np.array(sorted(by_epoch))
    values = [np.array(by_epoch[epoch]) for epoch in epochs]
    mean = np.array([np.mean(v) for v in values])
    low = np.array([np.min(v) for v in values]) if values else np.array([])
    high = np.array([np.max(v) for v in values]) if values else np.array([])
    return epochs, mean, low, high


def plot_effects(effects: list[SettingEffect], gap: float | None) -> Figure:
    """Bar chart of each setting's shift of best val L1 when fixed and when broken, ± 1 SE."""
    settings = [effect.setting for effect in effects]
    positions = np.arange(len(settings))
    figure, axis = plt.subplots(figsize=(8, 1.0 + 0.5 * max(len(settings), 1)))
    if not effects:
        axis.text(0.5, 0.5, "no fix=X or break=X variants with a baseline", ha="center")
        axis.set_axis_off()
        return figure

    for offset, name, color, attribute in (
        (-0.2, "fix: port → Keras value", "tab:blue", "fix"),
        (0.2, "break: Keras → port value", "tab:red", "break_"),
    ):
        shifts = [getattr(effect, attribute) for effect in effects]
        present = [index for index, shift in enumerate(shifts) if shift is not None]
        if not present:
            continue
        axis.barh(
            positions[present] + offset,
            [shifts[index].delta for index in present],
            height=0.4,
            xerr=[shifts[index].error or 0.0 for index in present],
            color=color,
            label=name,
        )
    if gap is not None:
        axis.axvline(-gap, color="tab:blue", linestyle=":", label="closes the whole gap")
        axis.axvline(gap, color="tab:red", linestyle=":", label="opens the whole gap")
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_yticks(positions, settings)
    axis.invert_yaxis()
    axis.set_xlabel("change of best val L1 against the unchanged model (mean over seeds)")
    axis.legend(fontsize=8, loc="lower right")
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure
