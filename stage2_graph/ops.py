"""``gated_spmm``: a sparse-dense product whose edge values are learned, with a parallel value gradient;
``sampled_dot``: per-edge dot products of two node tensors (the pair-aware gate's scores).

The forward product and the gradient with respect to the dense input are torch-sparse's CSR SpMM (the
second over the transpose, read from ``adj_t``'s cached CSC permutation, as torch-sparse's own backward
does). The gradient with respect to the edge values is a sampled dense-dense product (SDDMM,
``grad_value[e] = <grad_out[u], mat[v]>``): torch-sparse's CPU kernel for it runs on one thread, so on CPU
it is delegated to ``torch.sparse.sampled_addmm``, which is parallel. Elsewhere (CUDA, half precision)
the plain torch-sparse path is used.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch_sparse import SparseStorage, SparseTensor

_SDDMM_DTYPES = (torch.float32, torch.float64)


def _transpose(adj_t: SparseTensor, value: Tensor) -> SparseTensor:
    storage = adj_t.storage
    csr2csc = storage.csr2csc()
    num_rows, num_cols = storage.sparse_sizes()
    transposed = SparseStorage(
        rowptr=storage.colptr(),
        col=storage.row().index_select(0, csr2csc),
        value=value.index_select(0, csr2csc),
        sparse_sizes=(num_cols, num_rows),
        rowcount=storage.colcount(),
        is_sorted=True,
        trust_data=True,
    )
    return SparseTensor.from_storage(transposed)


def _sddmm(adj_t: SparseTensor, left: Tensor, right: Tensor) -> Tensor:
    """``[nnz]``: ``<left[row[e]], right[col[e]]>`` for every entry ``e`` of ``adj_t`` (CSR order)."""
    rowptr, col, _ = adj_t.csr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        pattern = torch.sparse_csr_tensor(
            rowptr, col, left.new_zeros(col.numel()), adj_t.sparse_sizes(), check_invariants=False
        )
        return torch.sparse.sampled_addmm(pattern, left, right.t(), beta=0.0).values()


class _GatedSpmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value: Tensor, mat: Tensor, adj_t: SparseTensor) -> Tensor:
        ctx.adj_t = adj_t
        ctx.save_for_backward(value, mat)
        return adj_t.set_value(value, layout="csr").matmul(mat)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        value, mat = (t.detach() for t in ctx.saved_tensors)  # see _SampledDot.backward
        grad_out = grad_out.contiguous()
        grad_value = grad_mat = None
        if ctx.needs_input_grad[0]:
            grad_value = _sddmm(ctx.adj_t, grad_out, mat.contiguous())
        if ctx.needs_input_grad[1]:
            grad_mat = _transpose(ctx.adj_t, value).matmul(grad_out)
        return grad_value, grad_mat, None


class _SampledDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, left: Tensor, right: Tensor, adj_t: SparseTensor) -> Tensor:
        ctx.adj_t = adj_t
        ctx.save_for_backward(left, right)
        return _sddmm(adj_t, left, right)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        # Detached: torch-sparse's matmul would otherwise prepare its own backward for a right-hand side
        # that requires grad, which on the transpose (no cached CSC permutation) means a sort per call.
        left, right = (t.detach() for t in ctx.saved_tensors)
        grad_out = grad_out.contiguous()
        grad_left = grad_right = None
        if ctx.needs_input_grad[0]:  # d/d left[u] = sum_v grad[e(u, v)] right[v]: an SpMM
            grad_left = ctx.adj_t.set_value(grad_out, layout="csr").matmul(right)
        if ctx.needs_input_grad[1]:  # d/d right[v] = sum_u grad[e(u, v)] left[u]: an SpMM over the transpose
            grad_right = _transpose(ctx.adj_t, grad_out).matmul(left)
        return grad_left, grad_right, None


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
    use_sddmm = (
        value.requires_grad
        and value.device.type == "cpu"
        and value.dtype in _SDDMM_DTYPES
        and mat.dtype == value.dtype
        and torch.is_grad_enabled()
    )
    if not use_sddmm:
        return adj_t.set_value(value, layout="csr").matmul(mat)
    return _GatedSpmm.apply(value, mat, adj_t)
