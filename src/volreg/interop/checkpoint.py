"""Turn a saved Keras model into a VolumeRegressor and a Lightning checkpoint."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from volreg.interop.keras_file import read_keras_model
from volreg.interop.keras_graph import KerasArchitecture, collect_weights, map_keras_model
from volreg.interop.keras_weights import load_keras_weights
from volreg.models import ResidualCNN3d
from volreg.module import VolumeRegressor, regressor_from_settings
from volreg.schema import ModelConfig

log = logging.getLogger(__name__)

NET_TARGET = "volreg.models.ResidualCNN3d"


@dataclass
class ImportedModel:
    """A Keras model rebuilt as a VolumeRegressor, with the settings it was mapped to."""

    module: VolumeRegressor
    architecture: KerasArchitecture
    source: str

    @property
    def net(self) -> ResidualCNN3d:
        return self.module.net


def import_keras_model(path: str | Path, config_path: str | Path | None = None) -> ImportedModel:
    """Read a Keras model file, map it onto ResidualCNN3d and copy its weights.

    Raises KerasFileError for unreadable files and KerasArchitectureError, naming the Keras
    layer, for models that ResidualCNN3d cannot reproduce.
    """
    keras_file = read_keras_model(path, config_path)
    architecture = map_keras_model(keras_file.config)
    weights = collect_weights(architecture, keras_file.weights)

    settings = model_settings(architecture)
    net = instantiate(settings["net"])
    load_keras_weights(net, weights)
    module = regressor_from_settings(settings, net=net)
    return ImportedModel(module, architecture, keras_file.source)


def model_settings(architecture: KerasArchitecture) -> dict[str, Any]:
    """Return the ``cfg.model`` dict a checkpoint stores, with the net read from Keras.

    Loss and optimizer are the schema defaults, which are the Keras script's: L1 ('mae') and
    KerasAdam with lr 1e-3 and epsilon 1e-7.
    """
    # NOTE: the compile settings stored in the Keras file (optimizer, learning rate, loss) are
    # not read. A model compiled with another optimizer or loss needs model.* overrides to
    # train on as it was trained.
    settings = OmegaConf.to_container(OmegaConf.structured(ModelConfig), resolve=True)
    settings["net"] = {"_target_": NET_TARGET, **architecture.net}
    return settings


def save_checkpoint(module: VolumeRegressor, path: str | Path) -> None:
    """Write ``module`` as a Lightning checkpoint at epoch 0 that ``train.py`` can resume.

    The checkpoint contains no random states, so a run resumed from it draws dropout masks and
    shuffling from its own ``seed``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # A Trainer that never ran fit writes the loop states of epoch 0 and step 0, and empty
    # optimizer and scheduler states, which Lightning's resume skips.
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path, weights_only=False)

    checkpoint = torch.load(path, weights_only=True)
    checkpoint.pop("rng_states", None)
    torch.save(checkpoint, path)
    log.info("wrote %s", path)
