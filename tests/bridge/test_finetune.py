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
from stage2_graph.config import Stage2Config
from stage2_graph.finetune import finetune_factory
from stage2_graph.infer import graph_inputs
from stage2_graph.system import Stage2System


def _graph(n: int = 90, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n // 3)
    x = (rng.normal(size=(n, 5)) + 0.3 * labels[:, None]).astype(np.float32)
    edges = set()
    while len(edges) < 3 * n:
        u, v = rng.integers(0, n, 2)
        if u != v and (labels[u] == labels[v] or rng.random() < 0.15):
            edges.add((min(u, v), max(u, v)))
    fans = np.exp(1.0 + labels + rng.normal(scale=0.3, size=n))
    splits = np.tile([0, 0, 0, 1, 1, 2], n // 6 + 1)[:n]  # val and test of different sizes
    return x, np.array(sorted(edges)), labels, fans, splits


@pytest.fixture
def checkpoint(tmp_path):
    """A stage-2 checkpoint as the stage writes it (state_dict + stage2_config), its weights perturbed so they
    differ from any fresh initialisation."""
    x, edges, *_ = _graph()
    cfg = Stage2Config.from_dict(
        {
            "corpus": ".",
            "cache_dir": ".",
            "use_modalities": False,
            "model": {"hidden_dim": 8, "num_layers": 2},
        }
    )
    torch.manual_seed(123)
    system = Stage2System.from_config(graph_inputs(x, edges, "fp"), cfg)
    with torch.no_grad():
        for p in system.model.parameters():
            p.add_(0.5)
    path = tmp_path / "last.ckpt"
    torch.save(
        {"state_dict": system.state_dict(), "hyper_parameters": {"stage2_config": cfg.to_dict()}}, path
    )
    return path, system


def test_pretrained_and_scratch_differ_only_by_the_gnn_initial_weights(checkpoint):
    path, trained = checkpoint
    x, edges, labels, fans, splits = _graph()
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


def test_finetuning_selects_on_val_only_and_scores_test_once(checkpoint, monkeypatch):
    path, _ = checkpoint
    x, edges, labels, fans, splits = _graph()
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
