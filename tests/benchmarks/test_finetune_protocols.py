"""benchmarks/finetune_protocols.py: its ``standard`` protocol trains exactly what the report trains, and its
head-first phase trains the head alone."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the script's own imports

from benchmarks.finetune_protocols import PROTOCOLS, candidates, train_head_first  # noqa: E402
from bridge.evaluation.loop import prepare_targets  # noqa: E402
from bridge.evaluation.networks import TrainGrid, network_candidates, task_loss  # noqa: E402
from stage2_graph.finetune import finetune_factory  # noqa: E402

GRID = TrainGrid("finetuned", (0,), (1e-3, 1e-2), (5e-4,), 40, 5)


@pytest.fixture
def setup(finetune_checkpoint):
    path, _, (x, edges, labels, fans, splits) = finetune_checkpoint
    build = finetune_factory(path, x, edges, "fp", None, "pretrained")
    targets = prepare_targets("topic", labels, labels >= 0, splits, 5)
    return (lambda t, seed, lr: build(t.out_dim)), targets


def test_standard_protocol_is_the_reports_training(setup):
    make, targets = setup
    ours = candidates(make, targets, GRID, PROTOCOLS["standard"])
    report = network_candidates(make, targets, GRID)
    assert len(ours) == len(report) == 2
    for a, b in zip(ours, report):
        assert (a.head, a.weight_decay, a.epochs) == (b.head, b.weight_decay, b.epochs)
        np.testing.assert_array_equal(a.val_pred, b.val_pred)
        np.testing.assert_array_equal(a.test_pred, b.test_pred)


def test_head_first_trains_the_head_alone_and_keeps_its_best_val_weights(setup):
    make, targets = setup
    torch.manual_seed(0)
    network, _ = make(targets, 0, 1e-2)
    body = {k: v.clone() for k, v in network.system.model.state_dict().items()}
    head = {k: v.clone() for k, v in network.head.state_dict().items()}
    idx = {name: torch.from_numpy(np.flatnonzero(mask)) for name, mask in targets.masks.items()}
    target = torch.from_numpy(targets.standardized())

    def val_loss() -> float:
        network.eval()
        with torch.no_grad():
            return float(task_loss(network()[idx["val"]], target[idx["val"]], "topic", training=False))

    before = val_loss()
    epochs = train_head_first(network, target, idx, "topic", 1e-2, 5e-4, GRID)
    assert 1 <= epochs <= GRID.max_epochs
    assert all(torch.equal(v, body[k]) for k, v in network.system.model.state_dict().items())
    assert any(not torch.equal(v, head[k]) for k, v in network.head.state_dict().items())
    assert all(p.requires_grad for p in network.system.model.parameters())  # unfrozen again for fine-tuning
    assert val_loss() < before


def test_fewer_train_labels_keeps_a_share_of_each_topic_and_leaves_val_and_test():
    from benchmarks.finetune_protocols import fewer_train_labels

    labels = np.repeat([0, 1, 2], 40)
    splits = np.tile([0, 0, 0, 0, 1, 2, 0, 0], 15)
    out = fewer_train_labels(splits, labels, 0.25)
    for topic in range(3):
        train = int(((splits == 0) & (labels == topic)).sum())
        assert int(((out == 0) & (labels == topic)).sum()) == round(0.25 * train)
    assert np.array_equal(out == 1, splits == 1) and np.array_equal(out == 2, splits == 2)
    assert set(np.unique(out[(splits == 0) & (out != 0)])) == {-1}
    assert np.array_equal(fewer_train_labels(splits, labels, 0.25), out)  # seeded
    assert int((fewer_train_labels(splits, labels, 0.001) == 0).sum()) == 3  # at least one per topic
