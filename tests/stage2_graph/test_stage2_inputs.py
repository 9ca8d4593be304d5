"""Node inputs: every block reaches R^G, placeholders stand in for missing modalities, use_modalities=False
removes image and text everywhere, the uniform baseline sees the same inputs, and the gate's link term."""

from __future__ import annotations

import pytest
import torch
from test_stage2_objectives import F_DIM, N, make_batch, make_inputs, make_system

from stage2_graph import (
    GraphEncoder,
    GraphStructure,
    ModelConfig,
    NodeInputs,
    ObjectiveConfig,
    OptimConfig,
    Stage2Config,
)
from stage2_graph.system import Stage2System

IMAGE_DIM, TEXT_DIM = 12, 10  # make_inputs' widths


def encoder_case(node_inputs, gate="mgate", gate_form="cosine"):
    inputs = make_inputs(seed=2)
    torch.manual_seed(0)
    model = GraphEncoder(
        F_DIM,
        (IMAGE_DIM, TEXT_DIM),
        hidden_dim=16,
        heads=2,
        dropout=0.0,
        gate=gate,
        node_inputs=node_inputs,
        gate_form=gate_form,
    ).double()
    adj_t, _ = GraphStructure(inputs.edges, N).adj_t()
    x = inputs.features.double().requires_grad_()
    modalities = [t.double().requires_grad_() for t in inputs.modalities]
    return model, adj_t, x, modalities, list(inputs.modality_masks)


@pytest.mark.parametrize("gate", ["mgate", "uniform"])
def test_every_node_input_block_reaches_the_output(gate):
    model, adj_t, x, modalities, masks = encoder_case(("stats", "degree", "image", "text"), gate=gate)
    out = model(NodeInputs(x, adj_t, modalities, masks))
    grads = torch.autograd.grad(out.square().sum(), [x, *modalities], retain_graph=True)
    for grad, mask in zip(grads[1:], masks):
        assert grad[mask].abs().sum(-1).min() > 0  # every present row matters
        assert float(grad[~mask].abs().max()) < 1e-12  # a missing row's content never does
    assert grads[0].abs().sum() > 0
    weight_grad = torch.autograd.grad(out.square().sum(), model.input_proj.weight)[0]
    assert weight_grad[:, F_DIM].abs().sum() > 0  # the degree column


def test_node_input_layout_and_placeholders_for_missing_users():
    model, adj_t, x, modalities, masks = encoder_case(("text", "stats", "image"))
    assert model.input_proj.in_features == TEXT_DIM + F_DIM + IMAGE_DIM
    seen = []
    model.input_proj.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    out = model(NodeInputs(x, adj_t, modalities, masks))
    text, stats, image = seen[0].split((TEXT_DIM, F_DIM, IMAGE_DIM), dim=1)
    torch.testing.assert_close(stats, x)
    for block, embedding, mask, name in (
        (image, modalities[0], masks[0], "image"),
        (text, modalities[1], masks[1], "text"),
    ):
        assert (~mask).any() and mask.any()
        torch.testing.assert_close(block[mask], embedding[mask])
        placeholder = model.input_placeholders[name]
        torch.testing.assert_close(block[~mask], placeholder.expand(int((~mask).sum()), -1))
        assert torch.autograd.grad(out.sum(), placeholder, retain_graph=True)[0].abs().sum() > 0


def test_x_only_node_inputs_keep_modalities_in_the_gate():
    model, adj_t, x, modalities, masks = encoder_case(("stats", "degree"))
    assert model.input_proj.in_features == F_DIM + 1 and set(model.input_placeholders) == set()
    out = model(NodeInputs(x, adj_t, modalities, masks))
    image_grad = torch.autograd.grad(out.sum(), modalities[0])[0]
    assert image_grad[masks[0]].abs().sum() > 0  # through the gate only
    uniform, adj_t, x, modalities, masks = encoder_case(("stats", "degree"), gate="uniform")
    out = uniform(NodeInputs(x, adj_t, modalities, masks))
    assert torch.autograd.grad(out.sum(), modalities[0], allow_unused=True)[0] is None


def test_use_modalities_false_removes_image_and_text_everywhere():
    inputs = make_inputs()
    model = ModelConfig(hidden_dim=16, dropout=0.0)  # default node inputs name image and text
    system = Stage2System(inputs, model, ObjectiveConfig(), OptimConfig(), use_modalities=False).eval()
    assert system.model.node_inputs == ("stats", "degree") and system.model.modality_dims == ()
    assert system.modalities == [] and system.model.gate.modality_dims == ()
    with torch.no_grad():
        system()  # runs on X and degree alone
    cfg = Stage2Config.from_dict({"corpus": "c", "cache_dir": "k", "use_modalities": False})
    assert cfg.resolved_node_inputs == ("stats", "degree") and cfg.needs_modalities is False
    uniform = Stage2Config.from_dict({"corpus": "c", "cache_dir": "k", "gate": "uniform"})
    assert uniform.needs_modalities is True  # the no-alignment baseline sees the same node inputs
    literal = Stage2Config.from_dict(
        {"corpus": "c", "cache_dir": "k", "gate": "uniform", "model": {"node_inputs": ["stats", "degree"]}}
    )
    assert literal.needs_modalities is False


def test_modality_node_inputs_without_embeddings_are_refused():
    with pytest.raises(ValueError, match="node input 'image' needs stage 1's image embeddings"):
        GraphEncoder(F_DIM, (), node_inputs=("stats", "image"))


@pytest.mark.parametrize("gate_form", ["additive", "cosine", "gatv2"])
def test_gate_link_term_scores_held_out_edges_with_the_gate(gate_form):
    system = make_system(make_inputs(), gate_form=gate_form).train()
    batch = make_batch(system)
    losses = system.compute_losses(batch)
    pos, neg = batch["pos_pairs"], batch["neg_pairs"]
    with torch.no_grad():
        masked = torch.where(batch["node_mask"].unsqueeze(-1), system.model.mask_token, system.features)
        pos_logits = system.model.gate.pair_logits(
            masked, torch.cat([pos, pos.flip(0)], 1), system.modalities, system.modality_masks
        )
        neg_logits = system.model.gate.pair_logits(
            masked, torch.cat([neg, neg.flip(0)], 1), system.modalities, system.modality_masks
        )
    expected = system.gate_link_loss(pos_logits, neg_logits)["gate_link_loss"]
    torch.testing.assert_close(losses["gate_link_loss"], expected)
    total = losses["feature_loss"] + losses["structure_loss"] + losses["gate_link_loss"]
    torch.testing.assert_close(losses["loss"], total)
    losses["gate_link_loss"].backward()
    assert system.model.gate.lin.weight.grad.abs().sum() > 0


def test_uniform_gate_has_no_link_term():
    system = make_system(make_inputs(), gate="uniform")
    losses = system.compute_losses(make_batch(system))
    assert float(losses["gate_link_loss"]) == 0.0
