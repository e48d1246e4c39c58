"""Training throughput of the residual CNN: volreg through Lightning, a bare PyTorch loop, TF-Keras.

Each engine trains the same architecture (Keras settings, L1 loss, Adam) on synthetic 16³
volumes for a fixed number of steps and reports samples/s. Engines run in alternation
(A, B, C, then B, C, A, ...) so that drift in machine load spreads over all of them, and the
median of the repeats is reported.

    python bench/throughput.py --widths 16 --batch-sizes 16 --steps 30 --repeats 3

TF-Keras runs only when TensorFlow is installed (``pip install -e ".[bench]"``); each
Keras measurement runs in a subprocess, because the Keras backend is fixed at import.
"""

import argparse
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from functools import partial

import lightning as L
import numpy as np


def synthetic_batches(batch_size: int, volume: int, count: int, channels_last: bool = False):
    rng = np.random.default_rng(0)
    shape = (
        (batch_size, volume, volume, volume, 1)
        if channels_last
        else (batch_size, 1, volume, volume, volume)
    )
    volumes = rng.random((count, *shape), dtype=np.float32)
    targets = rng.random((count, batch_size, 1), dtype=np.float32)
    return volumes, targets


def widths_for(width: int) -> list[int]:
    # The Keras script's widths are (64, 64, 128): the last block is twice as wide.
    return [width, width, 2 * width]


def torch_net(width: int, volume: int, options: dict):
    from volreg.models import ResidualCNN3d

    return ResidualCNN3d(
        volume_shape=(volume,) * 3,
        widths=widths_for(width),
        dropout_masks=options["dropout_masks"],
        conv_algorithm=options["conv_algorithm"],
    )


def adam_options(options: dict) -> dict:
    """Return KerasAdam's keyword arguments for the update path in ``options``."""
    path = options["adam"]
    return {"foreach": path == "foreach", "fused": path == "fused"}


def autocast(options: dict):
    """Return the autocast context of Lightning's ``options["precision"]`` on the device."""
    import torch

    return torch.autocast(
        options["device"],
        dtype=torch.bfloat16,
        enabled=options["precision"] == "bf16-mixed",
    )


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that wall-clock spans cover it.

    NOTE: the --device cuda paths of this script have not yet run on a GPU.
    """
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_bare_loop(width: int, batch_size: int, volume: int, steps: int, options: dict) -> float:
    """Samples/s of a hand-written PyTorch loop: forward, L1, backward, KerasAdam step.

    The volumes are on the device before timing starts, so no host-to-device copy is timed.
    """
    import torch

    from volreg.losses import RegressionLoss
    from volreg.module import MEMORY_FORMATS
    from volreg.optim import KerasAdam

    device = options["device"]
    memory_format = MEMORY_FORMATS[options["memory_format"]]
    net = torch_net(width, volume, options).to(device=device, memory_format=memory_format)
    if options["compile"]:
        net.compile()
    optimizer = KerasAdam(net.parameters(), **adam_options(options))
    loss_fn = RegressionLoss()
    volumes, targets = synthetic_batches(batch_size, volume, steps + 2)
    volumes = torch.from_numpy(volumes).to(device)
    targets = torch.from_numpy(targets).to(device)

    def step(index):
        optimizer.zero_grad()
        x = volumes[index].contiguous(memory_format=memory_format)
        with autocast(options):
            prediction = net(x)
        loss_fn(prediction.float(), targets[index]).backward()
        optimizer.step()

    net.train()
    for index in range(2):  # warm-up: allocator, oneDNN primitive cache, compilation
        step(index)
    synchronize(device)
    started = time.perf_counter()
    for index in range(2, steps + 2):
        step(index)
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - started)


def flops_per_sample(width: int, volume: int, options: dict) -> float:
    """Floating-point operations of one training step per sample: forward and backward.

    Counted by ``torch.utils.flop_counter`` on a batch of 2 (convolutions and matrix
    products, a multiply-add as two), as model FLOP utilisation counts them. The count is
    that of direct convolutions whatever ``options["conv_algorithm"]`` says: the model's
    arithmetic, not the smaller one of the frequency-domain products.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from volreg.losses import RegressionLoss

    net = torch_net(width, volume, {**options, "conv_algorithm": "direct"}).train()
    batch = 2
    counter = FlopCounterMode(display=False)
    with counter:
        prediction = net(torch.rand(batch, 1, volume, volume, volume))
        RegressionLoss()(prediction, torch.rand(batch, 1)).backward()
    return counter.get_total_flops() / batch


def run_lightning(width: int, batch_size: int, volume: int, steps: int, options: dict) -> float:
    """Samples/s of VolumeRegressor in a Lightning Trainer, timed inside the fit loop."""
    import torch

    from volreg.losses import RegressionLoss
    from volreg.module import VolumeRegressor
    from volreg.optim import KerasAdam

    volumes, targets = synthetic_batches(batch_size, volume, 1)
    # On a GPU the samples start on the device, as with data.on_device=true, so the
    # loader stacks batches there and no host-to-device copy is timed.
    device = options["device"]
    dataset = torch.utils.data.TensorDataset(
        torch.from_numpy(np.repeat(volumes[0], steps + 2, axis=0)).to(device),
        torch.from_numpy(np.repeat(targets[0], steps + 2, axis=0)).to(device),
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    module = VolumeRegressor(
        torch_net(width, volume, options),
        RegressionLoss(),
        partial(KerasAdam, **adam_options(options)),
        memory_format=options["memory_format"],
        compile=options["compile"],
        tf32=options["tf32"],
    )
    meter = WallClock(skip_batches=2, device=options["device"])
    trainer = L.Trainer(
        accelerator="gpu" if options["device"] == "cuda" else "cpu",
        devices=1,
        precision=options["precision"],
        benchmark=options["cudnn_benchmark"],
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[meter],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=loader)
    return meter.samples_per_second


class WallClock(L.Callback):
    """Wall time from the start of batch ``skip_batches`` to the end of the last batch.

    Everything Lightning does between batches (hooks, logging, data fetching) is inside the
    span, so the result compares fairly with the bare loop's wall time.
    """

    def __init__(self, skip_batches: int, device: str = "cpu") -> None:
        self.skip_batches = skip_batches
        self.device = device
        self.start = self.end = 0.0
        self.samples = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.skip_batches:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.skip_batches:
            self.samples += len(batch[0])
        if batch_idx == trainer.num_training_batches - 1:
            # On a GPU the last batch's kernels may still run: wait for them once, at the end.
            synchronize(self.device)
            self.end = time.perf_counter()

    @property
    def samples_per_second(self) -> float:
        return self.samples / (self.end - self.start)


KERAS_SCRIPT = """
import json, sys, time
import numpy as np
import keras
width, batch_size, volume, steps, channels_last, precision, jit_compile = json.loads(sys.argv[1])
if precision == "bf16-mixed":
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
data_format = "channels_last" if channels_last else "channels_first"
shape = (volume, volume, volume, 1) if channels_last else (1, volume, volume, volume)
axis = -1 if channels_last else 1
inputs = keras.Input(shape)
x = inputs
widths = [width, width, 2 * width]
for index, w in enumerate(widths):
    x = keras.layers.Conv3D(w, 5, activation="relu", padding="same", data_format=data_format)(x)
    x = keras.layers.BatchNormalization(axis=axis)(x)
    x = keras.layers.Dropout(0.25)(x)
    if index < 2:
        x = keras.layers.Add()([x, keras.layers.Conv3D(w, 1, data_format=data_format)(inputs)])
x = keras.layers.Flatten()(x)
x = keras.layers.Dense(64)(x)
x = keras.layers.Dropout(0.25)(x)
x = keras.layers.Dense(32)(x)
outputs = keras.layers.Dense(1)(x)
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(), loss="mae", jit_compile=jit_compile)
rng = np.random.default_rng(0)
xs = rng.random(((steps + 2) * batch_size, *shape), dtype=np.float32)
ys = rng.random(((steps + 2) * batch_size, 1), dtype=np.float32)


class WallClock(keras.callbacks.Callback):
    # Same span as the Lightning engine: from the start of batch 2 to the end of the last.
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 2:
            self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch == steps + 1:
            self.ended = time.perf_counter()


clock = WallClock()
model.fit(xs, ys, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
print(json.dumps(steps * batch_size / (clock.ended - clock.started)))
"""


def run_keras(
    width: int,
    batch_size: int,
    volume: int,
    steps: int,
    channels_last: bool,
    keep_memory: bool,
    precision: str,
    jit_compile: bool | str = "auto",
) -> float:
    """Samples/s of the Keras model on TensorFlow, in a fresh subprocess.

    ``precision="bf16-mixed"`` runs it under Keras's ``mixed_bfloat16`` policy.
    ``jit_compile`` goes to ``model.compile``: Keras's default "auto" turns XLA off on a
    machine without GPUs, True turns it on.
    """
    environment = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if keep_memory:
        # glibc reads the same thresholds that keep_freed_memory sets from the environment.
        from volreg.allocator import KEEP_BYTES

        environment["MALLOC_MMAP_THRESHOLD_"] = str(KEEP_BYTES)
        environment["MALLOC_TRIM_THRESHOLD_"] = str(KEEP_BYTES)
    arguments = json.dumps(
        [width, batch_size, volume, steps, channels_last, precision, jit_compile]
    )
    result = subprocess.run(
        [sys.executable, "-c", KERAS_SCRIPT, arguments],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the TF-Keras run failed:\n{result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def tensorflow_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("tensorflow") is not None
    except ImportError:
        return False


ENGINES = {
    "volreg": "volreg (Lightning)",
    "bare": "bare PyTorch loop",
    "keras-cl": "TF-Keras channels_last",
    "keras-cf": "TF-Keras channels_first",
}


def torch_options(args) -> dict:
    return {
        "device": args.device,
        "precision": args.precision,
        "cudnn_benchmark": args.cudnn_benchmark,
        "tf32": args.tf32,
        "memory_format": args.memory_format,
        "adam": args.adam,
        "dropout_masks": args.dropout_masks,
        "conv_algorithm": args.conv_algorithm,
        "compile": args.compile,
    }


def engines(args) -> dict:
    """Map the display name of each chosen engine to its run function."""
    options = torch_options(args)
    keras = partial(
        run_keras,
        keep_memory=args.keep_freed_memory,
        precision=args.precision,
        jit_compile=True if args.keras_xla else "auto",
    )
    runs = {
        "volreg": partial(run_lightning, options=options),
        "bare": partial(run_bare_loop, options=options),
        "keras-cl": partial(keras, channels_last=True),
        "keras-cf": partial(keras, channels_last=False),
    }
    return {ENGINES[key]: runs[key] for key in args.engines}


def check_arguments(parser: argparse.ArgumentParser, args) -> None:
    keras = [key for key in args.engines if key.startswith("keras")]
    if keras and not tensorflow_available():
        parser.error(
            f"engines {keras} need TensorFlow, which is not installed: "
            'pip install -e ".[bench]", or leave them out of --engines'
        )
    if keras and args.device != "cpu":
        parser.error(f"engines {keras} run on the CPU only: leave them out with --device cuda")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda needs a CUDA build of torch and a visible GPU")
    if args.peak_tflops is not None and not 0 < args.peak_tflops < math.inf:
        parser.error(f"--peak-tflops must be a positive number, got {args.peak_tflops}")
    # Check every size up front, so that no bad value ends a long run after some table cells.
    for flag, values in (
        ("--widths", args.widths),
        ("--batch-sizes", args.batch_sizes),
        ("--volume", [args.volume]),
        ("--steps", [args.steps]),
        ("--repeats", [args.repeats]),
    ):
        bad = [value for value in values if value < 1]
        if bad:
            parser.error(f"{flag} must be at least 1, got {bad}")
    if args.volume == 1 and min(args.batch_sizes) == 1:
        parser.error(
            "--batch-sizes 1 with --volume 1 gives BatchNorm one value per channel: "
            "raise either of them"
        )


def machine(device: str = "cpu") -> str:
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if device == "cuda":
        model = f"{torch.cuda.get_device_name()} (host: {model})"
    return (
        f"{model}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}"
    )


def add_switch(parser: argparse.ArgumentParser, flag: str, default: bool, help: str) -> None:
    """Add ``flag`` and its ``--no-`` form to ``parser``."""
    parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[16, 64],
        help="width of the first two conv blocks (the third is twice as wide)",
    )
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[16, 64], help="samples per training step"
    )
    parser.add_argument("--volume", type=int, default=16, help="edge of the cubic volumes")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds per setting")
    parser.add_argument(
        "--memory-format",
        default="contiguous",
        choices=["contiguous", "channels_last_3d"],
        help="layout of the PyTorch engines' weights and inputs (model.memory_format)",
    )
    parser.add_argument(
        "--adam",
        default="fused",
        choices=["loop", "foreach", "fused"],
        help="KerasAdam's update: a loop over tensors, multi-tensor kernels or the fused kernel",
    )
    parser.add_argument(
        "--dropout-masks",
        default="packed",
        choices=["packed", "bernoulli"],
        help="how element dropout draws its masks (model.net.dropout_masks)",
    )
    parser.add_argument(
        "--conv-algorithm",
        default="auto",
        choices=["auto", "direct", "fourier"],
        help="how the conv blocks compute (model.net.conv_algorithm)",
    )
    add_switch(parser, "--compile", False, "torch.compile the network (model.compile)")
    add_switch(
        parser,
        "--keep-freed-memory",
        True,
        "keep freed memory in every engine's process (the keep_freed_memory setting)",
    )
    parser.add_argument(
        "--precision",
        default="32-true",
        choices=["32-true", "bf16-mixed"],
        help="Lightning's trainer.precision; bf16-mixed is autocast in the bare loop and "
        "Keras's mixed_bfloat16 policy",
    )
    parser.add_argument(
        "--keras-xla",
        action="store_true",
        help="compile the Keras model with XLA (jit_compile=True); by default Keras leaves XLA "
        "off on a machine without GPUs",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where the PyTorch engines train",
    )
    add_switch(
        parser,
        "--tf32",
        False,
        "let float32 convolutions and matrix products use TF32 on NVIDIA GPUs "
        "(model.tf32; keras_faithful keeps it off)",
    )
    add_switch(
        parser,
        "--cudnn-benchmark",
        False,
        "let cuDNN time its algorithms for each shape (trainer.benchmark)",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=list(ENGINES),
        default=None,
        help="engines to run (default: volreg, bare and, on a CPU with TensorFlow installed, "
        "keras-cl; keras-cf, the Keras script's layout, is slow and runs only when named)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak TFLOP/s at the chosen precision, to report model FLOP "
        "utilisation (for example 989 for an H100 or H200 in bf16, dense)",
    )
    args = parser.parse_args()
    if args.engines is None:
        with_keras = args.device == "cpu" and tensorflow_available()
        args.engines = ["volreg", "bare", "keras-cl"] if with_keras else ["volreg", "bare"]
    check_arguments(parser, args)
    # Lightning's start-up notes (accelerators found, tips) would bury the result lines.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.keep_freed_memory:
        from volreg.allocator import keep_freed_memory

        keep_freed_memory()
    from volreg.tf32 import set_tf32

    set_tf32(args.tf32)  # the bare loop's setting; the Lightning engine sets it in setup()

    print(f"machine: {machine(args.device)}")
    print(f"command: python {' '.join(sys.argv)}")
    rows = []
    for width in args.widths:
        flops = flops_per_sample(width, args.volume, torch_options(args))
        print(f"width {width}: {flops / 1e9:.2f} GFLOP per sample and training step")
        for batch_size in args.batch_sizes:
            samples = {name: [] for name in engines(args)}
            for round_index in range(args.repeats):
                # Each round starts with the next engine, so no engine always runs first.
                order = list(engines(args).items())
                shift = round_index % len(order)
                for name, run in order[shift:] + order[:shift]:
                    samples[name].append(run(width, batch_size, args.volume, args.steps))
            for name, values in samples.items():
                median = statistics.median(values)
                rows.append((width, batch_size, name, median, median * flops / 1e12, values))
                print(
                    f"width {width:3d}  batch {batch_size:3d}  {name:26s} "
                    f"{median:8.1f} samples/s  (runs: "
                    f"{', '.join(f'{value:.1f}' for value in values)})",
                    flush=True,
                )

    utilisation = args.peak_tflops is not None
    print(
        "\n| width | batch | engine | samples/s (median) | TFLOP/s |"
        + (" MFU |" if utilisation else "")
        + " runs |"
    )
    print("|---:|---:|---|---:|---:|" + ("---:|" if utilisation else "") + "---|")
    for width, batch_size, name, median, tflops, values in rows:
        runs = ", ".join(f"{value:.1f}" for value in values)
        mfu = f" {100 * tflops / args.peak_tflops:.3g}% |" if utilisation else ""
        print(f"| {width} | {batch_size} | {name} | {median:.1f} | {tflops:.3f} |{mfu} {runs} |")


if __name__ == "__main__":
    main()
