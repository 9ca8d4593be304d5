"""A memory check before stage 2 allocates: a graph too large for the machine is refused with one clear message
instead of ending in an out-of-memory crash (or the kernel's OOM killer) part-way through training.

The estimate is a *lower bound* of what full-batch training keeps alive at its peak, so the check only refuses
what cannot fit: the node inputs, three ``[N, hidden]`` float32 activations per layer (pre-activation,
activation and output, kept for the backward pass), two float32 gate values per directed edge, head and layer
(the logit and the normalized weight), the int64 edge index (both directions) and the weights with their
gradients and two AdamW moments. Real use is higher (temporaries, the allocator's slack). With
``trainer.batching=neighbor`` or ``subgraph`` only the inputs and the edge index are counted (a mini-batch is
small).

Set ``MMGA_SKIP_MEMORY_CHECK=1`` to skip the check (e.g. when swap or a memory limit the check cannot see
makes it wrong).
"""

from __future__ import annotations

import os
from pathlib import Path

SKIP_ENV = "MMGA_SKIP_MEMORY_CHECK"
FLOAT_BYTES, INDEX_BYTES = 4, 8


def estimate_training_bytes(
    num_nodes: int,
    num_edges: int,
    input_dim: int,
    hidden_dim: int,
    num_layers: int,
    heads: int = 1,
    full_batch: bool = True,
) -> int:
    """Lower bound, in bytes, of stage 2's peak training memory (see the module docstring).

    Args:
        num_nodes: N users. num_edges: E undirected edges (2E directed ones are propagated).
        input_dim: width of the concatenated node inputs (X, degree, image and text embeddings).
        hidden_dim, num_layers, heads: the model's sizes. full_batch: False for the mini-batch paths
            (``batching=neighbor`` or ``subgraph``).
    """
    directed = 2 * num_edges
    inputs = num_nodes * input_dim * FLOAT_BYTES
    edge_index = 2 * directed * INDEX_BYTES
    weights = (input_dim * hidden_dim + num_layers * 2 * hidden_dim * hidden_dim) * FLOAT_BYTES * 4
    total = inputs + edge_index + weights
    if full_batch:
        total += num_layers * (3 * num_nodes * hidden_dim + 2 * directed * heads) * FLOAT_BYTES
    return int(total)


def available_bytes(accelerator: str = "cpu") -> int | None:
    """Memory free for a new allocation: the CUDA device's free memory for a GPU accelerator (when torch sees
    one), else the host's available memory (psutil when installed, else ``MemAvailable`` of /proc/meminfo).
    None when it cannot be told."""
    if accelerator in ("gpu", "cuda"):
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[0])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    return _meminfo_available(Path("/proc/meminfo"))


def _meminfo_available(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _size(num: int) -> str:
    return f"{num / 2**30:.1f} GiB" if num >= 2**30 else f"{num / 2**20:.1f} MiB"


def memory_problem(needed: int, available: int | None) -> str | None:
    """The refusal message when ``needed`` exceeds ``available`` bytes (None: it fits, or it cannot be told, or
    ``MMGA_SKIP_MEMORY_CHECK`` is set)."""
    if available is None or needed <= available or os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return None
    return (
        f"stage 2 needs at least {_size(needed)} of memory for this graph and model, but only {_size(available)} "
        "is available; use smaller model.hidden_dim / model.num_layers, trainer.batching=neighbor or subgraph, "
        f"or a larger machine (set {SKIP_ENV}=1 to skip this check)"
    )
