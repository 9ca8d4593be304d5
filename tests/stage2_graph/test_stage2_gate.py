"""Static versus pair-aware gates: two targets that must rank the same two sources in opposite orders."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from stage2_reference import random_graph

from stage2_graph import GateLinkLoss, GraphStructure, MGate

# Targets u1 = 0, u2 = 1; sources v1 = 2, v2 = 3. u1's image is close to v1's, u2's to v2's; the statistics
# X are noise. A gate that sees pairs should prefer v1 for u1 and v2 for u2.
U1, U2, V1, V2 = 0, 1, 2, 3
PAIRS = torch.tensor([[U1, U1, U2, U2], [V1, V2, V1, V2]])  # row 0 target, row 1 source


def constructed_inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(4, 3, generator=generator, dtype=torch.double)
    first, second = torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0, 0.0])
    image = torch.stack([first, second, first, second]).double()
    image = image + 0.05 * torch.randn(4, 4, generator=generator, dtype=torch.double)
    return features, [image], [torch.ones(4, dtype=torch.bool)]


def margins(gate: MGate, features, modalities, masks) -> torch.Tensor:
    """``[2, H]``: how much u1 prefers v1 over v2, and how much u2 prefers v2 over v1 (both > 0 = fitted)."""
    logits = gate.pair_logits(features, PAIRS, modalities, masks)
    return torch.stack([logits[0] - logits[1], logits[3] - logits[2]])


def ranking_loss(margin: torch.Tensor) -> torch.Tensor:
    return F.softplus(-margin).sum(0).mean()


def train(gate: MGate, steps: int = 150) -> torch.Tensor:
    features, modalities, masks = constructed_inputs()
    optimizer = torch.optim.Adam(gate.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        ranking_loss(margins(gate, features, modalities, masks)).backward()
        optimizer.step()
    with torch.no_grad():
        return margins(gate, features, modalities, masks)


@pytest.mark.parametrize("heads", [1, 2])
def test_additive_gate_ranks_every_target_alike_for_any_parameters(heads):
    """e_uv = W_t g_u + W_s g_v: u1's preference for v1 over v2 equals u2's, whatever the parameters, so
    u1 and u2 can never rank v1, v2 in opposite orders (the margins always sum to 0)."""
    features, modalities, masks = constructed_inputs()
    gate = MGate(3, (4,), heads=heads, form="additive").double()
    for draw in range(20):
        torch.manual_seed(draw)
        with torch.no_grad():
            for parameter in gate.parameters():
                parameter.normal_(0, 2.0)
        margin = margins(gate, features, modalities, masks)
        torch.testing.assert_close(margin[0], -margin[1])
    # hence the opposite-order ranking loss never drops below 2 ln 2 per head, however long we train
    fitted = train(MGate(3, (4,), heads=heads, form="additive").double())
    torch.testing.assert_close(fitted[0], -fitted[1])
    assert float(ranking_loss(fitted)) >= 2 * math.log(2) - 1e-9


@pytest.mark.parametrize("form", ["cosine", "gatv2"])
@pytest.mark.parametrize("heads", [1, 2])
def test_pair_aware_gate_fits_opposite_orders(form, heads):
    torch.manual_seed(0)
    gate = MGate(3, (4,), heads=heads, form=form, rank=4).double()
    fitted = train(gate)
    assert bool((fitted > 1.0).all()), fitted
    assert float(ranking_loss(fitted)) < 0.7


def test_cosine_term_is_zero_when_a_modality_is_missing():
    features, modalities, _ = constructed_inputs()
    gate = MGate(3, (4,), form="cosine", rank=4).double()
    with torch.no_grad():
        gate.lin.weight.zero_()
        gate.pair_projections[0].weight.zero_()  # the statistics' cosine is then 0/0 -> 0
    present = torch.tensor([True, True, True, False])
    with torch.no_grad():
        logits = gate.pair_logits(features, PAIRS, modalities, [present])
    projected = F.normalize(modalities[0] @ gate.pair_projections[1].weight.detach().t(), dim=-1)
    expected = gate.pair_scale.detach()[1, 0] * (projected[U1] * projected[V1]).sum()
    torch.testing.assert_close(logits[0, 0], expected)
    assert float(logits[1, 0]) == 0.0 and float(logits[3, 0]) == 0.0  # v2 has no image


def test_gate_link_loss_is_bce_over_heads_and_trains_the_gate():
    loss = GateLinkLoss()
    pos, neg = torch.tensor([[2.0, -1.0], [0.5, 0.5]]), torch.tensor([[-3.0, 1.0]])
    out = loss(pos, neg)
    labels = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    expected = F.binary_cross_entropy_with_logits(torch.cat([pos, neg]), labels)
    torch.testing.assert_close(out["gate_link_loss"], expected)
    torch.testing.assert_close(out["gate_link_acc"], torch.tensor(4 / 6))

    # Edges u1-v1 and u2-v2 against non-edges u1-v2 and u2-v1: the cosine gate learns to link similar images.
    features, modalities, masks = constructed_inputs()
    torch.manual_seed(1)
    gate = MGate(3, (4,), form="cosine", rank=4).double()
    optimizer = torch.optim.Adam(gate.parameters(), lr=0.05)
    positive, negative = torch.tensor([[U1, U2], [V1, V2]]), torch.tensor([[U1, U2], [V2, V1]])
    first = None
    for _ in range(100):
        optimizer.zero_grad()
        value = loss(
            gate.pair_logits(features, positive, modalities, masks),
            gate.pair_logits(features, negative, modalities, masks),
        )["gate_link_loss"]
        first = float(value.detach()) if first is None else first
        value.backward()
        optimizer.step()
    assert float(value.detach()) < 0.5 * first


@pytest.mark.parametrize("form", ["additive", "cosine", "gatv2"])
def test_pair_scores_equal_the_propagation_path_scores(form):
    """``pair_logits`` (gathers, used by the link term) and ``adjacency_logits`` (SDDMM for cosine) agree."""
    edges = random_graph(12, 20, num_isolated=2, seed=4)
    adj_t, _ = GraphStructure(edges, 12).adj_t()
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(12, 3, generator=generator, dtype=torch.double)
    mask = torch.rand(12, generator=generator) > 0.3
    image = torch.randn(12, 4, generator=generator, dtype=torch.double) * mask.unsqueeze(-1)
    torch.manual_seed(0)
    gate = MGate(3, (4,), heads=2, form=form, rank=3).double()
    row, col, _ = adj_t.coo()
    with torch.no_grad():
        terms = gate.node_terms(features, [image], [mask])
        torch.testing.assert_close(
            gate.adjacency_logits(terms, adj_t),
            gate.pair_logits(features, torch.stack([row, col]), [image], [mask]),
        )


@pytest.mark.parametrize("feature_dim", [0, 3])
def test_gate_projection_equals_one_product_of_the_concatenated_inputs(feature_dim):
    """The per-block accumulation of the gate's input projection equals ``[X || R^I || R^T] @ W^T`` (a block of
    width 0 included)."""
    torch.manual_seed(4)
    gate = MGate(feature_dim, (5, 6), heads=2, rank=3).double()
    blocks = (torch.randn(9, feature_dim), torch.randn(9, 5), torch.randn(9, 6))
    blocks = tuple(b.double() for b in blocks)
    weight = torch.randn(7, feature_dim + 11, dtype=torch.double)
    torch.testing.assert_close(gate._project(blocks, weight), F.linear(torch.cat(blocks, dim=-1), weight))


@pytest.mark.parametrize("feature_dim", [0, 3])
def test_cosine_projection_per_block_equals_the_block_diagonal_product(feature_dim):
    """The cosine form's per-block products equal one product of ``[X || R^I || R^T]`` with ``W`` stacked over
    the ``P_m`` placed block-diagonally under their blocks' columns: the scores ``W g`` and every block's
    ``P_m R^m`` side by side (a block of width 0 has no projection)."""
    torch.manual_seed(5)
    gate = MGate(feature_dim, (5, 6), heads=2, rank=3).double()
    blocks = tuple(torch.randn(9, d, dtype=torch.double) for d in (feature_dim, 5, 6))
    projections = [p.weight for p in gate.pair_projections]
    assert len(projections) == (3 if feature_dim else 2)
    if not feature_dim:
        projections = [torch.zeros(0, 0, dtype=torch.double), *projections]
    weight = torch.cat([gate.lin.weight, torch.block_diag(*projections)])
    expected = F.linear(torch.cat(blocks, dim=-1), weight)
    scores, pair = gate._project_pairs(blocks)
    torch.testing.assert_close(torch.cat([scores, pair], dim=-1), expected)
