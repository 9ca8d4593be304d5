"""MGateConv against a dense reference and a PyG MessagePassing implementation: outputs and gradients.

The layer takes its gate as an input; here it is an ``MGate``'s output (or ``uniform_gate``), and the
references recompute that gate from the same parameters the naive way."""

from __future__ import annotations

import pytest
import torch
from stage2_reference import PygMGate, dense_reference, random_graph
from torch_sparse import SparseTensor

from stage2_graph import GraphStructure, MGate, MGateConv, uniform_gate

NUM_NODES, NUM_FEATURES, IMAGE_DIM, TEXT_DIM = 14, 5, 7, 3


def make_case(normalization: str, heads: int, in_channels: int, seed: int, form: str = "cosine"):
    torch.manual_seed(seed)
    edges = random_graph(NUM_NODES, num_edges=24, num_isolated=3, seed=seed)
    conv = MGateConv(in_channels, 8, heads=heads).double()
    gate = MGate(
        NUM_FEATURES, (IMAGE_DIM, TEXT_DIM), heads=heads, normalization=normalization, form=form, rank=3
    ).double()
    with torch.no_grad():  # non-trivial values everywhere (the defaults start some at zero)
        for parameter in [*conv.parameters(), *gate.parameters()]:
            parameter.normal_(0, 0.5)
    x = torch.randn(NUM_NODES, in_channels, dtype=torch.double, requires_grad=True)
    features = torch.randn(NUM_NODES, NUM_FEATURES, dtype=torch.double, requires_grad=True)
    image_mask = torch.rand(NUM_NODES) > 0.4
    text_mask = torch.rand(NUM_NODES) > 0.4
    image_mask[:2], text_mask[:2] = False, True
    text_mask[2] = False
    image = (
        torch.randn(NUM_NODES, IMAGE_DIM, dtype=torch.double) * image_mask.unsqueeze(-1)
    ).requires_grad_()
    text = (torch.randn(NUM_NODES, TEXT_DIM, dtype=torch.double) * text_mask.unsqueeze(-1)).requires_grad_()
    inputs, masks = [features, image, text], [image_mask, text_mask]
    return conv, gate, edges, x, inputs, masks


def gated(conv: MGateConv, gate: MGate, x, adj_t, inputs, masks, return_gate: bool = False):
    """The layer with the gate computed by ``gate`` from ``[X, R^I, R^T]`` on ``adj_t``."""
    return conv(x, adj_t, gate(inputs[0], adj_t, inputs[1:], masks), return_gate=return_gate)


def gradients(output: torch.Tensor, weights: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad((output * weights).sum(), tensors, allow_unused=False))


CASES = [
    ("sigmoid", 1, 8),
    ("sigmoid", 2, 8),
    ("sigmoid", 4, 6),
    ("softmax", 1, 8),
    ("softmax", 2, 6),
    ("softmax", 4, 8),
]


FORMS = ["additive", "cosine", "gatv2"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("normalization,heads,in_channels", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_mgate_conv_matches_dense_reference(normalization, heads, in_channels, seed, form):
    conv, gate, edges, x, inputs, masks = make_case(normalization, heads, in_channels, seed, form)
    adj_t, _ = GraphStructure(edges, NUM_NODES).adj_t()
    out, values = gated(conv, gate, x, adj_t, inputs, masks, return_gate=True)
    expected_out, expected_gate = dense_reference(conv, gate, x, edges, inputs, masks)

    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(values, expected_gate)
    isolated = slice(NUM_NODES - 3, NUM_NODES)
    residual = x if conv.lin_root is None else x @ conv.lin_root.weight.t()
    torch.testing.assert_close(out[isolated], (residual + conv.bias)[isolated])

    weights = torch.randn_like(out)
    leaves = [x, *inputs, *conv.parameters(), *gate.parameters()]
    for got, want in zip(gradients(out, weights, leaves), gradients(expected_out, weights, leaves)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("normalization,heads,in_channels", CASES)
def test_mgate_conv_matches_pyg_message_passing(normalization, heads, in_channels, form):
    conv, gate, edges, x, inputs, masks = make_case(normalization, heads, in_channels, seed=3, form=form)
    adj_t, _ = GraphStructure(edges, NUM_NODES).adj_t()
    out = gated(conv, gate, x, adj_t, inputs, masks)
    edge_index = torch.cat([edges.t(), edges.t().flip(0)], dim=1)  # PyG: row 0 source, row 1 target
    expected = PygMGate(conv, gate)(x, edge_index, inputs, masks)
    torch.testing.assert_close(out, expected)

    weights = torch.randn_like(out)
    leaves = [x, *inputs, *conv.parameters(), *gate.parameters()]
    for got, want in zip(gradients(out, weights, leaves), gradients(expected, weights, leaves)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("form", FORMS)
def test_placeholder_replaces_missing_modality_rows(form):
    conv, gate, edges, x, inputs, masks = make_case("sigmoid", 2, 8, seed=5, form=form)
    adj_t, _ = GraphStructure(edges, NUM_NODES).adj_t()
    out = gated(conv, gate, x, adj_t, inputs, masks)
    image = inputs[1].detach().clone()
    image[~masks[0]] = 100.0  # whatever sits in a missing row is never read
    changed = gated(conv, gate, x, adj_t, [inputs[0], image, inputs[2]], masks)
    torch.testing.assert_close(out, changed)
    placeholder_grad = torch.autograd.grad(out.sum(), gate.placeholders[0])[0]
    assert placeholder_grad.abs().sum() > 0


def test_precomputed_and_uniform_gate():
    conv, gate, edges, x, inputs, masks = make_case("sigmoid", 2, 8, seed=7)
    adj_t, _ = GraphStructure(edges, NUM_NODES).adj_t()
    values = gate(inputs[0], adj_t, inputs[1:], masks)
    out, returned = conv(x, adj_t, values, return_gate=True)
    assert returned is values
    torch.testing.assert_close(conv(x, adj_t, gate=values), out)
    # A [nnz, 1] gate is shared by every head: the same as repeating it per head.
    shared = values[:, :1]
    torch.testing.assert_close(conv(x, adj_t, shared), conv(x, adj_t, shared.expand(-1, 2).contiguous()))

    plain = MGateConv(8, 8, heads=2).double()
    mean = plain(x, adj_t, gate=uniform_gate(adj_t, torch.double))
    dense = torch.zeros(NUM_NODES, NUM_NODES, dtype=torch.double)
    dense[edges[:, 0], edges[:, 1]] = 1
    dense[edges[:, 1], edges[:, 0]] = 1
    dense = dense / dense.sum(1, keepdim=True).clamp(min=1)
    torch.testing.assert_close(mean, x + dense @ (x @ plain.lin.weight.t()) + plain.bias)


def test_wrongly_shaped_gate_is_refused():
    conv, gate, edges, x, inputs, masks = make_case("sigmoid", 2, 8, seed=8)
    adj_t, _ = GraphStructure(edges, NUM_NODES).adj_t()
    nnz = adj_t.nnz()
    for wrong in (
        torch.rand(nnz, dtype=torch.double),  # 1-D
        torch.rand(nnz, 3, dtype=torch.double),  # neither 1 nor `heads` columns
        torch.rand(nnz, 2, 1, dtype=torch.double),  # 3-D
        torch.rand(nnz - 1, 2, dtype=torch.double),  # not one value per entry of adj_t
    ):
        shape = ", ".join(str(d) for d in wrong.shape)
        with pytest.raises(ValueError, match=rf"gate must be \[nnz, 1\] or \[nnz, 2\].*got \({shape},?\)"):
            conv(x, adj_t, wrong)


def test_layer_on_its_own_with_any_sparse_tensor():
    """The layer accepts any symmetric SparseTensor, not only GraphStructure's."""
    conv, gate, edges, x, inputs, masks = make_case("softmax", 2, 8, seed=9)
    row = torch.cat([edges[:, 0], edges[:, 1]])
    col = torch.cat([edges[:, 1], edges[:, 0]])
    adj_t = SparseTensor(row=row, col=col, sparse_sizes=(NUM_NODES, NUM_NODES))
    ours, _ = GraphStructure(edges, NUM_NODES).adj_t()
    torch.testing.assert_close(
        gated(conv, gate, x, adj_t, inputs, masks), gated(conv, gate, x, ours, inputs, masks)
    )
