"""Checks a run makes before it trains, so that a wrong setting fails in seconds, not at the end."""

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException

log = logging.getLogger(__name__)

# Network settings that change parameter shapes: a checkpoint's weights fit only the same values.
ARCHITECTURE_KEYS = (
    "in_channels",
    "volume_shape",
    "widths",
    "kernel_size",
    "head_widths",
    "num_targets",
    "residual",
)


def check_model_settings(settings: dict[str, Any], device: torch.device | str = "cpu") -> None:
    """Build the module and its optimizer from ``settings`` (a resolved ``cfg.model``) for a
    one-channel 4³ stand-in volume on ``device``, so that an invalid choice
    (``model.net.dropout=...``, ``model.optimizer.foreach=true`` with ``fused=true``, ...)
    fails before the data is built.

    The constructors raise the errors, so these checks cannot drift from what training runs.
    The stand-in draws its initial weights from a copy of torch's random state, so the real
    model gets the same weights for a seed as without this check.
    """
    from volreg.module import regressor_from_settings  # the module imports Lightning

    stand_in = copy.deepcopy(settings)
    stand_in["net"].update(in_channels=1, volume_shape=[4, 4, 4], num_targets=1)
    stand_in["compile"] = False
    try:
        with torch.random.fork_rng(devices=[]):
            regressor_from_settings(stand_in).to(device).configure_optimizers()
    except Exception as error:
        # Hydra wraps a constructor's error in an InstantiationException. The error itself
        # names the problem, so the traceback leaves out Hydra's frames (from None).
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
        raise ValueError(
            f"a model setting is invalid: {cause} (these are the model.* keys of the config; "
            "docs/settings.md lists their values)"
        ) from None


def check_accelerator(accelerator: str) -> None:
    """Raise a ValueError when a GPU is requested but PyTorch finds no CUDA device."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator={accelerator} but PyTorch finds no CUDA GPU on this machine: "
            "use trainer=cpu, or trainer=default to pick the device automatically"
        )


def check_checkpoint_file(ckpt_path: str) -> Path:
    """Return ``ckpt_path`` as a Path, or raise FileNotFoundError when it is not a file."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path} not found: give a .ckpt file written by train.py "
            "(e.g. outputs/runs/<run>/checkpoints/last.ckpt) or by volreg-import-keras"
        )
    return path


def check_resume(ckpt_path: str, settings: dict[str, Any]) -> None:
    """Check that ``ckpt_path`` is a checkpoint whose network matches this run's ``settings``.

    Raises FileNotFoundError or ValueError naming the differing settings and the overrides
    that rebuild the checkpoint's network; logs a warning for other settings that differ.
    """
    path = check_checkpoint_file(ckpt_path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        stored = checkpoint["hyper_parameters"]["settings"]
    except Exception as error:  # torch.load raises many types for a file that is not a checkpoint
        raise ValueError(
            f"ckpt_path={ckpt_path} is not a volreg checkpoint ({type(error).__name__}: {error}); "
            "give a .ckpt file written by train.py or volreg-import-keras"
        ) from error

    stored_net, net = stored.get("net", {}), settings["net"]
    mismatched = [key for key in ARCHITECTURE_KEYS if stored_net.get(key) != net.get(key)]
    if mismatched:
        lines = [
            f"model.net.{key}: checkpoint {stored_net.get(key)}, this run {net.get(key)}"
            for key in mismatched
        ]
        overrides = " ".join(
            f"model.net.{key}={_override_value(stored_net[key])}"
            for key in mismatched
            if key not in ("in_channels", "volume_shape", "num_targets")
        )
        hint = (
            f"add {overrides} (or the experiment the checkpoint was trained with)"
            if overrides
            else "use the data the checkpoint was trained on"
        )
        raise ValueError(
            f"ckpt_path={ckpt_path} contains a different network:\n  "
            + "\n  ".join(lines)
            + f"\nTo resume, {hint}."
        )

    differing = sorted(_differences(stored, settings))
    if differing:
        log.warning(
            "resuming %s with settings that differ from the checkpoint's: %s",
            ckpt_path,
            "; ".join(differing),
        )


def _override_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(item) for item in value) + "]"
    return str(value)


def _differences(stored: Any, current: Any, prefix: str = "model") -> list[str]:
    if isinstance(stored, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(stored) | set(current)):
            found += _differences(stored.get(key), current.get(key), f"{prefix}.{key}")
        return found
    if stored != current:
        return [f"{prefix}: checkpoint {stored}, this run {current}"]
    return []
