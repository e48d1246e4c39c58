"""volreg-diff [overrides...]: the "what have I missed?" checklist for a config.

Composes ``train.yaml`` with the given overrides, as ``python train.py`` does, and prints for
every Keras/PyTorch setting its value, Keras's and the usual port's. Each value that differs
from Keras is marked with the effect measured on this project's model.
"""

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from volreg.schema import register_schemas
from volreg.settings_catalog import SETTINGS, Setting
from volreg.train import CONFIG_DIR

MISSING = object()


@dataclass
class Check:
    """One setting's value in the composed config against Keras's and the port's."""

    setting: Setting
    value: Any

    @property
    def matches_keras(self) -> bool:
        return same_value(self.value, self.setting.keras)

    @property
    def matches_port(self) -> bool:
        return same_value(self.value, self.setting.port)


def same_value(value: Any, reference: Any) -> bool:
    """Compare config values, numbers with a relative tolerance (1e-3 and 0.001 are equal)."""
    if isinstance(value, bool) or isinstance(reference, bool):
        return isinstance(value, bool) and isinstance(reference, bool) and value == reference
    if isinstance(value, int | float) and isinstance(reference, int | float):
        return math.isclose(value, reference, rel_tol=1e-9)
    return value == reference


def compose_config(overrides: list[str], config_dir: Path | None = None):
    """Compose train.yaml with ``overrides``; ``config_dir`` adds the user's config directory
    to the search path, so its experiment files can be selected."""
    register_schemas()
    extra = []
    if config_dir is not None:
        extra.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*extra, *overrides])


def check_settings(cfg) -> list[Check]:
    """Read every catalogued setting from ``cfg``; a missing key gives the value MISSING."""
    return [
        Check(setting, OmegaConf.select(cfg, setting.key, default=MISSING)) for setting in SETTINGS
    ]


def format_checks(checks: list[Check]) -> str:
    rows = [("", "setting", "config key", "value", "Keras", "usual port")]
    for check in checks:
        value = "(missing)" if check.value is MISSING else _show(check.value)
        mark = "ok" if check.matches_keras else "DIFF"
        rows.append(
            (
                mark,
                check.setting.name,
                check.setting.key,
                value,
                _show(check.setting.keras),
                _show(check.setting.port),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]

    mismatches = [check for check in checks if not check.matches_keras]
    lines.append("")
    if not mismatches:
        lines.append("Every setting matches Keras.")
        return "\n".join(lines)
    lines.append(f"{len(mismatches)} setting(s) differ from Keras:")
    for check in mismatches:
        setting = check.setting
        this_config = setting.port_behaviour if check.matches_port else "another value"
        lines.append(
            f"- {setting.name} ({setting.key}={_show(check.value)}): Keras: "
            f"{setting.keras_behaviour}. This config: {this_config}. "
            f"Measured effect: {setting.effect}. To match Keras set "
            f"{setting.key}={_show(setting.keras)} or add fix={setting.name}."
        )
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="volreg-diff",
        description="Compose the training config with OVERRIDES, as train.py does, and list "
        "every setting in which it differs from Keras, with the measured effect.",
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. model=pytorch_default experiment=mine"
    )
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help="a directory with your own config groups (e.g. DIR/experiment/mine.yaml), "
        "searched after volreg's conf/",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.config_dir is not None and not args.config_dir.is_dir():
        print(f"volreg-diff: config directory not found: {args.config_dir}", file=sys.stderr)
        return 2
    try:
        cfg = compose_config(args.overrides, args.config_dir)
    except (HydraException, OmegaConfBaseException) as error:
        print(f"volreg-diff: the config did not compose: {error}", file=sys.stderr)
        return 2
    print(format_checks(check_settings(cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
