"""The seed-aware verdict on constructed per-seed margins, and the statistics over training seeds."""

from __future__ import annotations

import pytest

from bridge.evaluation.verdict import paired_margins, verdict


@pytest.mark.parametrize(
    ("margins", "expected"),
    [
        ([0.01, 0.02, 0.005], "ahead"),  # positive for every seed, however small
        ([0.10, 0.12, -0.01], "not measurably"),  # one seed behind; mean 0.07 does not exceed 2 sd = 0.14
        ([0.05, -0.04, 0.02], "not measurably"),  # mean 0.01, sd 0.046
        ([-0.01, -0.03, -0.02], "behind"),
        ([-0.10, -0.12, 0.01], "not measurably"),  # the mirrored case
        ([0.0, 0.0, 0.0], "not measurably"),
        ([0.02], "ahead"),  # one seed: the sign decides
        ([-0.02], "behind"),
        ([0.0], "not measurably"),
        ([], "n/a"),
        ([0.1, float("nan")], "n/a"),
    ],
)
def test_verdict_rule(margins, expected):
    assert verdict(margins) == expected


def test_one_seed_behind_is_ahead_only_when_the_mean_exceeds_two_sd():
    margins = [0.30, 0.31, 0.29, 0.30, -0.01]  # mean 0.238, sd 0.138: 0.238 < 0.276, so not ahead
    assert verdict(margins) == "not measurably"
    margins = [0.30] * 9 + [-0.01]  # mean 0.269, sd 0.098 -> 0.269 > 0.196: ahead despite the one seed
    assert verdict(margins) == "ahead"
    assert verdict([-m for m in margins]) == "behind"


def test_paired_margins_orientation_and_statistics():
    assert paired_margins([0.9, 0.8], [0.85, 0.9], higher_is_better=True) == pytest.approx([0.05, -0.1])
    assert paired_margins([0.5, 0.6], [0.55, 0.55], higher_is_better=False) == pytest.approx([0.05, -0.05])
    with pytest.raises(ValueError, match="cannot pair 2 MMGA seeds with 1"):
        paired_margins([0.1, 0.2], [0.1], True)
