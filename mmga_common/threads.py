"""``torch_threads``: torch's intra-op thread count for one block, restored afterwards (also on errors)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, then restore the previous number; ``None`` leaves
    torch's setting as it is (a stage's ``trainer.num_threads: null``)."""
    import torch  # here, so that importing mmga_common stays light for the CLIs' --help

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
