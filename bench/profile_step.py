"""Profile one training step of the residual CNN by operator with torch.profiler.

    python bench/profile_step.py --width 16 --batch-size 16 --steps 10

Prints the operators with the largest self CPU time and a summary by phase: the forward
pass, the backward pass and the optimizer step.
"""

import argparse
import time

import torch
from throughput import adam_options  # bench/ is on sys.path when run as a script
from torch.profiler import ProfilerActivity, profile, record_function

from volreg.allocator import keep_freed_memory
from volreg.losses import RegressionLoss
from volreg.models import ResidualCNN3d
from volreg.module import MEMORY_FORMATS
from volreg.optim import KerasAdam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--volume", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--memory-format", default="contiguous", choices=list(MEMORY_FORMATS))
    parser.add_argument("--adam", default="fused", choices=["loop", "foreach", "fused"])
    parser.add_argument("--dropout-masks", default="packed", choices=["packed", "bernoulli"])
    parser.add_argument("--conv-algorithm", default="auto", choices=["auto", "direct", "fourier"])
    parser.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    if args.keep_freed_memory:
        keep_freed_memory()

    memory_format = MEMORY_FORMATS[args.memory_format]
    net = ResidualCNN3d(
        volume_shape=(args.volume,) * 3,
        widths=[args.width, args.width, 2 * args.width],
        dropout_masks=args.dropout_masks,
        conv_algorithm=args.conv_algorithm,
    )
    net = net.to(memory_format=memory_format).train()
    optimizer = KerasAdam(net.parameters(), **adam_options(vars(args)))
    loss_fn = RegressionLoss()
    volume = torch.rand(args.batch_size, 1, *(args.volume,) * 3).contiguous(
        memory_format=memory_format
    )
    target = torch.rand(args.batch_size, 1)

    def step() -> None:
        with record_function("phase: forward"):
            loss = loss_fn(net(volume), target)
        optimizer.zero_grad()
        with record_function("phase: backward"):
            loss.backward()
        with record_function("phase: optimizer"):
            optimizer.step()

    for _ in range(3):
        step()
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(args.steps):
            step()
    seconds = time.perf_counter() - started

    print(
        f"{args.steps} steps, {args.steps * args.batch_size / seconds:.1f} samples/s "
        "under the profiler"
    )
    events = profiler.key_averages()
    phases = [event for event in events if event.key.startswith("phase: ")]
    total = sum(event.cpu_time_total for event in phases)
    for event in sorted(phases, key=lambda event: -event.cpu_time_total):
        print(
            f"{event.key:20s} {event.cpu_time_total / 1e3 / args.steps:8.1f} ms/step "
            f"{100 * event.cpu_time_total / total:5.1f}%"
        )
    print(events.table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
