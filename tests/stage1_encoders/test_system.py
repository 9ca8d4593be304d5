"""The system's optimiser: parameter groups and transformers' per-step warm-up + cosine schedule against known
values."""

from __future__ import annotations

import math

import pytest

from stage1_encoders.system import Stage1System


def test_lr_schedule_known_values(tiny_parts):
    system = Stage1System(
        tiny_parts.image_encoder,
        tiny_parts.text_encoder,
        lr=2.0,
        head_lr_scale=3.0,
        warmup_steps=2,
        min_lr_ratio=0.1,
    )
    optimizer, scheduler = system.build_optimizer(total_steps=6)
    # warm-up step / warmup (step 0 at lr 0, as transformers does), then 0.1 + 0.9 * (1 + cos(pi * (step - 2) / 4)) / 2
    c = math.cos(math.pi / 4)
    want = [0.0, 0.5, 1.0, 0.1 + 0.45 * (1 + c), 0.55, 0.1 + 0.45 * (1 - c), 0.1]
    got = []
    for _ in want:
        got.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    peaks = [group["initial_lr"] for group in optimizer.param_groups]
    assert sorted(set(peaks)) == [2.0, 6.0]  # encoders at lr, heads at lr * head_lr_scale
    for step, factor in enumerate(want):
        assert got[step] == pytest.approx([peak * factor for peak in peaks], rel=1e-12, abs=1e-15), step
