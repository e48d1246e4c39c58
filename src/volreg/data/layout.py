"""Input layouts: which axis of a stored volume array contains the channels."""

import numpy as np

from volreg.data.errors import DataError

LAYOUTS = ("auto", "channels_first", "channels_last")
NO_CHANNEL_AXIS = "no_channel_axis"  # (N, D, H, W): one channel


def resolve_layout(shape: tuple[int, ...], layout: str, label: str) -> str:
    """Return the layout of an input array of ``shape``, deciding ``auto`` only when unambiguous.

    4-D arrays are (N, D, H, W) for every ``layout`` setting. For 5-D arrays, ``auto`` takes an end
    axis as the channel axis when it is smaller than both middle axes, which are spatial in
    either layout. Unless exactly one end axis qualifies, it raises an error that requests the
    setting.
    """
    if len(shape) == 4:
        return NO_CHANNEL_AXIS
    if len(shape) != 5:
        raise DataError(
            f"{label} has shape {shape} (rank {len(shape)}): expected a rank-4 (N, D, H, W) or "
            "rank-5 (N, C, D, H, W) / (N, D, H, W, C) array of volumes. Reshape it before saving."
        )
    if layout != "auto":
        return layout

    middle = min(shape[2], shape[3])
    first_is_channel = shape[1] < middle
    last_is_channel = shape[4] < middle
    if first_is_channel != last_is_channel:
        return "channels_first" if first_is_channel else "channels_last"
    raise DataError(
        f"{label} has shape {shape}, which could be (N, C, D, H, W) or (N, D, H, W, C): set "
        "data.files.layout=channels_first or data.files.layout=channels_last"
    )


def channels_and_volume(shape: tuple[int, ...], layout: str) -> tuple[int, tuple[int, int, int]]:
    """Return (channels, (D, H, W)) of an input array in a resolved layout."""
    if layout == NO_CHANNEL_AXIS:
        return 1, tuple(shape[1:4])
    if layout == "channels_first":
        return shape[1], tuple(shape[2:5])
    return shape[4], tuple(shape[1:4])


def to_channels_first(volumes: np.ndarray, layout: str) -> np.ndarray:
    """Convert a batch in a resolved layout to contiguous float32 (N, C, D, H, W)."""
    if layout == NO_CHANNEL_AXIS:
        volumes = volumes[:, None]
    elif layout == "channels_last":
        volumes = np.moveaxis(volumes, -1, 1)
    return np.ascontiguousarray(volumes, dtype=np.float32)
