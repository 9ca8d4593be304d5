"""Tiny stage and evaluation settings for bridge runs in tests (a run takes seconds); shared by the bridge,
embed and reliability tests."""

from bridge.evaluation.config import EvalConfig

# The default preset's structure (every text layer frozen, a graph head, InfoNCE) on a tiny random BERT; the tiny
# ViT instead of the packaged EfficientNet-Lite0 trunk, hence no image graph head and no image GCL (the head's
# plumbing is tested in tests/stage1_encoders/test_image_backbones.py).
TINY_STAGE1 = {
    "model": {
        "image_model": "mmga-vit-tiny",
        "image_head_dim": 0,
        "text_model": "tiny",
        "text_head_dim": 8,
        "text_head_hidden": 16,
        "text_hidden_size": 32,
        "text_layers": 1,
        "text_heads": 2,
        "text_intermediate_size": 64,
        "text_vocab_size": 120,
        "max_text_length": 12,
    },
    "losses": {"ita_dim": 16, "gcl_hidden_dim": 16, "gcl_image_weight": 0.0},
    "data": {"pairs_per_batch": 8, "export_batch_size": 128, "text_gcl_users": 16},
    "optim": {"warmup_steps": 1},
    "trainer": {"max_steps": 2, "enable_progress_bar": False},
}
# The frozen peers' encoders in tests: the tiny random BERT instead of MiniLM (loading MiniLM in every bridge test
# run costs seconds; tests/stage1_encoders/test_align.py checks the MiniLM export itself).
TINY_FROZEN = {"model": {"text_model": "tiny"}}
TINY_STAGE2 = {
    "model": {"hidden_dim": 16, "num_layers": 1},
    "trainer": {"max_steps": 3, "enable_progress_bar": False, "log_every_n_steps": 1},
}
TINY_EVAL = EvalConfig(
    head_seeds=(0, 1), heads=("linear",), weight_decays=(1e-3,), max_epochs=40, patience=10
)


def tiny_bridge_config(corpus, **kw):
    """A ``BridgeConfig`` with the tiny stages, frozen encoders and evaluation, one training seed; ``kw`` sets or
    overrides any other field (rounds, baselines, finetune, ...)."""
    from bridge.rounds.config import BridgeConfig

    base = dict(
        seed=0,
        seeds=1,
        corpus=corpus,
        stage1=TINY_STAGE1,
        frozen=TINY_FROZEN,
        stage2=TINY_STAGE2,
        eval=TINY_EVAL,
    )
    return BridgeConfig(**{**base, **kw})


def resolve_stage(stage, cfg, paths, corpus_dir, variant, round_idx=0, init_checkpoint=None):
    """The resolved config of one stage run through the public API: every variant's templates built once
    (ablations included, so any registered variant resolves), then ``StageTemplates.resolve``."""
    import dataclasses

    from bridge.rounds import stages

    templates = stages.check_stage_configs(dataclasses.replace(cfg, ablations=True))
    return templates.resolve(paths.stage_key(variant, round_idx, stage), corpus_dir, paths, init_checkpoint)
