"""glibc malloc settings (``mmga_common.allocator``): the full-batch heap that keeps freed memory for reuse, and
what happens off glibc."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from mmga_common import allocator
from mmga_common.allocator import limit_allocator_caching, retained_heap

REPO = Path(__file__).resolve().parents[2]
on_glibc = pytest.mark.skipif(allocator._libc() is None, reason="glibc's mallopt")

# In a fresh process (the suite's own allocations would decide where a block lands): minor page faults of
# allocating, filling and freeing a 64 MiB tensor in turn, above glibc's largest dynamic mmap threshold (32 MiB),
# with glibc's defaults, with retained_heap(False) and within retained_heap(); then the resident set of six such
# blocks freed within the block, and after it.
_SCRIPT = """
import json, resource
from pathlib import Path
import torch
from mmga_common.allocator import retained_heap

def faults(blocks):
    out = []
    for _ in range(blocks):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.ones(16 << 20)
        del block
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return out

def resident_mib():
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024

report = {"default": faults(3)}
with retained_heap(False) as applied:
    report["off"], report["off_applied"] = faults(3), applied
with retained_heap() as applied:
    report["inside"], report["applied"] = faults(30), applied
    with retained_heap() as nested:
        report["nested_applied"] = nested
    report["after_nested"] = faults(3)  # still within the outer block
    base = resident_mib()
    blocks = [torch.ones(16 << 20) for _ in range(6)]
    del blocks
    report["kept_mib"] = resident_mib() - base
report["returned_mib"] = resident_mib() - base
print(json.dumps(report))
"""


@on_glibc
def test_retained_heap_reuses_freed_blocks_and_returns_them_on_exit():
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for name in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], check=True, capture_output=True, text=True, env=env, cwd=REPO
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    pages = (64 << 20) // resource.getpagesize()
    # glibc's defaults, and the block switched off: every block is mapped afresh and faults in (and zeroes)
    # all its pages.
    assert min(report["default"]) > pages // 2 and min(report["off"]) > pages // 2, report
    assert report["off_applied"] is False and report["applied"] is True
    # Within the block the heap grows for the first few blocks (a freed block is a little short of the next
    # aligned request until neighbours merge; 4 to 8 of them in repeated runs), then serves every block from
    # memory it kept.
    assert max(report["inside"][-10:]) < pages // 20, report["inside"]
    # A nested block leaves the outer one's setting in place when it ends.
    assert report["nested_applied"] is True and max(report["after_nested"]) < pages // 20, report
    # Freed memory stays resident within the block and is returned to the system on exit.
    assert report["kept_mib"] > 200 and report["returned_mib"] < report["kept_mib"] - 200, report


def test_off_glibc_nothing_is_applied(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator._libc() is None
    assert limit_allocator_caching() is False
    with retained_heap() as applied:
        assert applied is False
