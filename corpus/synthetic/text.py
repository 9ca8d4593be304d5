"""Captions: words of the post's topic mixed with shared filler words, plus praise words whose frequency grows
with the user's content quality. Real English words, so pretrained tokenizers see whole words.

A caption's topic words come from a *family* vocabulary (``TEXT_FACTOR_WORDS``; with design 'shared' two topics,
caption twins, share one) and, with probability ``specific_word_share``, from a topic-specific list
(``TOPIC_WORDS``) that tells the twins apart."""

from __future__ import annotations

import numpy as np

TEXT_FACTOR_WORDS = (
    (
        "pasta",
        "pizza",
        "sushi",
        "ramen",
        "salad",
        "burger",
        "noodles",
        "curry",
        "dessert",
        "chocolate",
        "bakery",
        "recipe",
        "kitchen",
        "spicy",
        "dinner",
        "brunch",
    ),
    (
        "beach",
        "mountain",
        "airport",
        "hotel",
        "island",
        "passport",
        "museum",
        "sunset",
        "hiking",
        "ocean",
        "village",
        "journey",
        "backpack",
        "cruise",
        "harbor",
        "desert",
    ),
    (
        "football",
        "soccer",
        "basketball",
        "tennis",
        "stadium",
        "marathon",
        "goal",
        "coach",
        "training",
        "match",
        "team",
        "cycling",
        "swimming",
        "workout",
        "league",
        "trophy",
    ),
    (
        "guitar",
        "concert",
        "piano",
        "album",
        "singer",
        "drums",
        "festival",
        "melody",
        "band",
        "studio",
        "vinyl",
        "chorus",
        "lyrics",
        "violin",
        "playlist",
        "rhythm",
    ),
    (
        "laptop",
        "software",
        "robot",
        "code",
        "gadget",
        "startup",
        "keyboard",
        "smartphone",
        "algorithm",
        "server",
        "chip",
        "app",
        "coding",
        "drone",
        "battery",
        "network",
    ),
    (
        "dress",
        "sneakers",
        "jacket",
        "outfit",
        "jewelry",
        "handbag",
        "denim",
        "runway",
        "boutique",
        "lipstick",
        "scarf",
        "boots",
        "style",
        "makeup",
        "designer",
        "sunglasses",
    ),
)
TOPIC_WORDS = (
    ("vegan", "tofu", "smoothie", "kale", "granola", "avocado"),
    ("castle", "cathedral", "ruins", "gallery", "monument", "palace"),
    ("camping", "tent", "campfire", "trail", "canyon", "forest"),
    ("surfing", "waves", "kayak", "sailing", "diving", "snorkel"),
    ("yoga", "meditation", "pilates", "stretching", "breathing", "balance"),
    ("jazz", "saxophone", "trumpet", "blues", "swing", "orchestra"),
    ("gaming", "console", "controller", "arcade", "esports", "joystick"),
    ("camera", "lens", "tripod", "portrait", "shutter", "aperture"),
    ("knitting", "pottery", "painting", "sketch", "canvas", "crafts"),
    ("garden", "flowers", "tulips", "roses", "seeds", "greenhouse"),
    ("puppy", "kitten", "dog", "cat", "parrot", "hamster"),
    ("wedding", "bride", "ceremony", "bouquet", "vows", "reception"),
)
FILLER_WORDS = (
    "today",
    "my",
    "the",
    "a",
    "with",
    "so",
    "this",
    "is",
    "and",
    "new",
    "day",
    "time",
    "love",
    "friends",
    "weekend",
    "morning",
    "just",
    "look",
    "at",
    "our",
    "great",
    "fun",
    "again",
    "finally",
    "here",
    "we",
    "went",
    "out",
    "got",
    "some",
    "little",
    "first",
    "last",
    "night",
    "week",
    "happy",
    "best",
    "all",
    "together",
    "moment",
)
QUALITY_WORDS = (
    "stunning",
    "gorgeous",
    "amazing",
    "incredible",
    "perfect",
    "brilliant",
    "breathtaking",
    "superb",
)


def make_captions(
    family: np.ndarray,
    specific: np.ndarray,
    quality: np.ndarray,
    has_text: np.ndarray,
    mean_words: float,
    topic_word_share: float,
    specific_word_share: float,
    rng: np.random.Generator,
) -> list[str]:
    """One caption per post.

    Args:
        family: int [P], the post's vocabulary family (index into TEXT_FACTOR_WORDS).
        specific: int [P], index into TOPIC_WORDS of the post's topic-specific words (ignored when
            ``specific_word_share`` is 0).
        quality: float [P] in [0, 1]; each of two praise-word slots is filled with probability ``0.6 * quality``.
        has_text: bool [P]; False gives "".
        mean_words: mean number of topic + filler words (at least 3).
        topic_word_share: probability that a word is a topic word (family or specific).
        specific_word_share: probability that a topic word comes from the specific list.
        rng: random stream.

    Returns:
        list of P strings.
    """
    num_posts = family.shape[0]
    vocab = np.array(FILLER_WORDS + sum(TEXT_FACTOR_WORDS, ()) + QUALITY_WORDS + sum(TOPIC_WORDS, ()))
    n_filler, n_factor = len(FILLER_WORDS), len(TEXT_FACTOR_WORDS[0])
    quality_base = n_filler + n_factor * len(TEXT_FACTOR_WORDS)
    specific_base, n_specific = quality_base + len(QUALITY_WORDS), len(TOPIC_WORDS[0])

    lengths = np.where(has_text, 3 + rng.poisson(max(mean_words - 3, 0), size=num_posts), 0)
    praise = np.where(has_text, rng.binomial(2, 0.6 * np.clip(quality, 0, 1)), 0)
    total = lengths + praise
    slot_post = np.repeat(np.arange(num_posts), lengths)
    is_topic = rng.random(slot_post.size) < topic_word_share
    word = np.where(
        is_topic,
        n_filler + family[slot_post] * n_factor + rng.integers(0, n_factor, slot_post.size),
        rng.integers(0, n_filler, slot_post.size),
    )
    if specific_word_share > 0:
        is_specific = is_topic & (rng.random(slot_post.size) < specific_word_share)
        specific_word = (
            specific_base + specific[slot_post] * n_specific + rng.integers(0, n_specific, slot_post.size)
        )
        word = np.where(is_specific, specific_word, word)
    praise_word = quality_base + rng.integers(0, len(QUALITY_WORDS), int(praise.sum()))
    # Interleave: each post's words, then its praise words (one flat array in post order).
    ends = np.cumsum(total)
    starts = ends - total
    ids = np.empty(int(total.sum()), dtype=np.int64)
    word_pos = np.repeat(starts, lengths) + (
        np.arange(slot_post.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    )
    ids[word_pos] = word
    praise_mask = np.ones(ids.size, dtype=bool)
    praise_mask[word_pos] = False
    ids[praise_mask] = praise_word
    tokens = vocab[ids].tolist()
    return [" ".join(tokens[s:e]) for s, e in zip(starts.tolist(), ends.tolist())]
