"""keep_freed_memory: freed large blocks stay resident instead of going back to the OS."""

import platform
import subprocess
import sys

import pytest

from train_config import compose_train
from volreg.train import run

# Allocates and frees 256 MiB in 64 MiB blocks, then prints the resident set size (MiB)
# that is still there. Pages that malloc unmapped on free no longer count.
PROBE = """
import ctypes, os, sys
from volreg.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
blocks = []
for _ in range(4):
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)
    blocks.append(block)
for block in blocks:
    libc.free(block)
pages = int(open("/proc/self/statm").read().split()[1])
print(applied, pages * os.sysconf("SC_PAGE_SIZE") >> 20)
"""

linux_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt and /proc/self/statm are glibc and Linux features",
)


def resident_after_free(mode: str) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    applied, resident = result.stdout.split()
    return applied, int(resident)


@linux_only
def test_freed_blocks_stay_resident():
    applied, resident_kept_mib = resident_after_free("keep")
    _, resident_default_mib = resident_after_free("default")

    assert applied == "True"
    assert resident_kept_mib >= resident_default_mib + 200


def test_setting_composes_and_defaults_on(tmp_path):
    cfg = compose_train(tmp_path)
    off = compose_train(tmp_path, ["keep_freed_memory=false"])

    assert cfg.keep_freed_memory is True
    assert off.keep_freed_memory is False


def test_non_boolean_setting_rejected(tmp_path):
    cfg = compose_train(tmp_path, ["keep_freed_memory=maybe"])

    with pytest.raises(
        ValueError, match="invalid keep_freed_memory='maybe': expected true or false"
    ):
        run(cfg)
