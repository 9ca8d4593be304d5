"""A 2-round bridge run on the tiny generated corpus with tiny stage settings, its resume behaviour, and
the command line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import corpus.reader as corpus_reader
from bridge.alternate import main
from bridge.evaluation import networks as networks_mod
from bridge.rounds import evaluate as evaluate_mod
from bridge.rounds import stages
from bridge.rounds.config import BridgeConfig
from bridge.rounds.context import BridgeResult, BridgeRun
from bridge.rounds.corpus import prepare_corpus
from bridge.rounds.runner import run_bridge
from bridge.runfolder.manifest import Manifest, ManifestConflict
from bridge.runfolder.paths import RunPaths
from mmga_common.config import ConfigError
from stage1_encoders import encoders as lower_states
from tests.bridge.bridge_tiny import TINY_EVAL, TINY_STAGE2, tiny_bridge_config

REPO = Path(__file__).resolve().parents[2]


def tiny_config(corpus: Path | None, **kw) -> BridgeConfig:
    return tiny_bridge_config(corpus, **{"rounds": 2, "finetune": True, "encoder_peers": True, **kw})


class StageSpy:
    """Counts the calls of both stage entries (keyed by variant/round/stage) and can fail one of them once."""

    def __init__(self, monkeypatch, fail_once: str | None = None):
        self.calls: list[str] = []
        self.corpora: list = []  # the Corpus object each call got
        self.fail_once = fail_once
        self.prepared: list[tuple[Path, int]] = []  # (text states folder, stage calls before it)
        self.states_kept: list[int] = []  # caption states the process keeps after each stage-1 run
        self.states_at_stage2: list[int] = []  # and as each stage-2 run starts
        self._run1, self._run2 = stages.run_stage1, stages.run_stage2
        self._prepare = stages.prepare_text_states
        monkeypatch.setattr(stages, "run_stage1", self.stage1)
        monkeypatch.setattr(stages, "run_stage2", self.stage2)
        monkeypatch.setattr(stages, "prepare_text_states", self.prepare)

    def prepare(self, cfg, corpus, threads, progress=None, image_progress=None):
        self.prepared.append((Path(cfg.data.text_states_dir), len(self.calls)))
        return self._prepare(cfg, corpus, threads, progress, image_progress)

    def _key(self, cfg, stage: str) -> str:
        variant_dir = Path(cfg.cache_dir).parent
        return f"{variant_dir.parent.name}/{variant_dir.name}/round_{cfg.round}/{stage}"

    def stage1(self, cfg, corpus=None):
        self.calls.append(self._key(cfg, "stage1"))
        self.corpora.append(corpus)
        try:
            return self._run1(cfg, corpus)
        finally:
            self.states_kept.append(len(lower_states._LOWER_STATES_MEMO))

    def stage2(self, cfg, corpus=None):
        self.states_at_stage2.append(len(lower_states._LOWER_STATES_MEMO))
        key = self._key(cfg, "stage2")
        self.calls.append(key)
        self.corpora.append(corpus)
        if key == self.fail_once:
            self.fail_once = None
            raise KeyboardInterrupt("simulated Ctrl-C inside stage 2")
        return self._run2(cfg, corpus)


@pytest.fixture(scope="module")
def reference_run(tiny_corpus, tmp_path_factory):
    """One uninterrupted 2-round run with baselines (shared by the checks below)."""
    mp = pytest.MonkeyPatch()
    spy = StageSpy(mp)
    loads = []
    real_load = corpus_reader.load_corpus
    mp.setattr(corpus_reader, "load_corpus", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    real_job = evaluate_mod._evaluate_job
    mp.setattr(
        evaluate_mod,
        "_evaluate_job",
        lambda row, *a: (
            REFERENCE_EVAL_ORDER.append(row.method)
            or REFERENCE_STATES_AT_EVAL.append(len(lower_states._LOWER_STATES_MEMO))
            or real_job(row, *a)
        ),
    )
    real_device = networks_mod.resolve_torch_device
    mp.setattr(networks_mod, "resolve_torch_device", lambda d: REFERENCE_DEVICES.append(d) or real_device(d))
    run_dir = tmp_path_factory.mktemp("bridge_ref")
    try:
        result = run_bridge(tiny_config(tiny_corpus), run_dir)
    finally:
        mp.undo()
    REFERENCE_LOADS[:] = [loads, spy.corpora]
    REFERENCE_PREPARED[:] = spy.prepared
    REFERENCE_STATES_KEPT[:] = spy.states_kept
    REFERENCE_STATES_AT_STAGE2[:] = spy.states_at_stage2
    return result, spy.calls, run_dir


REFERENCE_LOADS: list = []  # (load_corpus calls, the Corpus each stage call got) of the reference run
REFERENCE_PREPARED: list = []  # the reference run's prepare_text_states calls (StageSpy.prepared)
REFERENCE_EVAL_ORDER: list = []  # the method of each evaluation the reference run started, in order
REFERENCE_STATES_AT_EVAL: list = []  # caption states the process kept as each evaluation started
REFERENCE_STATES_KEPT: list = []  # caption states the process kept after each stage-1 run
REFERENCE_STATES_AT_STAGE2: list = []  # caption states the process kept as each stage-2 run started
REFERENCE_DEVICES: list = []  # the device each task of a network evaluation asked for (eval.device)


def test_the_caption_states_are_freed_after_each_stage1_run(reference_run):
    """Stage 1 keeps the caption states for a later run in the process; the bridge frees them once each stage-1
    run returned (``stages.release_text_states``; the next one loads the file): stage 2 and the evaluations do not
    read them (3 GB at the paper's size)."""
    assert len(REFERENCE_STATES_KEPT) > 1 and set(REFERENCE_STATES_KEPT) == {1}  # kept by stage 1 itself
    assert REFERENCE_STATES_AT_STAGE2 and set(REFERENCE_STATES_AT_STAGE2) == {0}
    assert REFERENCE_STATES_AT_EVAL and set(REFERENCE_STATES_AT_EVAL) == {0}


def test_the_costliest_evaluations_start_first(reference_run):
    costs = [evaluate_mod.EVAL_COST.get(m, 1.0) for m in REFERENCE_EVAL_ORDER]
    assert len(costs) > 10 and costs == sorted(costs, reverse=True) and costs[0] > costs[-1]
    assert REFERENCE_EVAL_ORDER[0] == "gatv2"


def test_every_network_row_trains_on_the_configured_evaluation_device(reference_run):
    """``eval.device`` (default ``auto``) reaches every network trained end to end, the GNN peers and the fine-tuned
    rows alike, once per task (the networks' own default is the CPU)."""
    networks = [m for m in REFERENCE_EVAL_ORDER if m in ("gcn", "gatv2", "finetune")]
    assert {"gcn", "gatv2", "finetune"} <= set(networks)
    assert REFERENCE_DEVICES == ["auto"] * (2 * len(networks))


def test_the_caption_states_are_computed_once_before_any_stage(reference_run):
    """The frozen text layers' states are computed in the main process, with every job's threads, before the
    first stage; every stage-1 run then loads the one stored file."""
    _, calls, run_dir = reference_run
    states = RunPaths(run_dir).text_states_dir
    assert REFERENCE_PREPARED == [(states, 0)]
    assert len(list(states.glob("text_states-*.pt"))) == 1
    assert calls  # and the stages ran after it


def test_two_round_run_writes_report_and_wires_the_rounds(reference_run):
    result, calls, run_dir = reference_run
    paths = RunPaths(run_dir)
    assert sorted(calls) == sorted(
        [f"seed_0/{v}/round_{r}/stage1" for v in ("mmga", "no_align") for r in (0, 1)]
        + [f"seed_0/{v}/round_{r}/stage2" for v in ("mmga", "no_align", "graph_only") for r in (0, 1)]
        + ["seed_0/frozen/round_0/stage1"]  # the frozen encoders: once, round 0, no training, no stage 2
    )
    # report files
    for name in (
        "report.md",
        "metrics.json",
        "metrics_by_round.png",
        "loss_curves.png",
        "embedding_tsne.png",
        "margins.png",
        "confusion.png",
        "timings.md",
    ):
        assert (paths.report_dir / name).stat().st_size > 0, name
    metrics = json.loads((paths.report_dir / "metrics.json").read_text())
    assert set(metrics["rows"]) == {
        "stats_x",
        "image_only",
        "text_only",
        "graph_only",
        "no_align",
        "peer_sgc",
        "peer_gcn",
        "mmga_round_0",
        "mmga_round_1",
        "mmga_graph",
        "mmga_text",
        "mmga_image",
        "frozen",
        "peer_frozen_sgc",
        "peer_frozen_gcn",
        "peer_gatv2",
        "peer_cs",
        "mmga_finetuned",
        "scratch_finetuned",
        "mmga_cold",
        "no_align_cold",
        "frozen_cold",
        "mmga_cold_isolated",
        "no_align_cold_isolated",
        "mmga_sgc",
        "mmga_gcn",
        "no_align_round_0",
    }
    assert metrics["rows"]["no_align_round_0"]["round"] == 0 and metrics["rows"]["no_align"]["round"] == 1
    once = {"stats_x", "frozen", "peer_frozen_sgc", "peer_frozen_gcn", "frozen_cold"}
    for name, row in metrics["rows"].items():
        assert 0.0 <= row["topic"]["macro_f1"]["mean"] <= 1.0
        assert row["fans"]["mae"]["mean"] > 0 and len(row["fans"]["mae"]["values"]) == 1  # one training seed
        (per_seed,) = row["per_seed"].values()  # X under "None", every other row under its training seed
        assert list(row["per_seed"]) == (["None"] if name in once else ["0"])
        networks = row.get("method") in ("gcn", "gatv2", "finetune")  # one network seed; the heads have two
        assert len(per_seed["fans"]["mae"]["values"]) == (1 if networks else 2)
        assert row["fans"]["mae"]["mean"] == per_seed["fans"]["mae"]["mean"]
    assert metrics["rows"]["mmga_round_1"]["dim"] == (
        metrics["rows"]["mmga_graph"]["dim"]
        + metrics["rows"]["mmga_text"]["dim"]
        + metrics["rows"]["mmga_image"]["dim"]
    )
    assert result.metrics["rows"] == metrics["rows"]
    diag = metrics["edge_weight_diagnostics"]  # the tiny corpus is synthetic: the truth file is there
    assert set(diag["variants"]) == {"no_align", "graph_only", "mmga"}
    assert diag["source"] == "generator truth"
    assert all(d["auc_same_topic"]["mean"] == 0.5 for d in diag["variants"]["no_align"])  # uniform weights
    assert all(0.0 <= d["auc_same_topic"]["mean"] <= 1.0 for d in diag["variants"]["mmga"])
    assert [c["against"] for c in metrics["comparison"]][:3] == ["no_align", "peer_sgc", "peer_frozen_sgc"]
    assert {c["section"] for c in metrics["comparison"]} == {
        "probe",
        "finetuned",
        "encoders_sgc",
        "encoders_gcn",
        "cold_start",
        "cold_start_isolated",
    }
    assert {c["mmga"] for c in metrics["comparison"]} == {
        "mmga_round_1",
        "mmga_finetuned",
        "mmga_sgc",
        "mmga_gcn",
        "mmga_cold",
        "mmga_cold_isolated",
    }
    for section in (
        "### Linear probe on frozen embeddings\n",
        "### Fine-tuned\n",
        "### The same SGC over MMGA's encoders\n",
        "### The same GCN over MMGA's encoders\n",
        "### Cold start\n",
        "### Cold start, heads trained without edges\n",
    ):
        assert (paths.report_dir / "report.md").read_text().count(section) == 2  # results and comparison
    for c in metrics["comparison"]:  # one training seed: the sign of the margin decides
        m = c["topic_macro_f1"]["margin"]
        assert c["topic_macro_f1"]["verdict"] == (
            "ahead" if m > 0 else "behind" if m < 0 else "not measurably"
        )
    assert (
        metrics["rows"]["peer_sgc"]["dim"]
        == (max(TINY_EVAL.sgc_hops) + 1) * metrics["rows"]["peer_gcn"]["dim"]
    )
    # the peers over MMGA's encoders read MMGA's own blocks [R^T || R^I || X]
    dims = {name: row["dim"] for name, row in metrics["rows"].items()}
    assert dims["mmga_gcn"] == dims["mmga_text"] + dims["mmga_image"] + dims["stats_x"]
    assert dims["mmga_sgc"] == (max(TINY_EVAL.sgc_hops) + 1) * dims["mmga_gcn"]
    report = (paths.report_dir / "report.md").read_text()
    assert "| MMGA after round 1 (`mmga_round_1`) |" in report and "## Model card" in report
    assert "MMGA's stage 2" in report or "MMGA's stage-2 GNN" in report  # which columns of R^T it reads
    assert "`mmga_sgc` / `mmga_gcn`: the same SGC / GCN over MMGA's last-round encoders" in report
    assert "(the GCN and GATv2 peers, `mmga_gcn`, `mmga_finetuned`" in report
    assert "| **this invocation, wall time** |" in (paths.report_dir / "timings.md").read_text()
    assert "## Verdict" in report and "With one training seed no training spread is measured" in report
    # the evaluation metrics in the stages' tracker too (csv, their default): one run holding the report's numbers
    (logged,) = _tracked_rows(paths)
    final = metrics["rows"]["mmga_round_1"]
    assert float(logged["mmga_round_1/topic/macro_f1"]) == pytest.approx(final["topic"]["macro_f1"]["mean"])
    assert float(logged["mmga_round_1/seed_0/fans/mae"]) == pytest.approx(
        final["per_seed"]["0"]["fans"]["mae"]["mean"]
    )
    assert float(logged["stats_x/topic/accuracy"]) == pytest.approx(
        metrics["rows"]["stats_x"]["topic"]["accuracy"]["mean"]
    )

    # the rounds are chained as the issue says (configs as recorded in the manifest)
    manifest = Manifest.load(paths.manifest)

    def cfg(key):
        return manifest.entry(key).config["config"]

    assert cfg("seed_0/mmga/round_0/stage1")["init_checkpoint"] is None
    assert cfg("seed_0/mmga/round_0/stage1")["edge_weight_round"] is None
    assert cfg("seed_0/mmga/round_1/stage1")["edge_weight_round"] == 0
    assert (
        cfg("seed_0/mmga/round_1/stage1")["init_checkpoint"]
        == "$RUN/" + manifest.data["entries"]["seed_0/mmga/round_0/stage1"]["outputs"]["checkpoint"]
    )
    assert (
        cfg("seed_0/mmga/round_1/stage2")["init_checkpoint"]
        == "$RUN/" + manifest.data["entries"]["seed_0/mmga/round_0/stage2"]["outputs"]["checkpoint"]
    )
    assert (
        cfg("seed_0/mmga/round_1/stage2")["cache_dir"]
        == cfg("seed_0/mmga/round_1/stage1")["cache_dir"]
        == "$RUN/seed_0/mmga/cache"
    )
    assert (
        cfg("seed_0/mmga/round_1/stage2")["gate"],
        cfg("seed_0/mmga/round_1/stage2")["use_modalities"],
    ) == (
        "mgate",
        True,
    )
    no_align = cfg("seed_0/no_align/round_1/stage1")
    assert no_align["edge_weight_round"] is None
    assert no_align["losses"]["gcl_image_weight"] == no_align["losses"]["gcl_text_weight"] == 0.0
    assert cfg("seed_0/no_align/round_1/stage2")["gate"] == "uniform"
    assert cfg("seed_0/graph_only/round_1/stage2")["use_modalities"] is False
    # every variant trains the same number of steps
    steps = {
        cfg(f"seed_0/{v}/round_1/stage2")["trainer"]["max_steps"] for v in ("mmga", "no_align", "graph_only")
    }
    assert steps == {3}


def _tracked_rows(paths: RunPaths) -> list[dict[str, str]]:
    """The rows of the evaluation's CSV log (``bridge.report.tracking``); there must be one version of it."""
    (version,) = (paths.tracking_dir / "logs").iterdir()
    with open(version / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_corpus_is_read_once_per_run_and_shared_by_every_stage(reference_run):
    _, calls, _ = reference_run
    loads, corpora = REFERENCE_LOADS
    assert len(calls) == 11  # mmga, no_align, graph_only 2 rounds; frozen's one stage 1; all in this process
    assert corpora[0] is not None and all(c is corpora[0] for c in corpora)  # one object, passed in
    assert (
        len(loads) == 0
    )  # the stages did not read the corpus again (the bridge's own load is in bridge.runner)


def test_a_stage_refuses_a_corpus_of_another_folder(tiny_corpus_loaded, tmp_path):
    from corpus import reuse_or_load

    with pytest.raises(ValueError, match="loaded from .* but the config names"):
        reuse_or_load(tmp_path, tiny_corpus_loaded)
    assert reuse_or_load(tiny_corpus_loaded.root, tiny_corpus_loaded) is tiny_corpus_loaded


def test_rerun_skips_everything_and_detects_changes(reference_run, tiny_corpus, monkeypatch):
    result, _, run_dir = reference_run
    spy = StageSpy(monkeypatch)
    again = run_bridge(tiny_config(tiny_corpus), run_dir)
    assert spy.calls == [] and spy.prepared == []
    assert again.ran == []
    assert again.metrics["rows"] == result.metrics["rows"]
    assert len(_tracked_rows(RunPaths(run_dir))) == 1  # the rerun logged the evaluation again, not twice
    # a changed stage-2 setting is refused with advice, naming what changed
    changed = tiny_config(tiny_corpus, stage2={**TINY_STAGE2, "optim": {"lr": 0.02}})
    with pytest.raises(
        ManifestConflict, match=r"seed_0/mmga/round_0/stage2[\s\S]*optim.lr: 0.005 -> 0.02[\s\S]*--force"
    ):
        run_bridge(changed, run_dir)
    assert spy.calls == []


def test_resume_after_interrupt_skips_completed_work_and_matches(
    reference_run, tiny_corpus, tmp_path, monkeypatch
):
    reference, _, _ = reference_run
    spy = StageSpy(monkeypatch, fail_once="seed_0/mmga/round_1/stage2")
    cfg = tiny_config(tiny_corpus)
    with pytest.raises(KeyboardInterrupt):
        run_bridge(cfg, tmp_path)
    assert spy.calls == [
        "seed_0/mmga/round_0/stage1",
        "seed_0/mmga/round_0/stage2",
        "seed_0/mmga/round_1/stage1",
        "seed_0/mmga/round_1/stage2",
    ]
    spy.calls.clear()
    resumed = run_bridge(cfg, tmp_path)
    assert spy.calls[0] == "seed_0/mmga/round_1/stage2"  # completed work was skipped
    assert "seed_0/mmga/round_0/stage1" not in spy.calls and "seed_0/mmga/round_1/stage1" not in spy.calls
    assert sorted(resumed.skipped)[:3] == [
        "seed_0/mmga/round_0/stage1",
        "seed_0/mmga/round_0/stage2",
        "seed_0/mmga/round_1/stage1",
    ]
    assert (
        len(spy.calls) == 1 + 4 + 2 + 1
    )  # the failed stage, no_align (2 rounds x 2), graph_only (2), frozen
    assert resumed.metrics["rows"] == reference.metrics["rows"]


def test_more_rounds_extend_a_finished_run(reference_run, tiny_corpus, tmp_path, monkeypatch):
    import shutil

    _, _, run_dir = reference_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    spy = StageSpy(monkeypatch)
    result = run_bridge(tiny_config(tiny_corpus, rounds=3, baselines=False), copy)
    assert spy.calls == [
        "seed_0/mmga/round_2/stage1",
        "seed_0/mmga/round_2/stage2",
    ]  # rounds 0 and 1 are reused
    assert "mmga_round_2" in result.metrics["rows"] and result.metrics["rows"]["mmga_graph"]["round"] == 2


def test_force_recomputes_only_what_changed(reference_run, tiny_corpus, tmp_path, monkeypatch):
    import shutil

    _, _, run_dir = reference_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    spy = StageSpy(monkeypatch)
    changed = tiny_config(tiny_corpus, stage2={**TINY_STAGE2, "optim": {"lr": 0.02}}, baselines=False)
    run_bridge(changed, copy, force=True)
    # stage 1 of round 0 is unchanged; stage 2 changed, and round 1 depends on round 0's stage 2 output
    assert spy.calls == [
        "seed_0/mmga/round_0/stage2",
        "seed_0/mmga/round_1/stage1",
        "seed_0/mmga/round_1/stage2",
    ]


def test_generated_corpus_is_made_once(tmp_path):
    cfg = BridgeConfig(
        rounds=1, synthetic={"num_users": 30, "workers": 1, "posts_per_user": 3.0, "avg_degree": 4.0}
    )
    paths = RunPaths(tmp_path)
    manifest = Manifest.load(paths.manifest)
    res = BridgeResult(run_dir=tmp_path, report=tmp_path / "r", metrics={})
    corpus = prepare_corpus(BridgeRun(cfg, paths, manifest, res))
    assert corpus.num_users == 30 and corpus.root == paths.generated_corpus
    mtime = (paths.generated_corpus / "users.csv").stat().st_mtime_ns
    res2 = BridgeResult(run_dir=tmp_path, report=tmp_path / "r", metrics={})
    corpus2 = prepare_corpus(BridgeRun(cfg, paths, Manifest.load(paths.manifest), res2))
    assert res2.skipped == ["corpus/generate"] and corpus2.fingerprint == corpus.fingerprint
    assert (paths.generated_corpus / "users.csv").stat().st_mtime_ns == mtime
    other = BridgeConfig(rounds=1, synthetic={"num_users": 31, "workers": 1})
    with pytest.raises(ManifestConflict, match="num_users: 30 -> 31"):
        prepare_corpus(BridgeRun(other, paths, Manifest.load(paths.manifest), res2))


def test_cli_rejects_bridge_owned_fields(tiny_corpus, tmp_path, capsys):
    code = main(["--corpus", str(tiny_corpus), "--run-dir", str(tmp_path), "--stage1", "round=3"])
    assert code == 2
    assert "the bridge sets" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        from bridge.rounds.config import build_config

        build_config(stage2=["gate"])


def test_script_entry_point_runs_from_a_plain_checkout():
    # `python bridge/alternate.py` must import the repo's packages without an installed project
    out = subprocess.run(
        [sys.executable, "bridge/alternate.py", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "", "PYTHONNOUSERSITE": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert "--rounds" in out.stdout and "--stage1" in out.stdout


def test_two_training_seeds_in_two_workers_match_the_in_process_run(
    reference_run, tiny_corpus, tmp_path, monkeypatch
):
    reference, _, _ = reference_run
    built = []
    real_template = stages.stage_template
    monkeypatch.setattr(
        stages, "stage_template", lambda *a, **k: built.append(a[:3:2]) or real_template(*a, **k)
    )
    cfg = tiny_config(tiny_corpus, rounds=2, seeds=2, baselines=False)
    result = run_bridge(cfg, tmp_path, jobs=2)
    # each (stage, variant) template is built once per run, however many rounds and seeds use it
    assert sorted(built) == [("stage1", "mmga"), ("stage2", "mmga")]
    rows = result.metrics["rows"]
    assert result.metrics["training_seeds"] == [0, 1]
    # seed 0 in a worker process equals seed 0 trained in this process (round 0 is the same in both runs)
    ours, ref = (
        rows["mmga_round_0"]["per_seed"]["0"],
        reference.metrics["rows"]["mmga_round_0"]["per_seed"]["0"],
    )
    assert ours["topic"] == ref["topic"] and ours["fans"] == ref["fans"]
    # seed 1 is another training run, and the row's statistics are over both seeds
    assert rows["mmga_round_0"]["per_seed"]["1"]["fans"] != ours["fans"]
    assert rows["mmga_round_0"]["fans"]["mae"]["values"] == [
        rows["mmga_round_0"]["per_seed"][s]["fans"]["mae"]["mean"] for s in ("0", "1")
    ]
    # a worker's output goes to its stage folder, not to the terminal
    paths = RunPaths(tmp_path)
    log = paths.stage_dir(paths.for_seed(1).stage_key("mmga", 0, "stage2")) / "stage.log"
    assert log.is_file()
    comp = {c["against"]: c for c in result.metrics["comparison"]}
    assert len(comp["stats_x"]["fans_mae"]["margins"]) == 2


def test_loss_curves_come_from_the_log_folders_the_manifest_recorded(reference_run, tmp_path):
    from bridge.report.plots import plot_loss_curves
    from bridge.report.write import _recorded_log_dir

    _, _, run_dir = reference_run
    paths = RunPaths(run_dir)
    manifest = Manifest.load(paths.manifest)
    for r in (0, 1):
        for stage in ("stage1", "stage2"):
            log_dir = _recorded_log_dir(manifest, f"seed_0/mmga/round_{r}/{stage}")
            assert (log_dir / "metrics.csv").is_file(), (r, stage)
    assert (
        "![loss curves (every training seed; seed 0 in full colour)](loss_curves.png)"
        in (paths.report_dir / "report.md").read_text()
    )
    # only the named folders are read: a newer CSV elsewhere does not count, a folder without one draws nothing
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "metrics.csv").write_text("step,train/loss\n0,1.0\n")
    assert not plot_loss_curves({"stage1": [tmp_path, None], "stage2": []}, tmp_path / "a.png")
    assert plot_loss_curves({"stage1": [decoy]}, tmp_path / "b.png")


def test_isolated_cold_rows_embed_every_user_without_edges(reference_run, tiny_corpus_loaded):
    """The cold-start rows' R^G: a test user has no edge in either graph, so its R^G is the same in both sections;
    a train user keeps its edges in the first (its R^G differs from the no-edge one) and has none in the second."""
    from bridge.evaluation.rows import report_rows
    from bridge.rounds.evaluate import cold_graph_embedding, stage2_checkpoint

    _, _, run_dir = reference_run
    paths = RunPaths(run_dir).for_seed(0)
    manifest = Manifest.load(run_dir / "manifest.json", log=None)
    corpus = tiny_corpus_loaded
    rows = {r.name: r for r in report_rows(2, baselines=True, finetune=True)}
    cold, isolated = rows["mmga_cold"], rows["mmga_cold_isolated"]
    checkpoint = stage2_checkpoint(cold, paths, manifest)
    assert checkpoint == stage2_checkpoint(isolated, paths, manifest)
    g_cold = cold_graph_embedding(cold, corpus, paths, checkpoint)
    g_isolated = cold_graph_embedding(isolated, corpus, paths, checkpoint)
    test = corpus.splits == 2
    np.testing.assert_allclose(g_isolated[test], g_cold[test], rtol=1e-5, atol=1e-6)
    linked = np.zeros(len(corpus.splits), dtype=bool)
    linked[corpus.edges[~test[corpus.edges].any(1)].ravel()] = True  # users with an edge in the cold graph
    assert linked.any()
    assert not np.allclose(g_isolated[linked], g_cold[linked], atol=1e-4)
