"""Fine-tuning a pre-trained stage 2 (``stage2_graph.finetune``) through the bridge's training protocol
(``bridge.evaluation.networks``): pretrained and scratch differ only by the GNN's initial weights, and selection
sees val only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridge.evaluation import metrics
from bridge.evaluation.config import EvalConfig
from bridge.evaluation.loop import prepare_targets
from bridge.evaluation.networks import TrainGrid, evaluate_network, train_network
from stage2_graph.finetune import finetune_factory


def test_pretrained_and_scratch_differ_only_by_the_gnn_initial_weights(finetune_checkpoint):
    path, trained, (x, edges, labels, fans, splits) = finetune_checkpoint
    pre = finetune_factory(path, x, edges, "fp", None, "pretrained")
    scratch = finetune_factory(path, x, edges, "fp", None, "scratch")
    torch.manual_seed(7)
    net_p, groups_p = pre(3)
    torch.manual_seed(7)
    net_s, groups_s = scratch(3)
    sp, ss = net_p.state_dict(), net_s.state_dict()
    assert sp.keys() == ss.keys() and all(sp[k].shape == ss[k].shape for k in sp)
    for k, v in trained.model.state_dict().items():
        assert torch.equal(sp[f"system.model.{k}"], v)  # the checkpoint's weights, gate included
    differ = [k for k in sp if not torch.equal(sp[k], ss[k])]
    assert differ and all(k.startswith("system.model.") for k in differ)  # the head is the same draw
    assert [len(g["params"]) for g in groups_p] == [len(g["params"]) for g in groups_s]

    # give the scratch network the pretrained one's initial weights: training is then identical, step for step
    net_s.load_state_dict(sp)
    assert not torch.equal(net_s.content, net_p.content)  # the fixed content readout: from each initial gate
    net_s.content.copy_(net_p.content)
    targets = prepare_targets("topic", labels, labels >= 0, splits, 5)
    idx = {k: torch.from_numpy(np.flatnonzero(m)) for k, m in targets.masks.items()}
    y = torch.from_numpy(targets.standardized())
    outs = []
    for net in (net_p, net_s):
        torch.manual_seed(11)
        outs.append(train_network(net, net.parameter_groups(), y, idx, "topic", 1e-2, 1e-4, 15, 100))
    assert outs[0][0] == outs[1][0] and torch.equal(outs[0][1], outs[1][1])


def test_finetuning_selects_on_val_only_and_scores_test_once(finetune_checkpoint, monkeypatch):
    path, _, (x, edges, labels, fans, splits) = finetune_checkpoint
    build = finetune_factory(path, x, edges, "fp", None, "pretrained")
    grid = TrainGrid("finetuned", (0, 1), (1e-3, 1e-2), (5e-4,), 60, 10)
    calls: list[int] = []
    real_f1 = metrics.f1_score
    monkeypatch.setattr(metrics, "f1_score", lambda t, p, **k: calls.append(len(t)) or real_f1(t, p, **k))

    def make(targets, seed, lr):
        return build(targets.out_dim)

    res = evaluate_network(make, labels, fans, splits, 5, grid, x.shape[1])
    n_val, n_test = int((splits == 1).sum()), int((splits == 2).sum())
    assert calls.count(n_val) == 4 and calls.count(n_test) == 2  # 2 seeds x 2 lrs on val; test once per seed
    assert res.topic["macro_f1"].mean > 0.5  # three planted communities, chance is 1/3
    assert all(c.head.startswith("finetuned(lr=") for c in res.topic.chosen)
    flipped = labels.copy()
    flipped[splits == 2] = (flipped[splits == 2] + 1) % 3
    again = evaluate_network(make, flipped, fans, splits, 5, grid, x.shape[1])
    assert again.topic.chosen == res.topic.chosen


def test_eval_config_checks_the_new_grids():
    from mmga_common.config import ConfigError

    with pytest.raises(ConfigError, match="cs_alphas"):
        EvalConfig(cs_alphas=((0.5, 1.5),))
    with pytest.raises(ConfigError, match="gcn_lrs"):
        EvalConfig(gcn_lrs=())


def test_the_finetuned_network_moves_its_adjacency_with_it(finetune_checkpoint):
    """``FinetuneNetwork.to(device)`` builds its adjacency again from the moved graph buffers (it is no buffer):
    the meta device stands in for a GPU."""
    path, _, (x, edges, *_) = finetune_checkpoint
    net, _ = finetune_factory(path, x, edges, "fp", None, "pretrained")(3)
    assert net.adj_t.storage.row().device.type == "cpu"
    assert net.to("meta") is net
    storage = net.adj_t.storage
    assert {storage.row().device.type, storage.rowptr().device.type, storage.col().device.type} == {"meta"}
    assert all(t.device.type == "meta" for t in (*net.parameters(), *net.buffers()))
