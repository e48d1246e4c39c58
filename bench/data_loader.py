"""Measure batches/s of VolumeDataModule's in-memory path against a TensorDataset DataLoader.

Both serve the same float32 (N, 1, D, H, W) volumes and (N, 1) targets from CPU memory, with a
new random order each epoch and no workers. No model runs, so this times data serving alone.

    python bench/data_loader.py --samples 4000 --size 16 --batch-size 16 --epochs 5
"""

import argparse
import logging
import platform
import tempfile
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from volreg.data import VolumeDataModule


def batches_per_second(loader, epochs: int) -> float:
    """Iterate ``loader`` for ``epochs`` epochs after one warm-up epoch; returns batches/s."""
    for _ in loader:
        pass
    count = 0
    started = time.perf_counter()
    for epoch in range(epochs):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for _ in loader:
            count += 1
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000, help="training volumes")
    parser.add_argument("--size", type=int, default=16, help="edge length D = H = W in voxels")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per loader")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as cache_dir:
        grf = {"shape": [args.size] * 3, "n_train": args.samples, "n_val": 1, "n_test": 0}
        data = VolumeDataModule(grf=grf, batch_size=args.batch_size, cache_dir=cache_dir)
        data.setup("fit")
    index_batches = data.train_dataloader()
    volumes = data._datasets["train"].volumes
    targets = data._datasets["train"].targets
    per_sample = DataLoader(
        TensorDataset(volumes, targets), batch_size=args.batch_size, shuffle=True
    )

    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"{args.samples} volumes of {args.size}³, batch {args.batch_size}, "
        f"{args.epochs} timed epochs of {len(index_batches)} batches"
    )
    for name, loader in (
        ("VolumeDataModule (index batches)", index_batches),
        ("DataLoader(TensorDataset, shuffle=True)", per_sample),
    ):
        print(f"{name:42s} {batches_per_second(loader, args.epochs):10.0f} batches/s")


if __name__ == "__main__":
    main()
