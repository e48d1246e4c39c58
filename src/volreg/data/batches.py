"""Batches served by index: each DataLoader step reads a whole batch of rows at once.

A DataLoader with ``batch_size=None`` and :class:`EpochBatchSampler` as its sampler passes each
batch of indices to ``dataset[indices]`` and collates nothing, so there is no per-sample
``__getitem__`` call. Lightning calls ``set_epoch`` on the sampler before each training epoch.
"""

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from volreg.data.splits import SplitArrays
from volreg.data.standardize import Scaler


class EpochBatchSampler(Sampler[np.ndarray]):
    """Sorted index batches over ``length`` samples; the last partial batch is kept.

    With ``shuffle`` the order is a new permutation each epoch, drawn from (seed, epoch), so a
    seeded run repeats exactly. The indices inside each batch are sorted, so lazily read files
    are read front to back; this does not change what a batch contains. Without a
    ``set_epoch`` call the epoch advances by one each time the sampler is iterated.
    """

    def __init__(self, length: int, batch_size: int, shuffle: bool, seed: int) -> None:
        self.length = length
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.length // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.shuffle:
            sequence = np.random.SeedSequence([self.seed, self.epoch])
            order = np.random.Generator(np.random.PCG64(sequence)).permutation(self.length)
        else:
            order = np.arange(self.length)
        self.epoch += 1

        for start in range(0, self.length, self.batch_size):
            yield np.sort(order[start : start + self.batch_size])


class TensorBatches(Dataset):
    """Inputs (N, C, D, H, W) and targets (N, P) held as tensors, on the CPU or a device."""

    def __init__(self, volumes: torch.Tensor, targets: torch.Tensor) -> None:
        self.volumes = volumes
        self.targets = targets

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if len(indices) and indices[-1] - indices[0] + 1 == len(indices):
            rows = slice(int(indices[0]), int(indices[-1]) + 1)  # a view, no gather
            return self.volumes[rows], self.targets[rows]
        if self.volumes.device.type == "cpu":
            # numpy's gather is single-threaded. torch's index_select on CPU took 7 µs to 7 ms
            # per batch on a loaded 2-core machine, as its thread pool competed for the cores.
            return (
                torch.from_numpy(self.volumes.numpy()[indices]),
                torch.from_numpy(self.targets.numpy()[indices]),
            )
        index = torch.from_numpy(indices).to(self.volumes.device)
        return self.volumes.index_select(0, index), self.targets.index_select(0, index)


class LazyBatches(Dataset):
    """A split read from its files one batch at a time, converted and standardised per batch."""

    def __init__(self, split: SplitArrays, input_scaler: Scaler, target_scaler: Scaler) -> None:
        self.split = split
        self.input_scaler = input_scaler
        self.target_scaler = target_scaler

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        volumes, targets = self.split.read(indices)
        volumes = self.input_scaler.transform(torch.from_numpy(volumes))
        targets = self.target_scaler.transform(torch.from_numpy(targets))
        return volumes, targets


def keep_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate function for batches that the dataset already returns whole."""
    return batch


def batch_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int,
    pin_memory: bool,
) -> DataLoader:
    """Return a DataLoader that serves ``dataset`` in index batches."""
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle, seed)
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        collate_fn=keep_batch,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        # Each new iterator draws a worker seed from this generator. Without it, the draw
        # comes from torch's global stream and shifts the dropout masks that follow.
        generator=torch.Generator().manual_seed(seed),
    )
