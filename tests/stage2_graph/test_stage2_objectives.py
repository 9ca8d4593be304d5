"""Feature masking, edge hold-out and the two losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stage2_reference import random_graph

from stage2_graph import (
    FeatureReconstructionLoss,
    GraphInputs,
    GraphStructure,
    MaskingDataset,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    StructureReconstructionLoss,
)
from stage2_graph.system import Stage2System

N, F_DIM = 40, 6


def make_inputs(seed: int = 0, modalities: bool = True) -> GraphInputs:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(N, F_DIM, generator=generator)
    edges = random_graph(N, 110, num_isolated=2, seed=seed)
    if not modalities:
        return GraphInputs(features, edges, "f" * 64)
    image_mask = torch.rand(N, generator=generator) > 0.3
    text_mask = torch.rand(N, generator=generator) > 0.3
    image = torch.randn(N, 12, generator=generator) * image_mask.unsqueeze(-1)
    text = torch.randn(N, 10, generator=generator) * text_mask.unsqueeze(-1)
    return GraphInputs(features, edges, "f" * 64, (image, text), (image_mask, text_mask))


def make_system(inputs: GraphInputs, gate: str = "mgate", heads: int = 2, **model_fields) -> Stage2System:
    torch.manual_seed(0)
    model = ModelConfig(hidden_dim=16, num_layers=2, heads=heads, dropout=0.0, **model_fields)
    use_modalities = bool(inputs.modalities)
    system = Stage2System(
        inputs, model, ObjectiveConfig(), OptimConfig(), gate=gate, use_modalities=use_modalities
    )
    return system.eval()


def make_batch(system: Stage2System, epoch: int = 0) -> dict[str, torch.Tensor]:
    dataset = MaskingDataset(N, system.structure.edge_pairs, 0.3, 0.25, 1.0, seed=0)
    return dataset[(epoch, 0)]


@pytest.mark.parametrize("gate", ["mgate", "uniform"])
def test_masked_features_are_hidden_everywhere(gate):
    inputs = make_inputs()
    system = make_system(inputs, gate=gate)
    node_mask = make_batch(system)["node_mask"]
    with torch.no_grad():
        before = system(node_mask=node_mask)
        system.features[node_mask] = torch.randn(int(node_mask.sum()), F_DIM) * 10
        after = system(node_mask=node_mask)
        torch.testing.assert_close(before, after, rtol=0, atol=0)
        visible = (~node_mask).nonzero()[0, 0]
        system.features[visible] += 1.0
        assert not torch.allclose(system(node_mask=node_mask)[visible], after[visible])


def test_gate_sees_masked_features_through_the_mask_token():
    system = make_system(make_inputs())
    node_mask = make_batch(system)["node_mask"]
    adj_t, _ = system.structure.adj_t()
    with torch.no_grad():
        _, gate = system(node_mask=node_mask, return_gate=True)
        masked_x = torch.where(node_mask.unsqueeze(-1), system.model.mask_token, system.features)
        expected = system.model.gate(masked_x, adj_t, system.modalities, system.modality_masks)
    torch.testing.assert_close(gate, expected)


def test_feature_loss_covers_exactly_the_masked_rows():
    torch.manual_seed(0)
    loss = FeatureReconstructionLoss(hidden_dim=8, num_features=F_DIM)
    node_emb, target = torch.randn(N, 8), torch.randn(N, F_DIM)
    node_mask = torch.zeros(N, dtype=torch.bool)
    node_mask[[1, 5, 7, 30]] = True
    value = loss(node_emb, target, node_mask)["feature_loss"]
    expected = ((loss.head(node_emb) - target) ** 2)[node_mask].mean()
    torch.testing.assert_close(value, expected)
    changed = target.clone()
    changed[~node_mask] += 5.0
    torch.testing.assert_close(loss(node_emb, changed, node_mask)["feature_loss"], value)
    changed[5] += 1.0
    assert loss(node_emb, changed, node_mask)["feature_loss"] != value


def test_structure_loss_is_bce_of_scaled_dot_products():
    torch.manual_seed(0)
    loss = StructureReconstructionLoss(hidden_dim=8)
    node_emb = torch.randn(N, 8)
    pos, neg = torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[6, 7], [8, 9]])
    out = loss(node_emb, pos, neg)
    with torch.no_grad():
        logits = [
            float(loss.proj(node_emb[a]) @ loss.proj(node_emb[b])) / 8**0.5 + float(loss.offset)
            for a, b in torch.cat([pos, neg], 1).t().tolist()
        ]
    labels = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    expected = F.binary_cross_entropy_with_logits(torch.tensor(logits), labels)
    torch.testing.assert_close(out["structure_loss"], expected)
    correct = [(logit > 0) == bool(label) for logit, label in zip(logits, labels)]
    torch.testing.assert_close(out["structure_acc"], torch.tensor(sum(correct) / 5))


def test_masks_are_deterministic_and_well_formed():
    system = make_system(make_inputs())
    dataset = MaskingDataset(N, system.structure.edge_pairs, 0.3, 0.25, 2.0, seed=4)
    batch = dataset[(3, 0)]
    again = dataset[(3, 0)]
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    assert not torch.equal(dataset[(4, 0)]["node_mask"], batch["node_mask"])
    assert int(batch["node_mask"].sum()) == round(0.3 * N)
    held = ~batch["keep_edges"]
    assert int(held.sum()) == round(0.25 * system.structure.num_edges)
    assert torch.equal(batch["pos_pairs"].t(), system.structure.edge_pairs[held])
    edge_set = {tuple(p) for p in system.structure.edge_pairs.tolist()}
    neg = batch["neg_pairs"].t().tolist()
    assert len(neg) > 0.9 * 2 * held.sum()
    assert all(a != b and (min(a, b), max(a, b)) not in edge_set for a, b in neg)


def test_held_out_edges_never_reach_message_passing():
    inputs = make_inputs()
    system = make_system(inputs)
    batch = make_batch(system)
    used = []
    original = system.structure.adj_t

    def spy(keep_edges=None):
        adj_t, edge_id = original(keep_edges)
        used.append(adj_t)
        return adj_t, edge_id

    system.structure.adj_t = spy
    system.compute_losses(batch)
    assert len(used) == 1
    row, col, _ = used[0].coo()
    held = {tuple(pair) for pair in batch["pos_pairs"].t().tolist()}
    assert held and not any((u, v) in held or (v, u) in held for u, v in zip(row.tolist(), col.tolist()))

    # The step's embeddings equal those of a graph from which the held-out edges were deleted.
    kept = GraphStructure(system.structure.edge_pairs[batch["keep_edges"]], N)
    with torch.no_grad():
        step_adj = original(batch["keep_edges"])[0]
        ours = system.model(system.node_inputs(step_adj))
        expected = system.model(system.node_inputs(kept.adj_t()[0]))
    torch.testing.assert_close(ours, expected)


def test_x_only_system_has_no_modalities():
    system = make_system(make_inputs(modalities=False))
    assert system.model.gate.feature_dim == F_DIM and system.model.gate.modality_dims == ()
    batch = make_batch(system)
    losses = system.compute_losses(batch)
    assert set(losses) >= {"feature_loss", "structure_loss", "loss"}
    losses["loss"].backward()


def test_corpus_without_statistics_columns():
    inputs = GraphInputs(torch.zeros(N, 0), random_graph(N, 80, num_isolated=0, seed=0), "f" * 64)
    system = make_system(inputs)
    losses = system.compute_losses(make_batch(system))
    assert losses["feature_loss"] == 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in system.parameters())


@pytest.mark.parametrize("gate", ["mgate", "uniform"])
def test_degree_input_counts_only_message_passing_edges(gate):
    system = make_system(make_inputs(), gate=gate)
    batch = make_batch(system)
    seen = []
    system.model.input_proj.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        system(batch["keep_edges"], batch["node_mask"])
    kept = system.structure.edge_pairs[batch["keep_edges"]]
    degree = torch.bincount(kept.reshape(-1), minlength=N).float()
    assert seen[0].shape == (N, F_DIM + 1 + 12 + 10)  # stats, degree, image, text
    torch.testing.assert_close(seen[0][:, F_DIM], torch.log1p(degree))
    assert degree.sum() < 2 * system.structure.edge_pairs.shape[0]  # some edges were held out
    # masked nodes lose their statistics but keep their degree (structure, not features)
    masked = batch["node_mask"]
    expected = system.model.mask_token.expand(int(masked.sum()), -1)
    torch.testing.assert_close(seen[0][masked, :F_DIM], expected)


def test_degree_input_can_be_switched_off():
    inputs = make_inputs()
    model = ModelConfig(hidden_dim=16, num_layers=2, dropout=0.0, node_inputs=("stats",))
    system = Stage2System(inputs, model, ObjectiveConfig(), OptimConfig())
    assert system.model.input_proj.in_features == F_DIM
    seen = []
    system.model.input_proj.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        system()
    torch.testing.assert_close(seen[0], system.features)


def test_text_skip_last_is_stage_2_on_r_t_without_those_columns():
    """``model.text_skip_last=k`` over R^T = [m || h] builds the very system that reads R^T = m: same weights
    (same seed), same outputs, same losses; h changes nothing. Too large a k is refused, naming the field."""
    import dataclasses

    from stage2_graph.system import drop_last_columns

    inputs = make_inputs()
    image, text = inputs.modalities
    head = torch.randn(N, 4) * 100
    wide = dataclasses.replace(inputs, modalities=(image, torch.cat([text, head], 1)))
    skipping, plain = make_system(wide, text_skip_last=4), make_system(inputs)
    assert torch.equal(skipping.modality_1, plain.modality_1)
    for a, b in zip(skipping.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    batch = make_batch(plain)
    with torch.no_grad():
        torch.testing.assert_close(
            skipping(node_mask=batch["node_mask"]), plain(node_mask=batch["node_mask"])
        )
    reading = make_system(wide)  # k = 0 reads h, and h changes the outputs
    assert reading.modality_1.shape[1] == 14
    with pytest.raises(ValueError, match="text_skip_last=10 leaves nothing"):
        drop_last_columns(text, 10)


def test_image_skip_last_is_stage_2_on_r_i_without_those_columns_and_readout_image_whole_keeps_them():
    """``model.image_skip_last=k`` over R^I = [p || h] builds the very system that reads R^I = p (same weights,
    same GNN outputs); with ``readout_image=whole`` R^G's content readout smooths [p || h], without it p. Too
    large a k is refused, naming the field."""
    import dataclasses

    from stage2_graph.export import compute_graph_outputs
    from stage2_graph.system import drop_last_columns

    inputs = make_inputs()
    image, text = inputs.modalities
    head = torch.randn(N, 4, generator=torch.Generator().manual_seed(4)) * 100
    wide = dataclasses.replace(inputs, modalities=(torch.cat([image, head], 1), text))
    fields = {"image_skip_last": 4, "content_hops": 1}
    skipping, plain = make_system(wide, **fields), make_system(inputs, content_hops=1)
    assert torch.equal(skipping.modality_0, plain.modality_0) and skipping.whole_image is None
    for a, b in zip(skipping.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    out_skip, out_plain = compute_graph_outputs(skipping), compute_graph_outputs(plain)
    np.testing.assert_array_equal(out_skip.user_graph_emb, out_plain.user_graph_emb)
    whole = make_system(wide, readout_image="whole", **fields)
    assert whole.whole_image.shape[1] == image.shape[1] + 4
    out_whole = compute_graph_outputs(whole)
    assert out_whole.user_graph_emb.shape[1] == out_plain.user_graph_emb.shape[1] + 4
    np.testing.assert_array_equal(out_whole.user_graph_emb[:, :16], out_plain.user_graph_emb[:, :16])
    with pytest.raises(ValueError, match="image_skip_last=20 leaves nothing of stage 1's R\\^I"):
        drop_last_columns(image, 20, "image")


@pytest.mark.parametrize("gate", ["mgate", "uniform"])
def test_readout_text_whole_smooths_all_of_r_t_while_the_gnn_reads_fewer_columns(gate):
    """``readout_text=whole`` with ``text_skip_last=k``: the GNN output and the gate are those of ``inputs`` (the
    same network), and R^G's content readout is ``content_readout`` of the whole R^T, [m || h], computed here
    from the model's public pieces; with ``inputs`` it is the readout of m alone."""
    import dataclasses

    from stage2_graph.export import compute_graph_outputs
    from stage2_graph.model import NodeInputs

    inputs = make_inputs()
    image, text = inputs.modalities
    head = torch.randn(N, 4, generator=torch.Generator().manual_seed(3))
    wide = dataclasses.replace(inputs, modalities=(image, torch.cat([text, head], 1)))
    fields = {"text_skip_last": 4, "content_hops": 2}
    whole = make_system(wide, gate=gate, readout_text="whole", **fields)
    short = make_system(wide, gate=gate, **fields)
    for a, b in zip(whole.state_dict().values(), short.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # no parameter depends on the readout
    out_whole, out_short = compute_graph_outputs(whole), compute_graph_outputs(short)
    assert out_whole.user_graph_emb.shape[1] == 16 + 2 * (F_DIM + 12 + 14)
    assert out_short.user_graph_emb.shape[1] == 16 + 2 * (F_DIM + 12 + 10)
    assert (out_whole.user_graph_emb[:, :16] == out_short.user_graph_emb[:, :16]).all()  # the same GNN output
    assert (out_whole.gate == out_short.gate).all()
    with torch.no_grad():
        adj_t, _ = whole.structure.adj_t()
        node_emb, gate_values = whole.model(whole.node_inputs(adj_t), return_gate=True)
        relevance = (
            torch.ones_like(gate_values)
            if whole.model.gate is None
            else whole.model.gate.relevance(gate_values, adj_t)
        )
        reference = whole.model.content_readout(
            NodeInputs(whole.features, adj_t, [image, wide.modalities[1]], list(inputs.modality_masks)),
            relevance.mean(dim=1),
            2,
        )
    torch.testing.assert_close(torch.from_numpy(out_whole.user_graph_emb[:, 16:]), reference)
    assert whole.modality_1.shape[1] == 10 and whole.whole_text.shape[1] == 14
    assert short.whole_text is None
