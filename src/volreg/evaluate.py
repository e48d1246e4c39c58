"""The evaluation job: test any checkpoint, trained here or imported, on the configured data.

Run ``python eval.py ckpt_path=...`` (or ``volreg-eval``) with Hydra overrides, e.g.
``python eval.py ckpt_path=imported.ckpt data=files data.files.path=arrays.npz``. The run
directory receives metrics.json, predictions.npz, pred_vs_true.png and config.yaml.
"""

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from volreg.evaluation import load_module, write_predictions
from volreg.module import VolumeRegressor
from volreg.schema import register_schemas
from volreg.show import print_config
from volreg.train import CONFIG_DIR

log = logging.getLogger(__name__)

register_schemas()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    run(cfg)


def run(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on ``cfg.data`` and return the test metrics."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ValueError("ckpt_path is required: python eval.py ckpt_path=path/to/model.ckpt")
    if not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(
            f"ckpt_path={cfg.ckpt_path} not found: give a .ckpt file written by train.py "
            "or volreg-import-keras"
        )
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    print_config(cfg, output_dir / "config.yaml")
    L.seed_everything(cfg.seed, workers=True)

    log.info("loading the model from %s", cfg.ckpt_path)
    module = load_module(cfg.ckpt_path)
    net = module.hparams["settings"]["net"]

    log.info("building the data module (data.source=%s)", cfg.data.source)
    datamodule = instantiate(cfg.data)
    datamodule.check_model_fit(net["in_channels"], tuple(net["volume_shape"]), net["num_targets"])
    datamodule.prepare_data()
    datamodule.setup("test")
    check_target_scale(module, datamodule)

    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    log.info("testing on %d samples", datamodule.describe().split_sizes.get("test", 0))
    results = trainer.test(module, datamodule=datamodule)
    test = {name: float(value) for name, value in results[0].items()}
    write_predictions(trainer, module, datamodule, output_dir)

    write_metrics(output_dir / "metrics.json", cfg, module, test)
    log.info("test metrics written to %s", output_dir / "metrics.json")
    return test


def check_target_scale(module: VolumeRegressor, datamodule) -> None:
    """Raise ValueError unless the data serves targets in the scale the model was trained on."""
    same = torch.allclose(module.target_mean, datamodule.target_mean) and torch.allclose(
        module.target_std, datamodule.target_std
    )
    if not same:
        raise ValueError(
            f"the checkpoint was trained on targets standardised with mean "
            f"{module.target_mean.tolist()} and std {module.target_std.tolist()}, but the data "
            f"serves them with mean {datamodule.target_mean.tolist()} and std "
            f"{datamodule.target_std.tolist()} (data.standardize={datamodule.standardize}): set "
            "data.standardize and the training split as in the training run"
        )


def write_metrics(path: Path, cfg: DictConfig, module: VolumeRegressor, test: dict) -> None:
    record: dict[str, Any] = {
        "status": "completed",
        "ckpt_path": str(cfg.ckpt_path),
        "test": test,
        "settings": module.hparams["settings"],
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "seed": cfg.seed,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
