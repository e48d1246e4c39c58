"""Compose the real train config at test sizes, as `python train.py` would."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from volreg.schema import register_schemas
from volreg.train import CONFIG_DIR

# Tiny volumes, widths and splits, CPU only: a run takes seconds on 2 cores.
TINY = [
    "data.grf.shape=[8,8,8]",
    "data.grf.n_train=64",
    "data.grf.n_val=32",
    "data.grf.n_test=32",
    "model.net.widths=[2,2,4]",
    "model.net.head_widths=[8,4]",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "callbacks.progress_bar=null",
]


def compose_train(tmp_path: Path, overrides: list[str] = (), tiny: bool = True):
    """Compose ``train.yaml`` with ``overrides``; run outputs and the GRF cache go to tmp_path."""
    register_schemas()
    run_dir = tmp_path / "run"
    paths = [
        f"paths.root_dir={tmp_path}",
        f"paths.output_dir={run_dir}",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*(TINY if tiny else []), *paths, *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
