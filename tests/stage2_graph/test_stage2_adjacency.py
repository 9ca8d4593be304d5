"""GraphStructure: symmetric, merged, loop-free adjacency; transpose caches; held-out adjacency; the kernels
(SDDMM, gated SpMM, the gate's pair scores)."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from stage2_reference import random_graph
from torch_sparse import SparseStorage, SparseTensor

from stage2_graph import GraphStructure, ops
from stage2_graph.ops import gated_spmm, sampled_dot


def entries(adj_t: SparseTensor) -> set[tuple[int, int]]:
    row, col, _ = adj_t.coo()
    return set(zip(row.tolist(), col.tolist()))


def test_symmetric_merged_without_self_loops():
    edges = torch.tensor([[0, 1], [1, 0], [2, 2], [3, 1], [0, 1], [4, 3]])
    structure = GraphStructure(edges, num_nodes=6)
    adj_t, edge_id = structure.adj_t()
    assert entries(adj_t) == {(0, 1), (1, 0), (1, 3), (3, 1), (3, 4), (4, 3)}
    assert adj_t.nnz() == 6 and structure.num_edges == 3
    assert structure.edge_pairs.tolist() == [[0, 1], [1, 3], [3, 4]]
    assert structure.edge_of_input.tolist() == [0, 0, -1, 1, 0, 2]
    row, col, _ = adj_t.coo()
    pairs = structure.edge_pairs[edge_id]
    assert torch.equal(torch.minimum(row, col), pairs[:, 0]) and torch.equal(
        torch.maximum(row, col), pairs[:, 1]
    )


def test_transpose_caches_equal_torch_sparse_own():
    edges = random_graph(30, 70, num_isolated=4, seed=0)
    ours, _ = GraphStructure(edges, 30).adj_t()
    row = torch.cat([edges[:, 0], edges[:, 1]])
    col = torch.cat([edges[:, 1], edges[:, 0]])
    reference = SparseTensor(row=row, col=col, sparse_sizes=(30, 30))
    for name in ("rowptr", "col", "row", "rowcount", "colptr", "colcount", "csr2csc", "csc2csr"):
        assert torch.equal(getattr(ours.storage, name)(), getattr(reference.storage, name)()), name
    dense = torch.randn(30, 5, requires_grad=True)
    value = torch.rand(ours.nnz(), requires_grad=True)
    ours_out = ours.set_value(value, layout="csr").matmul(dense)
    reference_out = reference.set_value(value, layout="csr").matmul(dense)
    torch.testing.assert_close(ours_out, reference_out)
    weights = torch.randn_like(ours_out)
    grads = torch.autograd.grad((ours_out * weights).sum(), [dense, value])
    expected = torch.autograd.grad((reference_out * weights).sum(), [dense, value])
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_held_out_adjacency_equals_one_built_from_kept_edges():
    edges = random_graph(40, 120, num_isolated=2, seed=1)
    structure = GraphStructure(edges, 40)
    keep = torch.rand(structure.num_edges, generator=torch.Generator().manual_seed(0)) > 0.3
    adj_t, edge_id = structure.adj_t(keep)
    kept = structure.edge_pairs[keep]
    reference = SparseTensor(
        row=torch.cat([kept[:, 0], kept[:, 1]]),
        col=torch.cat([kept[:, 1], kept[:, 0]]),
        sparse_sizes=(40, 40),
    )
    for name in ("rowptr", "col", "row", "colptr", "csr2csc", "csc2csr"):
        assert torch.equal(getattr(adj_t.storage, name)(), getattr(reference.storage, name)()), name
    assert bool(keep[edge_id].all())
    held = {tuple(pair) for pair in structure.edge_pairs[~keep].tolist()}
    assert not any((u, v) in held or (v, u) in held for u, v in entries(adj_t))


def test_directed_position_points_at_both_directions():
    edges = random_graph(25, 60, num_isolated=1, seed=2)
    structure = GraphStructure(edges, 25)
    position = structure.directed_position()
    u, v = structure.edge_pairs.t()
    assert torch.equal(structure.row[position[0]], u) and torch.equal(structure.col[position[0]], v)
    assert torch.equal(structure.row[position[1]], v) and torch.equal(structure.col[position[1]], u)


def test_empty_graph():
    structure = GraphStructure(torch.zeros(0, 2, dtype=torch.long), num_nodes=4)
    adj_t, _ = structure.adj_t()
    assert adj_t.nnz() == 0 and adj_t.sizes() == [4, 4]
    assert adj_t.matmul(torch.ones(4, 3)).abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sampled_dot_matches_gathered_dot_products_and_gradients(dtype):
    edges = random_graph(30, 80, num_isolated=4, seed=2)
    adj_t, _ = GraphStructure(edges, 30).adj_t()
    torch.manual_seed(0)
    left = torch.randn(30, 5, dtype=dtype, requires_grad=True)
    right = torch.randn(30, 5, dtype=dtype, requires_grad=True)
    row, col, _ = adj_t.coo()
    expected = (left[row] * right[col]).sum(-1)
    got = sampled_dot(adj_t, left, right)
    torch.testing.assert_close(got, expected)
    weights = torch.randn_like(got)
    grads = torch.autograd.grad((got * weights).sum(), [left, right])
    expected_grads = torch.autograd.grad((expected * weights).sum(), [left, right])
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b)


def test_sampled_dot_fallback_for_other_dtypes_agrees():
    edges = random_graph(20, 40, num_isolated=0, seed=5)
    adj_t, _ = GraphStructure(edges, 20).adj_t()
    torch.manual_seed(1)
    left, right = torch.randn(20, 4), torch.randn(20, 4)
    fast = sampled_dot(adj_t, left, right)
    slow = sampled_dot(adj_t, left.bfloat16(), right.bfloat16()).float()  # gathers instead of SDDMM
    torch.testing.assert_close(slow, fast, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grads", [(True, True), (True, False), (False, True), (False, False)])
def test_gated_spmm_matches_a_dense_product_and_its_gradients(dtype, grads):
    """PyTorch's CSR kernels (forward, transpose, SDDMM) against a dense [N, N] matrix built from the entries;
    isolated nodes give empty rows and columns."""
    edges = random_graph(30, 80, num_isolated=4, seed=3)
    adj_t, _ = GraphStructure(edges, 30).adj_t()
    torch.manual_seed(2)
    value = torch.rand(adj_t.nnz(), dtype=dtype, requires_grad=grads[0])
    mat = torch.randn(30, 7, dtype=dtype, requires_grad=grads[1])
    row, col, _ = adj_t.coo()
    dense = torch.zeros(30, 30, dtype=dtype).index_put((row, col), value)
    expected = dense @ mat
    got = gated_spmm(adj_t, value, mat)
    torch.testing.assert_close(got, expected)
    inputs = [t for t in (value, mat) if t.requires_grad]
    if inputs:
        weights = torch.randn_like(got)
        for a, b in zip(
            torch.autograd.grad((got * weights).sum(), inputs),
            torch.autograd.grad((expected * weights).sum(), inputs),
        ):
            torch.testing.assert_close(a, b)
    with torch.no_grad():  # the export path
        torch.testing.assert_close(gated_spmm(adj_t, value, mat), expected.detach())
    torch.testing.assert_close(  # torch-sparse's own SpMM (the path off CPU) agrees
        gated_spmm(adj_t, value.detach().bfloat16(), mat.detach().bfloat16()).to(dtype),
        expected.detach(),
        atol=0.1,
        rtol=0.05,
    )


def unmarked_copy(adj_t: SparseTensor) -> SparseTensor:
    """The same adjacency, caches included, in a storage of its own (so without the symmetric mark)."""
    storage = adj_t.storage
    return SparseTensor.from_storage(
        SparseStorage(
            row=storage.row(),
            rowptr=storage.rowptr(),
            col=storage.col(),
            value=None,
            sparse_sizes=storage.sparse_sizes(),
            colptr=storage.colptr(),
            csr2csc=storage.csr2csc(),
            csc2csr=storage.csc2csr(),
            is_sorted=True,
        )
    )


@pytest.mark.parametrize("marked", [True, False])
def test_kernel_index_cache_is_the_transpose_in_int32_and_lives_with_the_adjacency(marked):
    """The cached index of the transposed product equals torch-sparse's own transpose; it is int32 (what the CSR
    kernels take) and goes when the adjacency does. A symmetric adjacency's is its own CSR index (no copy)."""
    edges = random_graph(30, 80, num_isolated=4, seed=6)
    adj_t, _ = GraphStructure(edges, 30).adj_t()
    adj_t = adj_t if marked else unmarked_copy(adj_t)
    colptr, row = ops._index(adj_t.storage, "csc")
    rowptr, col = ops._index(adj_t.storage, "csr")
    assert {t.dtype for t in (colptr, row, rowptr, col)} == {torch.int32}
    transposed_rowptr, transposed_col, _ = adj_t.t().csr()
    assert torch.equal(colptr.long(), transposed_rowptr) and torch.equal(row.long(), transposed_col)
    assert torch.equal(rowptr.long(), adj_t.storage.rowptr()) and torch.equal(col.long(), adj_t.storage.col())
    storage = weakref.ref(adj_t.storage)
    assert set(ops._INDEX[storage()]) == ({"csr"} if marked else {"csr", "csc"})
    del adj_t
    gc.collect()
    assert storage() is None  # the cache did not keep it alive


def test_graph_structure_adjacencies_are_marked_symmetric_and_are():
    """Every adjacency of a GraphStructure (held-out edges removed or not) carries the symmetric mark, and the
    mark is true: the pattern equals its transpose and ``csr2csc`` maps each entry to its reverse. A copy of the
    storage, or another adjacency, is not marked."""
    edges = random_graph(40, 120, num_isolated=3, seed=8)
    structure = GraphStructure(edges, 40)
    keep = torch.rand(structure.num_edges, generator=torch.Generator().manual_seed(1)) > 0.4
    for adj_t in (structure.adj_t()[0], structure.adj_t(keep)[0]):
        assert ops.is_symmetric(adj_t)
        storage = adj_t.storage
        reverse = storage.csr2csc()
        assert torch.equal(storage.row().index_select(0, reverse), storage.col())
        assert torch.equal(storage.col().index_select(0, reverse), storage.row())
        assert torch.equal(adj_t.t().csr()[0], storage.rowptr())
        assert not ops.is_symmetric(unmarked_copy(adj_t))
        assert not ops.is_symmetric(adj_t.set_value(torch.ones(adj_t.nnz()), layout="csr"))
    row, col = edges[:, 0], edges[:, 1]
    assert not ops.is_symmetric(SparseTensor(row=row, col=col, sparse_sizes=(40, 40)))


def pair_scores_reference(adj_t, target, source, unit, scale):
    row, col, _ = adj_t.coo()
    return target[row] + source[col] + (unit[row] * unit[col] * scale).sum(-1)


@pytest.mark.parametrize("marked", [True, False])
@pytest.mark.parametrize("grads", ["all", "unit", "ends"])
def test_pair_scores_match_gathered_scores_and_their_gradients(marked, grads):
    """The cosine gate's scores against gathers of both ends, values and the gradients of every input, on the
    symmetric path (one product in the backward for both ends) and on the general one (two products)."""
    edges = random_graph(30, 80, num_isolated=4, seed=9)
    adj_t, _ = GraphStructure(edges, 30).adj_t()
    adj_t = adj_t if marked else unmarked_copy(adj_t)
    generator = torch.Generator().manual_seed(5)
    inputs = {
        "target": torch.randn(30, generator=generator, dtype=torch.double),
        "source": torch.randn(30, generator=generator, dtype=torch.double),
        "unit": torch.randn(30, 6, generator=generator, dtype=torch.double),
        "scale": torch.randn(6, generator=generator, dtype=torch.double),
    }
    trained = {"all": list(inputs), "unit": ["unit"], "ends": ["target", "source"]}[grads]
    for name in trained:
        inputs[name].requires_grad_()
    got = ops.pair_scores(adj_t, *inputs.values())
    expected = pair_scores_reference(adj_t, *inputs.values())
    assert (type(got.grad_fn).__name__ == "_SymmetricPairScoresBackward") == marked
    torch.testing.assert_close(got, expected)
    weights = torch.randn(got.shape, generator=generator, dtype=torch.double)
    wanted = [inputs[name] for name in trained]
    for name, a, b in zip(
        trained,
        torch.autograd.grad((got * weights).sum(), wanted),
        torch.autograd.grad((expected * weights).sum(), wanted),
    ):
        torch.testing.assert_close(a, b, msg=name)
    with torch.no_grad():  # the export path
        torch.testing.assert_close(ops.pair_scores(adj_t, *inputs.values()), expected.detach())


def test_gated_spmm_keeps_int64_indices_past_the_int32_range(monkeypatch):
    """Where the sizes exceed int32 (here: a limit lowered to 10), the kernels get the int64 index, same results."""
    monkeypatch.setattr(ops, "_INT32_LIMIT", 10)
    edges = random_graph(30, 80, num_isolated=4, seed=7)
    adj_t, _ = GraphStructure(edges, 30).adj_t()
    torch.manual_seed(3)
    value = torch.rand(adj_t.nnz(), requires_grad=True)
    mat = torch.randn(30, 5, requires_grad=True)
    got = gated_spmm(adj_t, value, mat)
    assert ops._index(adj_t.storage, "csr")[1].dtype == torch.long
    assert ops._index(adj_t.storage, "csc")[1].dtype == torch.long
    row, col, _ = adj_t.coo()
    expected = torch.zeros(30, 30).index_put((row, col), value) @ mat
    torch.testing.assert_close(got, expected)
    for a, b in zip(
        torch.autograd.grad(got.sum(), [value, mat]), torch.autograd.grad(expected.sum(), [value, mat])
    ):
        torch.testing.assert_close(a, b)
