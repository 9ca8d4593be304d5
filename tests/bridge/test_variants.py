"""The variant registry: baselines and ablations differ from MMGA in exactly the fields they name; a bad stage
override fails before any work; the report rows and the edge diagnostic's label fallback."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.alternate import build_parser
from bridge.evaluation.rows import cold_edges, compared_rows, report_rows, section_rows
from bridge.report.diagnostics import edge_topics
from bridge.rounds import stages
from bridge.rounds.config import BridgeConfig, build_config
from bridge.rounds.runner import run_bridge
from bridge.runfolder.paths import RunPaths
from bridge.variants import ABLATIONS, REGISTRY, Variant, ablation_names, run_variants
from corpus import load_corpus
from corpus.synthetic import TRUTH_FILE
from mmga_common.config import ConfigError
from tests.bridge.bridge_tiny import resolve_stage


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _resolve(name: str, stage: str, round_idx: int = 1, tmp: Path = Path("/tmp/x")):
    cfg = BridgeConfig(seed=0)
    paths = RunPaths(tmp).for_seed(3)
    return _flat(resolve_stage(stage, cfg, paths, tmp / "corpus", name, round_idx, None).to_dict())


@pytest.mark.parametrize("name", sorted(set(REGISTRY) - {"mmga", "graph_only"}))
def test_each_variant_differs_from_mmga_exactly_where_it_says(name):
    spec = REGISTRY[name]
    for stage in spec.stages:
        mmga, other = _resolve("mmga", stage), _resolve(name, stage)
        diff = {k for k in mmga if mmga[k] != other[k] and not k.endswith(("out_dir", "cache_dir"))}
        overrides = _flat(stages.nest((spec.stage1 if stage == "stage1" else spec.stage2) or {}))
        named = set(overrides)
        if stage == "stage1" and not spec.feedback:
            named.add("edge_weight_round")  # feedback off: no edge weights read in round 1
        if stage == "stage2" and spec.has_stage1:
            for modality in ("text", "image"):
                head = _resolve(name, "stage1")[f"model.{modality}_head_dim"]
                skip = f"model.{modality}_skip_last"
                if head != _resolve("mmga", "stage1")[f"model.{modality}_head_dim"]:
                    named.add(skip)  # follows the variant's own graph head (skip_graph_head)
                elif skip not in named:
                    assert other[skip] == head  # the default: stage 2 leaves the head out
        assert diff <= named, (stage, diff - named)  # nothing changed that the variant does not name
        # ... and every field it names holds the variant's value (an override that is dropped fails here)
        for key, value in overrides.items():
            expected = list(value) if isinstance(value, tuple) else value
            assert other[key] == expected, (stage, key)


def test_round_seeds_and_feedback():
    s1 = _resolve("mmga", "stage1", round_idx=2)
    assert s1["seed"] == 3 + 2 * stages.ROUND_SEED_STRIDE and s1["edge_weight_round"] == 1
    assert _resolve("abl_no_feedback", "stage1", round_idx=2)["edge_weight_round"] is None
    assert _resolve("abl_no_gcl", "stage1")["losses.gcl_image_weight"] == 0.0
    assert _resolve("abl_uniform_gate", "stage2")["gate"] == "uniform"
    assert _resolve("abl_additive_gate", "stage2")["model.gate_form"] == "additive"
    assert _resolve("abl_x_only_inputs", "stage2")["model.node_inputs"] == ["stats", "degree"]
    assert set(ABLATIONS) == {
        "abl_no_gcl",
        "abl_no_feedback",
        "abl_stage1_restarts",
        "abl_stage2_restarts",
        "abl_uniform_gate",
        "abl_additive_gate",
        "abl_stage2_reads_head",
        "abl_x_only_inputs",
    }
    assert _resolve("no_align", "stage2")["gate"] == "uniform"
    with pytest.raises(ValueError, match="no stage 1"):
        _resolve("graph_only", "stage1")


def test_a_new_option_is_an_ablation_in_one_line(monkeypatch):
    extra = Variant(
        "abl_two_layers", "MMGA with two layers", stage2={**REGISTRY["mmga"].stage2, "model.num_layers": 3}
    )
    monkeypatch.setitem(ABLATIONS, extra.name, extra)  # one line in ABLATIONS ...
    monkeypatch.setitem(REGISTRY, extra.name, extra)  # (the registry is built from it at import)
    assert extra.name in [v.name for v in run_variants(False, True)]  # ... trains it with --ablations
    assert extra.name in [r.name for r in report_rows(2, ablations=True)]  # ... and reports it
    assert _resolve("abl_two_layers", "stage2")["model.num_layers"] == 3


def test_rows_and_compared_rows():
    names = [r.name for r in report_rows(3, baselines=True, ablations=True)]
    assert names[:8] == [
        "stats_x",
        "image_only",
        "text_only",
        "graph_only",
        "no_align",
        "frozen",
        "peer_sgc",
        "peer_frozen_sgc",
    ]
    assert set(ABLATIONS) <= set(names)
    rows = report_rows(3, baselines=True, ablations=True)
    assert compared_rows(rows)[:3] == ("no_align", "peer_sgc", "peer_frozen_sgc")
    assert compared_rows(rows)[-len(ABLATIONS) :] == tuple(ABLATIONS)
    assert [v.name for v in run_variants(False, False)] == ["mmga"]
    assert [r.name for r in report_rows(1, baselines=False)] == [
        "stats_x",
        "mmga_round_0",
        "mmga_graph",
        "mmga_text",
        "mmga_image",
    ]


def test_sections_pair_each_mmga_row_with_its_peers():
    rows = report_rows(2, baselines=True, finetune=True, encoder_peers=True)
    sections = {spec.name: (mmga, compared) for spec, mmga, compared in section_rows(rows)}
    assert sections["probe"][0] == "mmga_round_1"
    assert sections["finetuned"] == (
        "mmga_finetuned",
        ("scratch_finetuned", "peer_gcn", "peer_gatv2", "peer_cs", "peer_frozen_gcn", "peer_frozen_sgc"),
    )
    assert sections["encoders_sgc"] == ("mmga_sgc", ("peer_sgc", "peer_frozen_sgc"))
    assert sections["encoders_gcn"] == ("mmga_gcn", ("peer_gcn", "peer_frozen_gcn"))
    assert sections["cold_start"] == ("mmga_cold", ("no_align_cold", "frozen_cold"))
    assert sections["cold_start_isolated"] == (
        "mmga_cold_isolated",
        ("no_align_cold_isolated", "frozen_cold"),
    )
    by_name = {r.name: r for r in rows}
    # the fine-tuned pair differs only by its initial weights; the frozen rows are evaluated once
    a, b = by_name["mmga_finetuned"], by_name["scratch_finetuned"]
    assert (a.variant, a.round, a.parts, a.method) == (b.variant, b.round, b.parts, b.method)
    assert (a.init, b.init) == ("pretrained", "scratch")
    assert by_name["peer_frozen_gcn"].once and not by_name["peer_gcn"].once
    # a peer over MMGA's encoders differs from the peer only in the variant its features come from
    for method in ("sgc", "gcn"):
        ours, peer = by_name[f"mmga_{method}"], by_name[f"peer_{method}"]
        assert (ours.variant, peer.variant) == ("mmga", "no_align")
        assert (ours.round, ours.parts, ours.method) == (peer.round, peer.parts, method)
        assert ours.spec() == {**peer.spec(), "name": ours.name, "variant": "mmga"}
    assert not {"mmga_sgc", "mmga_gcn"} & {
        r.name for r in report_rows(2, baselines=False, encoder_peers=True)
    }
    # the two cold-start sections differ only in whose edges are removed
    for name in ("mmga", "no_align"):
        cold, isolated = by_name[f"{name}_cold"], by_name[f"{name}_cold_isolated"]
        assert (cold.variant, cold.round, cold.parts, cold.method) == (
            isolated.variant,
            isolated.round,
            isolated.parts,
            isolated.method,
        )
        assert cold.cold and isolated.cold and isolated.isolated and not cold.isolated
        assert isolated.spec() == {**cold.spec(), "name": isolated.name, "isolated": True}
    assert "finetuned" not in {s.name for s, _, _ in section_rows(report_rows(2, finetune=False))}
    # no_align after every round but the last (the rounds plot), never compared
    assert [r.name for r in rows if r.group == "baseline_round"] == ["no_align_round_0"]
    assert all(not n.startswith("no_align_round") for _, _, c in section_rows(rows) for n in c)


def test_the_frozen_variant_runs_round_0_of_the_first_seed_only():
    from bridge.rounds.schedule import build_chains

    frozen = REGISTRY["frozen"]
    assert frozen.stages == ("stage1",) and not frozen.embeddable and frozen.once
    chains = build_chains((3, 4), (REGISTRY["mmga"], frozen), rounds=3)
    assert [(c.seed, c.variant.name, list(c.steps)) for c in chains if c.variant.name == "frozen"] == [
        (3, "frozen", [(0, "stage1")])
    ]
    frozen_cfg = _resolve("frozen", "stage1")
    assert frozen_cfg["trainer.max_steps"] == 0
    assert (frozen_cfg["model.text_model"], frozen_cfg["model.text_pooling"]) == ("minilm", "mean")
    # the user's frozen encoders win over the default, and a bridge-set field is refused there too
    own = resolve_stage(
        "stage1",
        BridgeConfig(frozen={"model": {"text_model": "tiny"}}),
        RunPaths(Path("/tmp/x")).for_seed(0),
        Path("c"),
        "frozen",
    )
    assert own.model.text_model == "tiny" and own.trainer.max_steps == 0
    with pytest.raises(ConfigError, match="stage1.seed"):
        stages.check_stage_configs(BridgeConfig(frozen={"seed": 3}))


def test_every_stage1_run_shares_the_runs_text_states_folder(tmp_path):
    for seed, variant, round_idx in ((0, "mmga", 0), (3, "no_align", 2), (1, "frozen", 0)):
        paths = RunPaths(tmp_path).for_seed(seed)
        cfg = resolve_stage("stage1", BridgeConfig(), paths, tmp_path / "c", variant, round_idx)
        assert cfg.data.text_states_dir == tmp_path / "text_states" == RunPaths(tmp_path).text_states_dir
    with pytest.raises(ConfigError, match="stage1.data.text_states_dir"):
        stages.check_stage_configs(BridgeConfig(stage1={"data": {"text_states_dir": "/elsewhere"}}))


def test_cold_edges_drop_every_edge_that_touches_a_test_user():
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [1, 3]])
    splits = np.array([0, 1, 2, 0])
    np.testing.assert_array_equal(cold_edges(edges, splits), [[0, 1], [3, 0], [1, 3]])


@pytest.mark.parametrize(
    "stage,overrides,message",
    [
        ("stage2", {"model": {"hidden_dimm": 8}}, "field 'model.hidden_dimm': unknown field"),
        ("stage1", {"optim": {"lr": "fast"}}, "field 'optim.lr': expected float, got 'fast'"),
        ("stage1", {"trainer": {"max_stepz": 5}}, r"field 'trainer.max_stepz': unknown field \(did you mean"),
    ],
)
def test_a_bad_stage_override_fails_before_any_work(tmp_path, stage, overrides, message):
    cfg = BridgeConfig(rounds=1, seeds=1, **{stage: overrides})
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        run_bridge(cfg, tmp_path / "run")
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "run" / "corpus").exists()  # nothing was generated


def test_a_bad_stage_override_on_the_command_line_names_the_key(tmp_path, capsys):
    from bridge.alternate import main

    start = time.perf_counter()
    assert main(["--run-dir", str(tmp_path / "run"), "--stage1", "losses.gcl_wieght=0.5"]) == 2
    err = capsys.readouterr().err
    assert "field 'losses.gcl_wieght': unknown field" in err and "section stage1" in err
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "run" / "corpus").exists()


def test_edge_diagnostic_falls_back_to_labels(tiny_corpus, tmp_path):
    with_truth = load_corpus(tiny_corpus)
    judged = edge_topics(with_truth)
    rows, same, source = judged.rows, judged.same, judged.source
    assert source == "generator truth" and len(rows) == with_truth.num_edges
    copy = tmp_path / "c"
    shutil.copytree(tiny_corpus, copy)
    (copy / TRUTH_FILE).unlink()
    plain = load_corpus(copy)
    judged = edge_topics(plain)
    rows, same, source = judged.rows, judged.same, judged.source
    assert source.startswith("labels of labelled users")
    lab = plain.labels
    expected = np.flatnonzero((lab[plain.edges[:, 0]] >= 0) & (lab[plain.edges[:, 1]] >= 0))
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_array_equal(same, lab[plain.edges[rows, 0]] == lab[plain.edges[rows, 1]])


def test_presets_are_files_and_an_unknown_one_is_named(tmp_path):
    paths = RunPaths(tmp_path).for_seed(0)
    real = resolve_stage("stage1", BridgeConfig(preset="real"), paths, tmp_path, "mmga", 0, None)
    assert real.model.text_model == "minilm" and real.optim.lr == 5e-5
    default = resolve_stage("stage1", BridgeConfig(), paths, tmp_path, "mmga", 0, None)
    assert (default.model.text_model, default.model.text_tuned_layers) == ("minilm", 0)
    assert default.model.text_head_dim > 0 and default.losses.gcl_form == "infonce"
    assert default.losses.gcl_soft_targets == 0.5  # common-neighbour targets (measured: docs/stage1.md)
    assert default.trainer.max_steps == 150
    # the image side's graph head over the packaged frozen trunk, trained by the image GCL
    assert default.model.image_model == "efficientnet-lite0" and default.model.image_head_dim > 0
    assert default.losses.gcl_image_weight > 0
    # no_align: the same encoders without the graph-contrastive terms (its graph heads are then never built)
    no_align = resolve_stage("stage1", BridgeConfig(), paths, tmp_path, "no_align", 0, None)
    assert no_align.losses.gcl_text_weight == no_align.losses.gcl_image_weight == 0
    assert no_align.model.text_head_dim == no_align.model.image_head_dim == 0
    heads = {"text_head_dim": default.model.text_head_dim, "image_head_dim": default.model.image_head_dim}
    assert dataclasses.replace(no_align.model, **heads) == default.model
    frozen = resolve_stage("stage1", BridgeConfig(), paths, tmp_path, "frozen", 0, None)
    assert frozen.model.text_head_dim == frozen.model.image_head_dim == 0
    tiny = resolve_stage("stage1", BridgeConfig(preset="tiny"), paths, tmp_path, "mmga", 0, None)
    assert tiny.model.text_model == "tiny" and tiny.losses.lm_weight == 1.0
    with pytest.raises(
        ConfigError, match="unknown preset 'huge'; the presets are default, pretrained, real, tiny"
    ):
        resolve_stage("stage1", BridgeConfig(preset="huge"), paths, tmp_path, "mmga", 0, None)


def test_skip_graph_head_leaves_each_variants_head_columns_out_of_stage2():
    reading = stages.check_stage_configs(BridgeConfig(skip_graph_head=False))
    assert (
        reading.template("mmga", "stage2").model.text_skip_last == 0
    )  # the paper's form: stage 2 reads it all
    skipping = stages.check_stage_configs(BridgeConfig(ablations=("abl_stage2_reads_head",)))  # the default
    head = skipping.template("mmga", "stage1").model.text_head_dim
    assert head > 0 and skipping.template("mmga", "stage2").model.text_skip_last == head
    # ... while R^G's content readout keeps the head's columns (the default preset)
    assert skipping.template("mmga", "stage2").model.readout_text == "whole"
    assert skipping.template("no_align", "stage2").model.text_skip_last == 0  # no head: nothing left out
    assert skipping.template("graph_only", "stage2").model.text_skip_last == 0
    # the ablation that reads the heads, whatever the bridge's switch says
    assert skipping.template("abl_stage2_reads_head", "stage2").model.text_skip_last == 0
    assert skipping.template("abl_stage2_reads_head", "stage2").model.image_skip_last == 0
    image_head = skipping.template("mmga", "stage1").model.image_head_dim
    assert image_head > 0 and skipping.template("mmga", "stage2").model.image_skip_last == image_head
    assert skipping.template("mmga", "stage2").model.readout_image == "whole"
    told = stages.check_stage_configs(
        BridgeConfig(skip_graph_head=True, stage2={"model": {"text_skip_last": 0}})
    )
    assert told.template("mmga", "stage2").model.text_skip_last == 0  # an explicit value wins


def test_config_help_names_every_section_a_file_may_hold(tmp_path):
    from bridge.rounds.config import SECTIONS

    action = next(a for a in build_parser()._actions if "--config" in a.option_strings)
    text = " ".join(action.help.split())
    assert all(name in text for name in SECTIONS), text
    # the sections the help once left out are accepted from a file, and the command line wins over them
    path = tmp_path / "run.yaml"
    path.write_text("seeds: 2\nencoder_peers: true\nfinetune: false\nskip_graph_head: false\nfrozen: {}\n")
    cfg = build_config(path, finetune=True)
    assert (cfg.seeds, cfg.encoder_peers, cfg.finetune, cfg.skip_graph_head) == (2, True, True, False)
    path.write_text("seedz: 2\n")
    with pytest.raises(ConfigError, match=r"unknown section \(known: rounds, seed, seeds"):
        build_config(path)


def test_ablations_are_chosen_all_or_by_name(tmp_path):
    from bridge.alternate import build_parser
    from bridge.rounds.config import build_config

    assert ablation_names(True) == tuple(ABLATIONS) and ablation_names(False) == ()
    # named ones come in the registry's order, whatever order they were given in
    assert ablation_names(["abl_stage1_restarts", "abl_no_feedback"]) == (
        "abl_no_feedback",
        "abl_stage1_restarts",
    )
    assert [v.name for v in run_variants(False, ["abl_stage1_restarts"])] == ["mmga", "abl_stage1_restarts"]
    assert [
        r.name for r in report_rows(2, baselines=False, ablations=("abl_no_gcl",)) if r.group == "ablation"
    ] == ["abl_no_gcl"]
    with pytest.raises(ValueError, match=r"unknown ablation\(s\) abl_nope; expected some of abl_no_gcl, "):
        ablation_names(["abl_nope"])

    # the command line: --ablations alone is every one, --ablations NAME ... the named ones, absent none
    parse = build_parser().parse_args
    assert parse(["--ablations"]).ablations == [] and parse([]).ablations is None
    assert parse(["--ablations", "abl_no_feedback", "abl_no_gcl"]).ablations == [
        "abl_no_feedback",
        "abl_no_gcl",
    ]
    assert build_config(ablations=True).ablations == tuple(ABLATIONS)
    assert build_config(ablations=["abl_no_feedback"]).ablations == ("abl_no_feedback",)
    assert build_config().ablations == () and BridgeConfig(ablations=True).ablations == tuple(ABLATIONS)

    # a config file: true, or a list of names; an unknown name is refused with its file, line and field
    good = tmp_path / "good.yaml"
    good.write_text("rounds: 2\nablations: true\n")
    assert build_config(good).ablations == tuple(ABLATIONS)
    good.write_text("ablations: [abl_uniform_gate]\n")
    assert build_config(good).ablations == ("abl_uniform_gate",)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: 2\nablations: [abl_no_feedbak]\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml, line 2, field 'ablations': unknown ablation\(s\) abl_no_feedbak"
    ):
        build_config(bad)
    with pytest.raises(ConfigError, match=r"field 'ablations': unknown ablation"):
        BridgeConfig(ablations=("abl_nope",))


def test_encoder_peers_switch_from_file_and_command_line(tmp_path):
    assert not BridgeConfig().encoder_peers  # off by default (their cost: docs/bridge.md)
    conf = tmp_path / "bridge.yaml"
    conf.write_text("encoder_peers: true\n")
    assert build_config(file=conf).encoder_peers
    assert not build_config(file=conf, encoder_peers=False).encoder_peers  # the command line wins
    parser = build_parser()  # the flag: unset (the file or the default decides), on, off
    assert [
        parser.parse_args(a).encoder_peers for a in ([], ["--encoder-peers"], ["--no-encoder-peers"])
    ] == [
        None,
        True,
        False,
    ]
    off = [r.name for r in report_rows(2, baselines=True, finetune=True, encoder_peers=False)]
    on = [r.name for r in report_rows(2, baselines=True, finetune=True, encoder_peers=True)]
    assert sorted(set(on) - set(off)) == ["mmga_gcn", "mmga_sgc"]
    assert {"encoders_sgc", "encoders_gcn"}.isdisjoint(
        s.name for s, _, _ in section_rows(report_rows(2, finetune=True, encoder_peers=False))
    )
