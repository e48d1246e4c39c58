"""Print the composed config as a tree and save it."""

import logging
from pathlib import Path

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

ORDER = ("data", "model", "trainer", "callbacks", "logger", "paths")


def print_config(cfg: DictConfig, path: Path | None = None) -> None:
    """Print each top-level section of ``cfg`` as a branch; write the resolved YAML to ``path``."""
    tree = rich.tree.Tree("config", guide_style="dim")
    sections = [key for key in ORDER if key in cfg] + [key for key in cfg if key not in ORDER]
    for key in sections:
        value = cfg[key]
        text = (
            OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        )
        tree.add(key, style="bold").add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)

    if path is not None:
        path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        log.info("config saved to %s", path)
