"""Every setting in which a usual PyTorch port of the Keras script differs from Keras.

One entry per setting: its config key, the value that reproduces Keras, the value a usual port
has, and the effect measured on this project's residual 3D CNN. The entry names match the
options of the ``fix`` and ``break`` config groups. Keras 3.15.1 and PyTorch 2.13.0 defaults.
"""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One Keras/PyTorch difference and where volreg's config sets it."""

    name: str
    key: str
    keras: Any
    port: Any
    keras_behaviour: str
    port_behaviour: str
    effect: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        name="target_layout",
        key="model.loss.target_layout",
        keras="matched",
        port="broadcast",
        keras_behaviour="loss 'mae' reshapes y_true to the rank of y_pred",
        port_behaviour="F.l1_loss of output (N, 1) against target (N,) broadcasts to (N, N)",
        effect="decisive: every prediction is pulled to the batch median, so val L1 stalls "
        "near 0.25 for targets uniform in [0, 1]",
    ),
    Setting(
        name="shuffle",
        key="data.shuffle",
        keras=True,
        port=False,
        keras_behaviour="fit(shuffle=True) draws a new order every epoch",
        port_behaviour="DataLoader serves the samples in stored order",
        effect="large when the files are stored in order: on target-sorted data val L1 "
        "0.17-0.31 without shuffling against 0.027 with it",
    ),
    Setting(
        name="dropout",
        key="model.net.dropout",
        keras="element",
        port="channel",
        keras_behaviour="Dropout zeroes single values",
        port_behaviour="nn.Dropout3d zeroes whole feature maps",
        effect="much stronger, spatially correlated noise; on its own no plateau on a "
        "scaled-down copy",
    ),
    Setting(
        name="bn_eps",
        key="model.net.bn_eps",
        keras=1e-3,
        port=1e-5,
        keras_behaviour="BatchNormalization epsilon 1e-3",
        port_behaviour="nn.BatchNorm3d eps 1e-5",
        effect="medium: with BN input variances near 1e-3 Keras's normalised activations are "
        "about 0.7x PyTorch's; loaded Keras weights give outputs that differ by up to ~1",
    ),
    Setting(
        name="bn_momentum",
        key="model.net.bn_momentum",
        keras=0.01,
        port=0.1,
        keras_behaviour="momentum 0.99 keeps 99% of the moving statistics (PyTorch 0.01)",
        port_behaviour="nn.BatchNorm3d momentum 0.1 keeps 90%",
        effect="changes eval-mode validation, mainly early: after 50 steps a running mean "
        "reaches 2.98 of 3 at 0.1 and 1.18 at 0.01",
    ),
    Setting(
        name="residual",
        key="model.net.residual",
        keras="separate",
        port="shared",
        keras_behaviour="each Conv3D(64, 1)(input) call creates a new layer",
        port_behaviour="one nn.Conv3d(1, 64, 1) reused for both residual adds",
        effect="low: tied projection weights with summed gradients",
    ),
    Setting(
        name="adam",
        key="model.optimizer._target_",
        keras="volreg.optim.KerasAdam",
        port="torch.optim.Adam",
        keras_behaviour="epsilon added to sqrt(v) with the bias correction in the step size",
        port_behaviour="epsilon added to the bias-corrected sqrt(v)",
        effect="low, but needed for step-by-step parity: Keras's 1e-7 acts like a PyTorch eps "
        "of 3.16e-6 at step 1 and 1.26e-7 at step 1000",
    ),
    Setting(
        name="init",
        key="model.net.init",
        keras="keras",
        port="port",
        keras_behaviour="glorot_uniform kernels, zero biases",
        port_behaviour="xavier_uniform_ kernels, the output bias left at U(±1/sqrt(fan_in))",
        effect="low: an initial output offset of up to ±0.177 for 32 inputs",
    ),
    Setting(
        name="bn_running_var",
        key="model.net.bn_running_var",
        keras="biased",
        port="unbiased",
        keras_behaviour="the moving variance stores the biased batch variance",
        port_behaviour="the running variance stores the unbiased batch variance",
        effect="negligible: a factor n/(n-1) = 1.0000153 for 16 samples of 16³ voxels, "
        "visible only in exact parity tests",
    ),
)


def by_name(name: str) -> Setting:
    """Return the setting called ``name``; raise KeyError listing the known names."""
    for setting in SETTINGS:
        if setting.name == name:
            return setting
    known = ", ".join(setting.name for setting in SETTINGS)
    raise KeyError(f"unknown setting {name!r}: known settings are {known}")
