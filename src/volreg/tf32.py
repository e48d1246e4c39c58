"""TensorFloat-32 on NVIDIA GPUs: whether float32 convolutions and matrix products may round
their inputs to TF32's 10-bit mantissa."""

import torch


def set_tf32(enabled: bool | None) -> None:
    """Allow (True) or forbid (False) TF32 in cuDNN and CUDA float32 products; None keeps
    PyTorch's defaults (TF32 for cuDNN convolutions, not for matrix products).

    The flags act on GPUs from the Ampere generation on and change nothing on a CPU.
    NOTE: the tests check the flags on a CPU only; no GPU run has confirmed their effect.
    """
    if enabled is None:
        return
    if not isinstance(enabled, bool):
        raise ValueError(f"invalid tf32={enabled!r}: expected true, false or null")
    precision = "tf32" if enabled else "ieee"
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv") and hasattr(cudnn.conv, "fp32_precision"):
        # Newer PyTorch versions. Reading allow_tf32 after these flags were set differently for
        # convolutions and RNNs raises, so both get the same value.
        cudnn.conv.fp32_precision = precision
        cudnn.rnn.fp32_precision = precision
        torch.backends.cuda.matmul.fp32_precision = precision
    else:
        cudnn.allow_tf32 = enabled
        torch.backends.cuda.matmul.allow_tf32 = enabled
