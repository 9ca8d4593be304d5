"""Stage-1 cost of the text-encoder choices of issue 20, measured in one process on one corpus so the figures
are ratios against a peer (the tiny default) measured alongside:

- ``lower_states_s``: computing the frozen lower layers' states of every caption (``--text-tuned-layers``);
- ``step_s``: one optimizer step (forward, backward, AdamW) on pre-collated batches, median of ``--steps``;
- ``export_s``: encoding every post and pooling per user (the export), lower states already cached; for the
  peer (the first variant) and the variants with cached lower states only.

    python benchmarks/bench_stage1_tuning.py --corpus runs/default/corpus --steps 8
    python benchmarks/bench_stage1_tuning.py --corpus runs/default/corpus --only tiny_default \
        --only minilm_frozen_graph_head                  # the tiny preset against today's default

Each variant is a JSON object of stage-1 overrides (``--variant NAME=JSON``, repeatable); without any the
built-in list below runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus import load_corpus  # noqa: E402
from mmga_common.config import deep_merge  # noqa: E402
from stage1_encoders import Stage1Config  # noqa: E402
from stage1_encoders.export import export_user_embeddings  # noqa: E402
from stage1_encoders.parts import build_parts  # noqa: E402

MINILM = {"image_model": "mmga-vit-tiny", "text_model": "minilm", "text_pooling": "mean"}
VARIANTS = {
    "tiny_default": {"model": {"image_model": "mmga-vit-tiny"}},
    "tiny_infonce": {"model": {"image_model": "mmga-vit-tiny"}, "losses": {"gcl_form": "infonce"}},
    "minilm_top2_infonce_nomlm": {
        "model": {**MINILM, "text_tuned_layers": 2},
        "losses": {"gcl_form": "infonce", "lm_weight": 0.0, "text_feature_input": "clean"},
    },
    "minilm_top1_infonce_nomlm": {
        "model": {**MINILM, "text_tuned_layers": 1},
        "losses": {"gcl_form": "infonce", "lm_weight": 0.0, "text_feature_input": "clean"},
    },
    "minilm_top2_infonce_mlm": {
        "model": {**MINILM, "text_tuned_layers": 2},
        "losses": {"gcl_form": "infonce", "text_feature_input": "clean"},
    },
    "minilm_full_infonce_mlm": {"model": MINILM, "losses": {"gcl_form": "infonce"}},
    # the bridge's default since 2026-12-03 (bridge/presets/default.json): every layer frozen, the graph head
    "minilm_frozen_graph_head": {
        "model": {**MINILM, "text_tuned_layers": 0, "text_head_dim": 128},
        "losses": {
            "gcl_form": "infonce",
            "gcl_image_weight": 0.0,
            "lm_weight": 0.0,
            "text_feature_input": "clean",
        },
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        choices=sorted(VARIANTS),
        help="built-in variants to run (repeatable)",
    )
    parser.add_argument("--no-export", action="store_true", help="skip the export timing")
    args = parser.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant)
    variants = {k: json.loads(v) for k, v in variants.items()} or {
        name: VARIANTS[name] for name in (args.only or VARIANTS)
    }
    torch.set_num_threads(1)
    corpus = load_corpus(Path(args.corpus))
    rows = []
    for name, overrides in variants.items():
        cfg = Stage1Config.from_dict(
            deep_merge(overrides, {"corpus": args.corpus, "cache_dir": "/tmp/unused_cache"})
        )
        torch.manual_seed(0)
        parts = build_parts(cfg, corpus)
        system, text = parts.system, parts.system.text_encoder
        lower_s = float("nan")
        if text._lower_states is not None:
            started = time.perf_counter()
            text._lower_states.compute()
            lower_s = time.perf_counter() - started
        loader = iter(parts.datamodule.train_dataloader())
        batches = [next(loader) for _ in range(args.steps + 1)]
        optimizer, _ = system.build_optimizer(args.steps + 1)
        system.train()
        times = []
        for i, batch in enumerate(batches):
            started = time.perf_counter()
            losses = system.compute_losses(batch)
            system.total_loss(losses).backward()
            torch.nn.utils.clip_grad_norm_(system.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i > 0:  # the first step warms up
                times.append(time.perf_counter() - started)
        export_s = float("nan")
        # the export of a fully tuned pretrained encoder is its plain forward: timed for the peer and the
        # cached variants only (docs/stage1.md gives the full one's)
        if not args.no_export and (not rows or text._lower_states is not None):
            started = time.perf_counter()
            export_user_embeddings(
                system.image_encoder, text, parts.prep, batch_size=cfg.data.export_batch_size
            )
            export_s = time.perf_counter() - started
        rows.append(
            {
                "variant": name,
                "lower_states_s": lower_s,
                "step_s": statistics.median(times),
                "export_s": export_s,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    peer = rows[0]
    print(
        f"\n| variant | lower states (s) | step (s) | step / {peer['variant']} | export (s) | export / peer |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['variant']} | {row['lower_states_s']:.1f} | {row['step_s']:.3f} | "
            f"{row['step_s'] / peer['step_s']:.1f}x | {row['export_s']:.1f} | {row['export_s'] / peer['export_s']:.1f}x |"
        )


if __name__ == "__main__":
    main()
