"""Typed schemas of the config groups, registered in Hydra's ConfigStore.

Each group file starts with ``defaults: [/schema/<group>@_here_, _self_]``, so its keys are
merged onto a dataclass: a misspelt key, in a yaml file or on the command line, fails when
the config is composed.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from volreg.data.config import DataConfig


@dataclass
class NetConfig:
    """Arguments of :class:`volreg.models.ResidualCNN3d`; channels, volume shape and targets
    come from the data."""

    _target_: str = "volreg.models.ResidualCNN3d"
    widths: list[int] = field(default_factory=lambda: [64, 64, 128])
    kernel_size: int = 5
    head_widths: list[int] = field(default_factory=lambda: [64, 32])
    dropout_rate: float = 0.25
    dropout: str = "element"
    # How element dropout draws masks on the CPU: "packed" or "bernoulli" (nn.Dropout).
    dropout_masks: str = "packed"
    residual: str = "separate"
    bn_momentum: float = 0.01
    bn_eps: float = 1e-3
    bn_running_var: str = "biased"
    init: str = "keras"
    # Algorithm of the conv blocks: "direct", "fourier" or "auto" (fourier on the CPU where faster).
    conv_algorithm: str = "direct"


@dataclass
class LossConfig:
    _target_: str = "volreg.losses.RegressionLoss"
    kind: str = "l1"
    target_layout: str = "matched"


@dataclass
class OptimizerConfig:
    """An optimizer class taking these arguments: ``volreg.optim.KerasAdam`` or
    ``torch.optim.Adam``. It is built later, once the parameters exist."""

    _target_: str = "volreg.optim.KerasAdam"
    _partial_: bool = True
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-7
    weight_decay: float = 0.0
    amsgrad: bool = False
    # One multi-tensor kernel per update operation instead of a loop over tensors.
    foreach: bool = False
    # The whole update in one pass over each tensor (PyTorch's fused kernel).
    fused: bool = False


@dataclass
class ModelConfig:
    net: NetConfig = field(default_factory=NetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    # An epoch-wise torch.optim.lr_scheduler class with `_partial_: true`, or null for a
    # constant learning rate (the Keras script's).
    scheduler: Any = None
    # Speed settings that keep float32 numerics: the Keras parity tests pass with them on.
    # channels_last_3d stores activations as (N, D, H, W, C) in memory, which oneDNN and
    # cuDNN convolutions prefer; compile runs the network through torch.compile.
    memory_format: str = "contiguous"
    compile: bool = False
    # TF32 for float32 convolutions and matrix products on NVIDIA GPUs (Ampere and later):
    # true allows it, false forbids it, null keeps PyTorch's defaults (convolutions only).
    # False, like keras_faithful, so that imported Keras models are evaluated in float32.
    tf32: bool | None = False


def register_schemas() -> None:
    """Store the schemas as ``schema/model`` and ``schema/data``; safe to call repeatedly."""
    store = ConfigStore.instance()
    store.store(group="schema", name="model", node=ModelConfig)
    store.store(group="schema", name="data", node=DataConfig)
