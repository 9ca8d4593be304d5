"""``SyntheticConfig``: every knob of the synthetic generator, with its CLI help (docs/corpus.md)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from mmga_common.config import config_field

Design = Literal["shared", "factorised"]
DESIGNS: tuple[str, ...] = typing.get_args(Design)
MAX_SHARED_TOPICS = 12


@dataclass
class SyntheticConfig:
    num_users: int = config_field(2000, "number of users", flag="--users")
    seed: int = config_field(0, "random seed: the same seed (and knobs) gives byte-identical files")
    design: Design = config_field(
        "shared",
        "'shared': a post's image and caption show the same topic, each modality confuses other topic pairs; "
        "'factorised' (the earlier design): topic = (visual factor, textual factor), image shows only the first",
    )
    topics: int = config_field(6, "number of topics with design 'shared' (2..12)")
    num_visual_factors: int = config_field(
        2, "design 'factorised': values of the visual factor (image pattern), 1..6"
    )
    num_text_factors: int = config_field(
        2, "design 'factorised': values of the textual factor (caption vocabulary), 1..6"
    )
    image_ambiguous_share: float = config_field(
        0.35, "design 'shared': share of users whose images do not tell their topic from its image twin"
    )
    text_ambiguous_share: float = config_field(
        0.35, "design 'shared': share of users whose captions do not tell their topic from its caption twin"
    )
    specific_word_share: float = config_field(
        0.4, "design 'shared': share of a caption's topic words that are topic-specific (not twin-shared)"
    )
    posts_per_user: float = config_field(8.0, "mean posts of a user with posts (heavy-tailed, at least 1)")
    no_post_share: float = config_field(0.05, "share of users without any post")
    few_post_share: float = config_field(0.10, "share of users with only 1 or 2 posts")
    off_topic_share: float = config_field(0.20, "share of posts about another topic than the user's")
    secondary_share: float = config_field(
        0.8, "share of off-topic posts about the user's secondary-interest topic (the rest: a random topic)"
    )
    no_image_share: float = config_field(0.10, "share of posts without an image")
    empty_text_share: float = config_field(0.10, "share of posts with an empty caption")
    caption_words: float = config_field(10.0, "mean caption length in words, praise words excluded")
    topic_word_share: float = config_field(
        0.35, "share of caption words taken from the post topic's vocabulary (the rest: shared filler words)"
    )
    image_size: int = config_field(32, "image side in pixels")
    image_noise: float = config_field(0.15, "pixel noise (std, pixel range [0, 1]) at medium quality")
    image_pool: int = config_field(
        0, "0: one PNG per post with an image; M > 0: render M images shared by posts"
    )
    avg_degree: float = config_field(
        10.0, "mean degree of the mutual-follow graph (edges = users * avg_degree / 2)"
    )
    homophily: float = config_field(0.6, "share of edges between users of the same topic")
    cross_edge_affinity: float = config_field(
        0.8, "share of cross-topic edges that go to a user of the first user's secondary-interest topic"
    )
    degree_exponent: float = config_field(
        2.5, "power-law exponent of the degree propensities (heavier tail when lower)"
    )
    num_stats: int = config_field(6, "number of per-user statistic columns (X)")
    stats_topic_effect: float = config_field(
        0.15, "strength of the topic effect in X (activity loads 0.4-1, noise 0.6)"
    )
    unlabelled_share: float = config_field(0.0, "share of users whose label is left empty")
    fans_unknown_share: float = config_field(0.0, "share of users whose fans count is left empty")
    workers: int = config_field(
        0, "processes rendering images (0: all CPU cores; small corpora render in-process)"
    )

    @property
    def num_topics(self) -> int:
        if self.design == "factorised":
            return self.num_visual_factors * self.num_text_factors
        return self.topics

    @property
    def num_image_families(self) -> int:
        """Distinct image patterns: visual factors ('factorised') or topic pairs sharing a pattern ('shared')."""
        if self.design == "factorised":
            return self.num_visual_factors
        return (self.topics + 1) // 2

    def check(self) -> None:
        """Raise ValueError naming the first knob out of range."""
        if self.num_users < 2:
            raise ValueError(f"num_users must be >= 2, got {self.num_users}")
        if self.design not in DESIGNS:
            raise ValueError(f"design must be one of {', '.join(DESIGNS)}, got {self.design!r}")
        if not 2 <= self.topics <= MAX_SHARED_TOPICS:
            raise ValueError(f"topics must be in 2..{MAX_SHARED_TOPICS}, got {self.topics}")
        for name in ("num_visual_factors", "num_text_factors"):
            if not 1 <= getattr(self, name) <= 6:
                raise ValueError(f"{name} must be in 1..6, got {getattr(self, name)}")
        shares = (
            "no_post_share",
            "few_post_share",
            "off_topic_share",
            "secondary_share",
            "no_image_share",
            "empty_text_share",
            "topic_word_share",
            "specific_word_share",
            "image_ambiguous_share",
            "text_ambiguous_share",
            "homophily",
            "cross_edge_affinity",
            "unlabelled_share",
            "fans_unknown_share",
        )
        for name in shares:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.no_post_share + self.few_post_share > 1.0:
            raise ValueError("no_post_share + few_post_share must be <= 1")
        if self.posts_per_user < 1 or self.caption_words < 3:
            raise ValueError("posts_per_user must be >= 1 and caption_words >= 3")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        cells = 4 * self.num_image_families * (2 if self.design == "shared" else 1)
        if self.image_pool < 0 or (0 < self.image_pool < cells):
            raise ValueError(
                f"image_pool must be 0 or >= {cells} (one per image cell), got {self.image_pool}"
            )
        if self.avg_degree < 0 or self.avg_degree >= self.num_users - 1:
            raise ValueError(f"avg_degree must be in [0, num_users - 1), got {self.avg_degree}")
        if self.degree_exponent <= 1:
            raise ValueError(f"degree_exponent must be > 1, got {self.degree_exponent}")
        if self.num_stats < 0 or self.workers < 0 or self.stats_topic_effect < 0:
            raise ValueError("num_stats, stats_topic_effect and workers must be >= 0")
