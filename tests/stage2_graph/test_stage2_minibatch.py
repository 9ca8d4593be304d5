"""Mini-batch training (trainer.batching=neighbor, PyG's NeighborLoader) and layer-wise inference: with all
neighbours a batch's seeds get exactly the full-batch embeddings and losses; sampled fan-outs are respected
and held-out edges never reach a batch; layer-wise inference equals the full forward; a short fit of this path
and of the random-walk subgraph path writes a valid cache; and both under Lightning DDP with 2 CPU processes
(slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_stage2_objectives import N, make_inputs, make_system
from test_stage2_run import small_config

from cache import read_graph_outputs, read_producer
from cache.checkpoint import load_checkpoint
from corpus import load_corpus
from stage2_graph import run_stage2
from stage2_graph.data import MaskingDataset
from stage2_graph.export import compute_graph_outputs
from stage2_graph.minibatch import NeighborBatches, layerwise_forward

REPO = Path(__file__).resolve().parents[2]
CASES = [
    {"gate": "mgate"},
    {"gate": "mgate", "gate_form": "additive"},
    {"gate": "mgate", "gate_form": "gatv2", "gate_normalization": "softmax"},
    {"gate": "uniform"},
]


def _batches(system, fanouts, batch_size=8, epoch=0, rank=0, world_size=1):
    masking = MaskingDataset(N, system.structure.edge_pairs, 0.3, 0.25, 1.0, seed=0)
    batches = NeighborBatches(system.structure, masking, fanouts, batch_size, epoch, 0, rank, world_size)
    return masking[(epoch, 0)], batches


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c.values()))
def test_all_neighbour_batches_give_the_full_batch_forward_and_losses(case):
    case = dict(case)
    gate = case.pop("gate")
    system = make_system(make_inputs(), gate=gate, **case)
    masks, batches = _batches(system, [-1, -1])
    assert len(batches) == 5  # ceil(40 / 8)
    seen_nodes, seen_pos = [], 0
    with torch.no_grad():
        full = system(masks["keep_edges"], masks["node_mask"])
        for batch in batches:
            seeds = batch["n_id"][: batch["num_seeds"]]
            node_emb = system.minibatch_forward(batch)[0]
            torch.testing.assert_close(node_emb[: batch["num_seeds"]], full[seeds], rtol=0, atol=1e-5)
            losses = system.minibatch_losses(batch)
            pos, neg = seeds[batch["pos_pairs"]], seeds[batch["neg_pairs"]]
            expected = system.structure_loss(full, pos, neg)["structure_loss"]
            torch.testing.assert_close(losses["structure_loss"], expected, rtol=0, atol=1e-5)
            rows = batch["n_id"][batch["loss_mask"]]
            assert bool(masks["node_mask"][rows].all())
            expected = system.feature_loss(
                full[rows], system.features[rows], torch.ones_like(rows, dtype=torch.bool)
            )
            torch.testing.assert_close(losses["feature_loss"], expected["feature_loss"], rtol=0, atol=1e-5)
            if gate == "mgate":
                link = system.gate_link_losses({**masks, "pos_pairs": pos, "neg_pairs": neg}, full)
                torch.testing.assert_close(
                    losses["gate_link_loss"], link["gate_link_loss"], rtol=0, atol=1e-5
                )
            seen_nodes.append(rows)
            seen_pos += pos.shape[1]
    # every masked node is covered once per epoch; each batch scores its share of held-out edges, capped
    assert torch.equal(torch.cat(seen_nodes).sort().values, masks["node_mask"].nonzero().view(-1))
    per_batch = [len(c) for c in masks["pos_pairs"][0].tensor_split(5)]
    assert seen_pos == sum(min(count, 2) for count in per_batch) > 0  # at most batch_size / 4 per batch


def test_sampled_batches_respect_fanouts_and_never_hold_held_out_edges():
    system = make_system(make_inputs())
    masks, batches = _batches(system, [2, 1], batch_size=6)
    held = {tuple(p) for p in masks["pos_pairs"].t().tolist()}
    assert held
    for batch in batches:
        n_id, (source, target) = batch["n_id"], batch["edge_index"]
        for u, v in zip(n_id[target].tolist(), n_id[source].tolist()):
            assert (min(u, v), max(u, v)) not in held
        in_degree = torch.bincount(target, minlength=n_id.numel())
        assert int(in_degree[: batch["num_seeds"]].max()) <= 2  # first hop: at most 2 per seed
        assert int(in_degree.max()) <= 2


def test_ranks_split_the_batches_evenly():
    system = make_system(make_inputs())
    _, single = _batches(system, [-1, -1], batch_size=8)
    shares = [_batches(system, [-1, -1], batch_size=8, rank=r, world_size=2)[1] for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 3  # 5 batches rounded up to 6, 3 per rank
    seeds = torch.cat([b["n_id"][b["loss_mask"]] for share in shares for b in share]).sort().values
    assert torch.equal(seeds, torch.cat([b["n_id"][b["loss_mask"]] for b in single]).sort().values)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c.values()))
def test_layerwise_inference_equals_the_full_forward(case):
    case = dict(case)
    gate = case.pop("gate")
    system = make_system(make_inputs(), gate=gate, **case)
    adj_t, _ = system.structure.adj_t()
    with torch.no_grad():
        full, full_gate = system.model(system.node_inputs(adj_t), return_gate=True)
    layered, gate_values = layerwise_forward(
        system.model,
        system.features,
        system.structure,
        system.modalities,
        system.modality_masks,
        batch_size=7,
    )
    torch.testing.assert_close(layered, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(gate_values, full_gate, rtol=0, atol=0)
    by_layer, whole = compute_graph_outputs(system, layerwise_batch_size=7), compute_graph_outputs(system)
    np.testing.assert_allclose(by_layer.user_graph_emb, whole.user_graph_emb, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(by_layer.edge_index, whole.edge_index)
    np.testing.assert_allclose(by_layer.edge_weight, whole.edge_weight, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "batching",
    [
        {"batching": "neighbor", "fanouts": [5, 5], "batch_size": 16},  # 60 users / 16: 4 batches per epoch
        {"batching": "subgraph", "walk_length": 2, "batch_size": 5},  # 60 users / (5 x 3): 4 per epoch
    ],
    ids=lambda b: b["batching"],
)
def test_minibatch_fit_reloads_batches_each_epoch_and_writes_a_valid_cache(tiny_corpus, tmp_path, batching):
    cfg = small_config(
        tiny_corpus,
        tmp_path / "cache",
        tmp_path / "out",
        use_modalities=False,
        trainer={"max_steps": 8, **batching},
    )
    result = run_stage2(cfg)
    corpus = load_corpus(tiny_corpus)
    outputs = read_graph_outputs(
        cfg.cache_dir,
        0,
        fingerprint=corpus.fingerprint,
        num_users=corpus.num_users,
        num_edges=corpus.num_edges,
    )
    assert np.isfinite(outputs.user_graph_emb).all() and outputs.user_graph_emb.std() > 0
    assert read_producer(result.cache_file)["trainer"]["batching"] == batching["batching"]
    assert result.metrics["steps_run"] == 8
    assert np.isfinite(result.metrics["loss_last"])
    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint["global_step"] == 8 and checkpoint["epoch"] == 2


@pytest.mark.slow
def test_neighbor_batching_under_ddp_with_two_cpu_processes(tiny_corpus, tmp_path):
    """9-33 s on the 2-core machine, by load: 2 extra processes import torch, Lightning and PyG."""
    cache_dir, out_dir = tmp_path / "cache", tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "stage2_graph.run",
        "--corpus",
        str(tiny_corpus),
        "--cache",
        str(cache_dir),
        "--round",
        "0",
        "--out",
        str(out_dir),
        "--no-use-modalities",
        "--max-steps",
        "4",
        "--batching",
        "neighbor",
        "--fanouts",
        "5",
        "5",
        "--batch-size",
        "16",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--no-enable-progress-bar",
        "--hidden-dim",
        "16",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Starting with 2 processes" in output and "distributed_backend=gloo" in output
    assert output.count("cache file:") == 1  # rank 0 alone reports (and writes)
    corpus = load_corpus(tiny_corpus)
    outputs = read_graph_outputs(
        cache_dir, 0, fingerprint=corpus.fingerprint, num_users=corpus.num_users, num_edges=corpus.num_edges
    )
    assert np.isfinite(outputs.user_graph_emb).all()
    checkpoint = load_checkpoint(out_dir / "checkpoints" / "last.ckpt")
    # 4 batches per epoch split over 2 ranks: 4 steps are 2 epochs (one process would need 1)
    assert checkpoint["global_step"] == 4 and checkpoint["epoch"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "batching",
    [
        {"batching": "neighbor", "fanouts": [5, 5], "batch_size": 16},  # ceil(60 / 16) = 4 batches
        {"batching": "subgraph", "walk_length": 2, "batch_size": 5},  # ceil(60 / (5 x 3)) = 4 batches
    ],
    ids=lambda b: b["batching"],
)
def test_minibatch_training_in_process_with_ddp_spawn(tiny_corpus, tmp_path, batching):
    """The bridge's route (in-process, 2 spawned workers); 5-20 s. The workers save last.ckpt, the caller
    exports from the weights Lightning hands back: the cache must equal a re-export of that checkpoint."""
    from stage2_graph.infer import infer_graph_outputs

    cfg = small_config(
        tiny_corpus,
        tmp_path / "cache",
        tmp_path / "out",
        use_modalities=False,
        trainer={"max_steps": 4, **batching, "devices": "2", "strategy": "ddp_spawn"},
    )
    result = run_stage2(cfg)
    assert result.metrics["steps_run"] == 4
    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint["global_step"] == 4 and checkpoint["epoch"] == 2 and checkpoint["optimizer_states"]
    corpus = load_corpus(tiny_corpus)
    written = read_graph_outputs(
        cfg.cache_dir,
        0,
        fingerprint=corpus.fingerprint,
        num_users=corpus.num_users,
        num_edges=corpus.num_edges,
    )
    _, again = infer_graph_outputs(result.checkpoint, corpus.features, corpus.edges, corpus.fingerprint)
    np.testing.assert_allclose(written.user_graph_emb, again.user_graph_emb, rtol=0, atol=1e-5)


def test_batching_fields_are_checked_and_reach_the_cli():
    from stage2_graph import ConfigError, Stage2Config
    from stage2_graph.run import config_from_argv

    base = {"corpus": "c", "cache_dir": "d"}
    with pytest.raises(ConfigError, match="'trainer.fanouts': must give one fan-out per layer"):
        Stage2Config.from_dict({**base, "trainer": {"batching": "neighbor", "fanouts": [10]}})
    with pytest.raises(ConfigError, match="'trainer.fanouts': must hold positive counts or -1"):
        Stage2Config.from_dict({**base, "trainer": {"batching": "neighbor", "fanouts": [10, 0]}})
    with pytest.raises(ConfigError, match="'trainer.devices': more than one process needs trainer.batching"):
        Stage2Config.from_dict({**base, "trainer": {"devices": "2"}})
    cfg, _ = config_from_argv(
        [
            "--corpus",
            "c",
            "--cache",
            "d",
            "--batching",
            "neighbor",
            "--fanouts",
            "-1",
            "5",
            "--batch-size",
            "64",
            "--strategy",
            "ddp_spawn",
            "--inference",
            "full",
        ]
    )
    trainer = cfg.trainer
    assert (trainer.batching, trainer.fanouts, trainer.batch_size) == ("neighbor", (-1, 5), 64)
    assert (trainer.strategy, trainer.inference) == ("ddp_spawn", "full")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_limit_allocator_caching_applies_on_linux_and_is_idempotent():
    from mmga_common.allocator import limit_allocator_caching

    assert limit_allocator_caching() is True
    assert limit_allocator_caching() is True


_MEMORY_SCRIPT = """
import json, sys
from pathlib import Path
import torch
from stage2_graph import GraphInputs, MaskingDataset
from stage2_graph import minibatch
from stage2_graph.config import ModelConfig, ObjectiveConfig, OptimConfig
from stage2_graph.system import Stage2System

torch.set_num_threads(1)
if sys.argv[1] == "off":
    minibatch.limit_allocator_caching = lambda *a, **k: False
num_nodes, num_edges = 10_000, 100_000
g = torch.Generator().manual_seed(0)
a, b = torch.randint(num_nodes, (2, num_edges), generator=g)
keys = torch.unique((torch.minimum(a, b) * num_nodes + torch.maximum(a, b))[a != b])
edges = torch.stack([keys // num_nodes, keys % num_nodes], 1)  # u < v, unique, as the corpus gives them
masks = [torch.rand(num_nodes, generator=g) > 0.1 for _ in range(2)]
inputs = GraphInputs(
    features=torch.randn(num_nodes, 16, generator=g), edges=edges, fingerprint="memory",
    modalities=tuple(torch.randn(num_nodes, 64, generator=g) * m[:, None] for m in masks),
    modality_masks=tuple(masks),
)
system = Stage2System(inputs, ModelConfig(), ObjectiveConfig(), OptimConfig())
dataset = MaskingDataset(num_nodes, system.structure.edge_pairs, seed=0)
optimizer = system.configure_optimizers()
rss, epoch = [], 0
while len(rss) < 200:
    for batch in minibatch.NeighborBatches(system.structure, dataset, [10, 10], 1024, epoch=epoch):
        optimizer.zero_grad()
        system.compute_losses(batch)["loss"].backward()
        optimizer.step()
        status = Path("/proc/self/status").read_text().splitlines()
        rss.append(next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024)
        if len(rss) == 200:
            break
    epoch += 1
print(json.dumps(rss))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sets glibc's mallopt")
def test_minibatch_training_memory_levels_off_over_200_steps():
    """200 mini-batch steps (10 epochs of 20 batches of varying size, 10^4 nodes, 10^5 edges) in a fresh
    process: with ``limit_allocator_caching`` the resident set stops growing (issue 23)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, "on"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    ).stdout
    rss = json.loads(out.strip().splitlines()[-1])
    assert len(rss) == 200
    growth = rss[-1] - rss[99]
    assert growth < 50, f"resident set grew {growth:.0f} MiB over steps 100-200: {rss[::20]}"
