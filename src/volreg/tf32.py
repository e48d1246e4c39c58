"""TensorFloat-32 on NVIDIA GPUs: whether float32 convolutions and matrix products may round
their inputs to TF32's 10-bit mantissa."""

import torch

# The flags as this process found them, which tf32=None restores: a sweep runs its jobs in one
# process, so a job with tf32=None must not inherit the flags of the job before it.
_INITIAL = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)


def check_tf32(enabled: object) -> bool | None:
    """Return ``enabled`` if it is True, False or None, else raise a ValueError."""
    if enabled is not None and not isinstance(enabled, bool):
        raise ValueError(f"invalid tf32={enabled!r}: expected true, false or null")
    return enabled


def set_tf32(enabled: bool | None) -> None:
    """Allow (True) or forbid (False) TF32 in cuDNN and CUDA float32 products; None restores
    the flags as the process started with them (PyTorch's defaults: TF32 for cuDNN
    convolutions, not for matrix products).

    The flags act on GPUs from the Ampere generation on and change nothing on a CPU. They are
    set through ``allow_tf32``: newer PyTorch versions also have ``fp32_precision`` flags, but
    setting those makes later reads of ``allow_tf32`` (which Lightning does) raise.
    NOTE: the tests check the flags on a CPU only; no GPU run has confirmed their effect.
    """
    check_tf32(enabled)
    cudnn, matmul = _INITIAL if enabled is None else (enabled, enabled)
    torch.backends.cudnn.allow_tf32 = cudnn
    torch.backends.cuda.matmul.allow_tf32 = matmul
