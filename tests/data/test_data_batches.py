import lightning as L
import numpy as np
import pytest
import torch
from volume_files import SIZES, collect, write_npz

from volreg.data import VolumeDataModule
from volreg.data.batches import EpochBatchSampler


def epoch_orders(loader, epochs: int) -> list[np.ndarray]:
    """Targets in serving order for consecutive epochs, as Lightning drives the sampler."""
    orders = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        orders.append(collect(loader)[1][:, 0])
    return orders


def test_shuffle_new_order_each_epoch(small_grf):
    data = VolumeDataModule(**small_grf, shuffle=True)
    data.setup("fit")

    first, second, third = epoch_orders(data.train_dataloader(), 3)

    assert not np.array_equal(first, second)
    assert not np.array_equal(second, third)
    np.testing.assert_array_equal(np.sort(first), np.sort(second))


def test_shuffle_false_keeps_stored_order(small_grf):
    shuffled = VolumeDataModule(**small_grf, shuffle=True)
    ordered = VolumeDataModule(**small_grf, shuffle=False)
    shuffled.setup("fit")
    ordered.setup("fit")

    first, second = epoch_orders(ordered.train_dataloader(), 2)
    stored = shuffled._datasets["train"].targets[:, 0].numpy()

    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, stored)


def test_shuffle_seeded_reproducible(small_grf):
    orders = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        data = VolumeDataModule(**small_grf, seed=seed)
        data.setup("fit")
        orders[name] = epoch_orders(data.train_dataloader(), 2)

    np.testing.assert_array_equal(orders["a"][1], orders["b"][1])
    assert not np.array_equal(orders["a"][1], orders["c"][1])


def test_epoch_advances_without_set_epoch():
    sampler = EpochBatchSampler(10, 4, shuffle=True, seed=0)

    first = np.concatenate(list(sampler))
    second = np.concatenate(list(sampler))
    sampler.set_epoch(0)
    again = np.concatenate(list(sampler))

    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, again)


def test_last_partial_batch_kept():
    sampler = EpochBatchSampler(10, 4, shuffle=True, seed=0)

    batches = list(sampler)

    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert len(sampler) == 3
    assert all(np.all(np.diff(batch) > 0) for batch in batches)


def test_batch_sizes_per_split(small_grf):
    data = VolumeDataModule(
        **small_grf, batch_size=5, val_batch_size=3, test_batch_size=7, predict_batch_size=8
    )
    data.setup()

    sizes = {
        "train": [len(x) for x, _ in data.train_dataloader()],
        "val": [len(x) for x, _ in data.val_dataloader()],
        "test": [len(x) for x, _ in data.test_dataloader()],
        "predict": [len(x) for x, _ in data.predict_dataloader()],
    }

    assert sizes == {
        "train": [5, 5, 5, 5, 4],
        "val": [3, 3, 2],
        "test": [7, 1],
        "predict": [8],
    }


def test_default_batch_size_matches_keras(small_grf):
    data = VolumeDataModule(**small_grf)
    data.setup()

    assert [len(x) for x, _ in data.train_dataloader()] == [16, 8]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_predict_split_setting(small_grf, split):
    data = VolumeDataModule(**small_grf, predict_split=split, shuffle=False)
    data.setup()

    served = collect(data.predict_dataloader())[1]
    expected = collect(getattr(data, f"{split}_dataloader")())[1]

    np.testing.assert_array_equal(served, expected)


def test_lazy_and_memory_batches_identical(tmp_path, arrays):
    write_npz(tmp_path / "data.npz", arrays)
    write_npz(tmp_path / "copy.npz", arrays)
    loaders = []
    for path, loading in (("data.npz", "memory"), ("copy.npz", "lazy")):
        files = {"path": str(tmp_path / path), "loading": loading}
        data = VolumeDataModule(source="files", files=files, batch_size=6, seed=2)
        data.setup()
        loaders.append(data.train_dataloader())

    for epoch in range(2):
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
        for memory, lazy in zip(*loaders, strict=True):
            torch.testing.assert_close(memory, lazy, rtol=0, atol=0)


def test_pin_memory_passed_to_loader(small_grf):
    data = VolumeDataModule(**small_grf, pin_memory=True, num_workers=0)
    data.setup()

    assert data.train_dataloader().pin_memory
    assert data.val_dataloader().num_workers == 0


def test_on_device_keeps_data_on_device(small_grf):
    data = VolumeDataModule(**small_grf, on_device=True)
    data.setup()

    x, y = next(iter(data.train_dataloader()))

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert x.device.type == expected
    assert y.device.type == expected


class RecordingModel(L.LightningModule):
    """Stores the targets of every training batch, per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: dict[int, list[float]] = {}

    def training_step(self, batch, batch_index):
        x, y = batch
        self.seen.setdefault(self.current_epoch, []).extend(y[:, 0].tolist())
        return self.layer(x.mean(dim=(1, 2, 3, 4))[:, None]).sub(y).abs().mean()

    def validation_step(self, batch, batch_index):
        x, y = batch
        self.log("val/loss", self.layer(x.mean(dim=(1, 2, 3, 4))[:, None]).sub(y).abs().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("shuffle", [True, False])
def test_trainer_reshuffles_each_epoch(small_grf, shuffle):
    data = VolumeDataModule(**small_grf, shuffle=shuffle)
    model = RecordingModel()
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )

    trainer.fit(model, datamodule=data)

    orders = [model.seen[epoch] for epoch in range(3)]
    assert len(orders[0]) == SIZES["train"] + 4
    if shuffle:
        assert orders[0] != orders[1]
        assert orders[1] != orders[2]
    else:
        assert orders[0] == orders[1] == orders[2]


def test_loader_leaves_global_random_stream(small_grf):
    # Lightning creates iterators at varying points (the sanity check, resuming), so a draw
    # from the global stream there would change the dropout masks of a resumed run.
    data = VolumeDataModule(**small_grf, shuffle=True)
    data.setup("fit")
    before = torch.get_rng_state()

    collect(data.train_dataloader())
    collect(data.val_dataloader())

    assert torch.equal(torch.get_rng_state(), before)
