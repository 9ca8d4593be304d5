"""``gated_spmm``: a sparse-dense product whose edge values are learned, with a parallel value gradient;
``sampled_dot``: per-edge dot products of two node tensors; ``pair_scores``: the pair-aware gate's scores,
``target[u] + source[v] + sum_k scale_k unit[u, k] unit[v, k]``, with one product in its backward where the
pattern is symmetric (``mark_symmetric``) instead of two.

On CPU in float32/float64 every product runs on PyTorch's own CSR kernels over ``adj_t``'s index arrays (no
copy of them): the SpMM ``torch.sparse_csr_tensor @ dense`` (forward, and the gradient with respect to the
dense input over the transpose, read from ``adj_t``'s cached CSC permutation as torch-sparse's own backward
does), and the SDDMM ``torch.sparse.sampled_addmm`` for the gradient with respect to the edge values
(``grad_value[e] = <grad_out[u], mat[v]>``). Both are parallel; on the 2-core machine the CSR SpMM took 0.6x
the CPU time of torch-sparse's ``spmm_sum`` at width 64 and 0.7x at width 26 (60,000 nodes, 1.2 million
entries; docs/performance.md, issue 23), with equal results. Elsewhere (CUDA, half precision) torch-sparse's
SpMM is used and autograd differentiates it.
"""

from __future__ import annotations

import warnings
import weakref

import torch
from torch import Tensor
from torch_sparse import SparseTensor
from torch_sparse.storage import SparseStorage

_SDDMM_DTYPES = (torch.float32, torch.float64)


def _csr(rowptr: Tensor, col: Tensor, value: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(rowptr, col, value, size, check_invariants=False)


def _product(sparse: Tensor, mat: Tensor) -> Tensor:
    """``sparse @ mat`` written into a fresh, uninitialised output: ``addmm`` with ``beta=0`` ignores its input
    (NaN included), whereas ``sparse @ mat`` first zero-fills the output and copies it once more; at 60,000 x 64
    that is 0.65x the time of ``@`` for the same result (docs/performance.md, issue 23)."""
    out = mat.new_empty(sparse.shape[0], mat.shape[1])
    return torch.addmm(out, sparse, mat, beta=0.0, out=out)


# Each adjacency's index arrays as the CSR kernels take them, kept while the adjacency lives (a step's layers,
# their backward and the gate all multiply by the same one): int32 where the sizes allow it, since the kernels
# convert int64 indices to int32 on every call (about 1 ms per product at 1.2 million entries), and the
# transpose's column index (its CSC row index), a gather of 1.2 million entries per transposed product otherwise.
_INDEX: weakref.WeakKeyDictionary[SparseStorage, dict[str, tuple[Tensor, Tensor]]] = (
    weakref.WeakKeyDictionary()
)
_INT32_LIMIT = torch.iinfo(torch.int32).max
# Adjacencies whose pattern is symmetric and whose ``csr2csc`` maps each entry to its reverse (every adjacency of
# :class:`GraphStructure`, held-out edges removed or not): their transpose has the same index arrays, and a
# symmetric bilinear score needs one product in its backward (:func:`pair_scores`). Unmarked ones take the
# general path, with the same results.
_SYMMETRIC: weakref.WeakSet[SparseStorage] = weakref.WeakSet()


def mark_symmetric(adj_t: SparseTensor) -> SparseTensor:
    """Declare ``adj_t``'s pattern symmetric, with ``csr2csc`` (and ``csc2csr``) mapping each entry to the
    position of its reverse; returns ``adj_t``. Only for adjacencies known to be so by construction (no check:
    a wrong mark gives wrong gradients). The mark lives with ``adj_t``'s storage, not with copies of it."""
    _SYMMETRIC.add(adj_t.storage)
    return adj_t


def is_symmetric(adj_t: SparseTensor) -> bool:
    return adj_t.storage in _SYMMETRIC


def _index(storage: SparseStorage, order: str) -> tuple[Tensor, Tensor]:
    """``storage``'s CSR index (``order="csr"``: ``(rowptr, col)``) or its transpose's (``"csc"``: ``(colptr,
    row in CSC order)``), in the kernels' index type, built once per adjacency."""
    cached = _INDEX.setdefault(storage, {})
    if order == "csc" and storage in _SYMMETRIC:  # the transpose's index arrays are the adjacency's own
        order = "csr"
    if order not in cached:
        fits = storage.col().numel() <= _INT32_LIMIT and max(storage.sparse_sizes()) <= _INT32_LIMIT
        dtype = torch.int32 if fits else torch.long
        if order == "csr":
            pointers, index = storage.rowptr(), storage.col()
        else:
            pointers, index = storage.colptr(), storage.row().index_select(0, storage.csr2csc())
        cached[order] = (pointers.to(dtype), index.to(dtype))
    return cached[order]


def _spmm(adj_t: SparseTensor, value: Tensor, mat: Tensor) -> Tensor:
    """``[N, C]``: ``out[u] = sum_v value[e(u, v)] mat[v]`` (PyTorch's CSR SpMM on ``adj_t``'s CSR arrays)."""
    rowptr, col = _index(adj_t.storage, "csr")
    return _product(_csr(rowptr, col, value.contiguous(), adj_t.sparse_sizes()), mat)


def _spmm_transposed(adj_t: SparseTensor, value: Tensor, mat: Tensor) -> Tensor:
    """``[M, C]``: ``out[v] = sum_u value[e(u, v)] mat[u]``, the product with ``adj_t``'s transpose (CSC order
    from torch-sparse's cached ``csr2csc`` permutation and ``colptr``)."""
    storage = adj_t.storage
    num_rows, num_cols = storage.sparse_sizes()
    colptr, row = _index(storage, "csc")
    transposed = _csr(colptr, row, value.index_select(0, storage.csr2csc()), (num_cols, num_rows))
    return _product(transposed, mat)


def _sddmm(adj_t: SparseTensor, left: Tensor, right: Tensor) -> Tensor:
    """``[nnz]``: ``<left[row[e]], right[col[e]]>`` for every entry ``e`` of ``adj_t`` (CSR order)."""
    rowptr, col = _index(adj_t.storage, "csr")
    pattern = _csr(rowptr, col, left.new_zeros(col.numel()), adj_t.sparse_sizes())
    return torch.sparse.sampled_addmm(pattern, left, right.t(), beta=0.0).values()


class _GatedSpmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value: Tensor, mat: Tensor, adj_t: SparseTensor) -> Tensor:
        ctx.adj_t = adj_t
        ctx.save_for_backward(value, mat)
        return _spmm(adj_t, value, mat)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        value, mat = (t.detach() for t in ctx.saved_tensors)
        grad_out = grad_out.contiguous()
        grad_value = grad_mat = None
        if ctx.needs_input_grad[0]:
            grad_value = _sddmm(ctx.adj_t, grad_out, mat.contiguous())
        if ctx.needs_input_grad[1]:
            grad_mat = _spmm_transposed(ctx.adj_t, value, grad_out)
        return grad_value, grad_mat, None


class _SampledDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, left: Tensor, right: Tensor, adj_t: SparseTensor) -> Tensor:
        ctx.adj_t = adj_t
        ctx.save_for_backward(left, right)
        return _sddmm(adj_t, left, right)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        left, right = (t.detach() for t in ctx.saved_tensors)
        grad_out = grad_out.contiguous()
        grad_left = grad_right = None
        if ctx.needs_input_grad[0]:  # d/d left[u] = sum_v grad[e(u, v)] right[v]: an SpMM
            grad_left = _spmm(ctx.adj_t, grad_out, right)
        if ctx.needs_input_grad[1]:  # d/d right[v] = sum_u grad[e(u, v)] left[u]: an SpMM over the transpose
            grad_right = _spmm_transposed(ctx.adj_t, grad_out, left)
        return grad_left, grad_right, None


def _pair_operands(target: Tensor, source: Tensor, unit: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """``[target, 1, scale * unit]`` and ``[1, source, unit]`` (``[N, K + 2]`` each): their dot product on an entry
    ``(u, v)`` is the pair score of :func:`pair_scores`."""
    ones = unit.new_ones(unit.shape[0], 1)
    left = torch.cat([target.unsqueeze(1), ones, unit * scale], dim=1)
    return left, torch.cat([ones, source.unsqueeze(1), unit], dim=1)


class _SymmetricPairScores(torch.autograd.Function):
    """``e = target[u] + source[v] + sum_k scale_k unit[u, k] unit[v, k]`` on a symmetric pattern: the forward is
    one SDDMM of ``[target, 1, scale * unit]`` and ``[1, source, unit]``; in the backward the gradients of both
    ends of the bilinear term are one SpMM with ``grad + grad[reverse]`` (where the general path needs a product
    and a transposed product, each at the SDDMM's width), and ``target``'s and ``source``'s are the row sums of
    ``grad`` and of its reverse."""

    @staticmethod
    def forward(
        ctx, target: Tensor, source: Tensor, unit: Tensor, scale: Tensor, adj_t: SparseTensor
    ) -> Tensor:
        ctx.adj_t = adj_t
        ctx.save_for_backward(unit, scale)
        return _sddmm(adj_t, *_pair_operands(target, source, unit, scale))

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        unit, scale = (t.detach() for t in ctx.saved_tensors)
        adj_t = ctx.adj_t
        grad_out = grad_out.contiguous()
        reverse = grad_out.index_select(0, adj_t.storage.csr2csc())
        ones = grad_out.new_ones(adj_t.size(1), 1)
        # Row sums as products with a column of ones: PyTorch's CSR kernel is parallel (torch-scatter's
        # segment_csr took 2.5-4.8x its time here).
        grad_target = _spmm(adj_t, grad_out, ones).view(-1) if ctx.needs_input_grad[0] else None
        grad_source = _spmm(adj_t, reverse, ones).view(-1) if ctx.needs_input_grad[1] else None
        grad_unit = grad_scale = None
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            # d/d unit[w] = scale * (sum_v grad[e(w, v)] unit[v] + sum_u grad[e(u, w)] unit[u]), and the second
            # sum runs over w's own row through the reverse entries: one product with grad + grad[reverse].
            product = _spmm(adj_t, grad_out + reverse, unit)
            if ctx.needs_input_grad[2]:
                grad_unit = product * scale
            if ctx.needs_input_grad[3]:  # sum_e grad[e] unit[u] unit[v], each entry counted from both ends
                grad_scale = 0.5 * (product * unit).sum(0)
        return grad_target, grad_source, grad_unit, grad_scale, None


def pair_scores(adj_t: SparseTensor, target: Tensor, source: Tensor, unit: Tensor, scale: Tensor) -> Tensor:
    """``out[e] = target[u] + source[v] + sum_k scale[k] unit[u, k] unit[v, k]`` for every entry ``e = (u, v)``
    of ``adj_t`` (CSR order): the cosine gate's score (:class:`MGate`) of one head.

    On CPU in float32/float64 over a symmetric pattern (:func:`mark_symmetric`) its backward takes one SpMM for
    both ends of the bilinear term instead of two; otherwise it is :func:`sampled_dot` of ``[target, 1, scale *
    unit]`` and ``[1, source, unit]``.

    Args:
        adj_t: ``SparseTensor [N, N]`` (row = target); its stored values are ignored.
        target, source: ``[N]``. unit: ``[N, K]``. scale: ``[K]``.

    Returns:
        ``[nnz]``.
    """
    fast = (
        unit.device.type == "cpu"
        and unit.dtype in _SDDMM_DTYPES
        and all(t.dtype == unit.dtype for t in (target, source, scale))
        and is_symmetric(adj_t)
    )
    if fast and torch.is_grad_enabled() and any(t.requires_grad for t in (target, source, unit, scale)):
        return _SymmetricPairScores.apply(target, source, unit.contiguous(), scale, adj_t)
    return sampled_dot(adj_t, *_pair_operands(target, source, unit, scale))


def sampled_dot(adj_t: SparseTensor, left: Tensor, right: Tensor) -> Tensor:
    """``out[e] = <left[u], right[v]>`` for every entry ``e = (u, v)`` of ``adj_t`` (an SDDMM), CSR order.

    On CPU the forward is ``torch.sparse.sampled_addmm`` (parallel) and the backward two torch-sparse SpMMs
    (``adj_t`` and its cached transpose): no per-edge ``[nnz, K]`` tensor is materialised and no scatter is
    needed. Elsewhere it gathers both ends and lets autograd differentiate.

    Args:
        adj_t: ``SparseTensor [N, M]`` (row = target); its stored values are ignored.
        left: ``[N, K]``. right: ``[M, K]``.

    Returns:
        ``[nnz]``.
    """
    fast = (
        left.device.type == "cpu"
        and left.dtype in _SDDMM_DTYPES
        and right.dtype == left.dtype
        and left.shape[1] > 0
    )
    if not fast:
        row, col, _ = adj_t.coo()
        return (left.index_select(0, row) * right.index_select(0, col)).sum(-1)
    left, right = left.contiguous(), right.contiguous()
    if torch.is_grad_enabled() and (left.requires_grad or right.requires_grad):
        return _SampledDot.apply(left, right, adj_t)
    return _sddmm(adj_t, left, right)


def gated_spmm(adj_t: SparseTensor, value: Tensor, mat: Tensor) -> Tensor:
    """``out[u] = sum_v value[e(u, v)] * mat[v]`` over the entries of ``adj_t``.

    Args:
        adj_t: ``SparseTensor [N, M]`` (row = target); its stored values are ignored.
        value: ``[nnz]`` edge values in ``adj_t``'s CSR order (may require grad).
        mat: ``[M, C]`` dense input (may require grad).

    Returns:
        ``[N, C]``.
    """
    fast = value.device.type == "cpu" and value.dtype in _SDDMM_DTYPES and mat.dtype == value.dtype
    if not fast:
        return adj_t.set_value(value, layout="csr").matmul(mat)
    if torch.is_grad_enabled() and (value.requires_grad or mat.requires_grad):
        return _GatedSpmm.apply(value, mat, adj_t)
    return _spmm(adj_t, value, mat.contiguous())
