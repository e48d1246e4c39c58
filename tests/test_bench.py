"""The throughput benchmark runs end to end and counts the FLOPs that utilisation divides.

Speed itself is measured by the script and recorded in docs/benchmarks.md, never asserted here.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_bench(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH / "throughput.py"), *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def table_rows(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_benchmark_prints_a_row_per_engine(precision):
    result = run_bench(
        "--widths", "2", "--batch-sizes", "2", "--volume", "8", "--steps", "2",
        "--repeats", "2", "--engines", "volreg", "bare", "--precision", precision,
        "--peak-tflops", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = table_rows(result.stdout)
    assert [row[2] for row in rows] == ["volreg (Lightning)", "bare PyTorch loop"]
    for width, batch, _, median, tflops, mfu, runs in rows:
        assert (width, batch) == ("2", "2")
        assert len(runs.split(", ")) == 2
        assert float(median) > 0
        assert float(tflops) > 0
        assert mfu.endswith("%")


def test_flops_cover_forward_and_backward():
    sys.path.insert(0, str(BENCH))
    try:
        from throughput import flops_per_sample
    finally:
        sys.path.remove(str(BENCH))
    width, edge, kernel = 3, 8, 5**3
    voxels = edge**3
    conv_forward = [
        2 * voxels * kernel * 1 * width,
        2 * voxels * kernel * width * width,
        2 * voxels * kernel * width * 2 * width,
    ]
    dense_forward = [2 * 2 * width * voxels * 64, 2 * 64 * 32, 2 * 32 * 1]
    # Backward: gradients of the weights and of the inputs, except for the input volume.
    backward = conv_forward[0] + 2 * sum(conv_forward[1:]) + 2 * sum(dense_forward)
    expected = sum(conv_forward) + sum(dense_forward) + backward
    # The model's arithmetic, also where the conv blocks compute in the frequency domain.
    for algorithm in ("direct", "fourier"):
        options = {"dropout_masks": "packed", "conv_algorithm": algorithm}
        assert flops_per_sample(width, edge, options) == expected


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed"
)
def test_keras_engine_without_tensorflow_says_what_to_install():
    result = run_bench("--engines", "keras-cl", "--widths", "2")
    assert result.returncode == 2
    assert "need TensorFlow" in result.stderr
    assert ".[bench]" in result.stderr


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--repeats", "0"], "--repeats must be at least 1, got [0]"),
        (["--widths", "4", "0"], "--widths must be at least 1, got [0]"),
        (["--steps", "-1"], "--steps must be at least 1, got [-1]"),
        (["--peak-tflops", "nan"], "--peak-tflops must be a positive number, got nan"),
    ],
)
def test_bad_sizes_fail_before_any_run(arguments, message):
    result = run_bench("--engines", "bare", *arguments)

    assert result.returncode == 2
    assert message in result.stderr
    assert "samples/s" not in result.stdout
