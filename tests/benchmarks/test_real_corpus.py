"""benchmarks/real_corpus.py on a fake WordNet ``data.noun`` and a fake Tux Paint stamps folder in tmp_path
that mimic the real formats, so these tests need neither Debian package."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.real_corpus import (
    GENERIC,
    GENERIC_LEXFILES,
    NOUN_LEXFILES,
    TOPICS,
    RealCorpusConfig,
    SourceMissing,
    build,
    homophily,
    list_stamps,
    main,
    read_glosses,
)
from corpus import load_corpus

SYNSETS_PER_LEXFILE = 6
LICENSE_HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n" * 3


def gloss_of(lexfile: str, i: int) -> str:
    return f"{lexfile.split('.')[1]} thing number {i} with some words"


def write_fake_wordnet(folder: Path) -> Path:
    """A data.noun in WordNet's format (licence header, hexadecimal w_cnt, pointers, quoted examples) with
    SYNSETS_PER_LEXFILE synsets in each noun lexicographer file the testbed uses, and some it does not."""
    lexfiles = [t.lexfile for t in TOPICS] + list(GENERIC_LEXFILES) + ["noun.person"]
    lines, offset = [LICENSE_HEADER], 1740
    for lexfile in lexfiles:
        num = NOUN_LEXFILES[lexfile]
        for i in range(SYNSETS_PER_LEXFILE):
            words = [f"{lexfile[5:]}_word_{i}", f"alt_{i}"]
            lines.append(
                f"{offset:08d} {num:02d} n {len(words):02x} {words[0]} 0 {words[1]} 0 001 @ 00001740 n 0000 "
                f'| {gloss_of(lexfile, i)}; "an example"  \n'
            )
            offset += 100
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.noun").write_text("".join(lines), encoding="utf-8")
    return folder


def write_fake_stamps(folder: Path) -> Path:
    """Category folders with RGBA PNG stamps of several sizes, one in a sub-folder, a ``*_mirror.png`` copy,
    an SVG and a description file, as Tux Paint ships them."""
    categories = sorted({c for t in (*TOPICS, GENERIC) for c in t.stamps})
    for k, category in enumerate(categories):
        for i, (w, h) in enumerate([(40, 30), (25, 50), (12, 12)]):
            path = folder / category / ("sub" if i == 2 else "") / f"stamp{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.zeros((h, w, 4), np.uint8)
            pixels[..., :3] = (37 * k) % 256, (11 * i) % 256, 200
            pixels[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, 3] = 255  # opaque centre, transparent border
            Image.fromarray(pixels, "RGBA").save(path)
        Image.new("RGBA", (8, 8)).save(folder / category / "stamp0_mirror.png")
        (folder / category / "stamp0.txt").write_text("A stamp.\n")
        (folder / category / "vector.svg").write_text("<svg/>")
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sources")
    return write_fake_wordnet(root / "wordnet"), write_fake_stamps(root / "stamps")


SMALL = RealCorpusConfig(num_users=120, image_size=16, avg_degree=6.0, posts_per_user=4.0)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "corpus"
    corpus = build(out, SMALL, wordnet_dir=sources[0], stamps_dir=sources[1])
    return out, corpus


def test_read_glosses_parses_the_wordnet_format(sources):
    glosses = read_glosses(sources[0] / "data.noun", ["noun.food", "noun.feeling"])
    assert sorted(glosses) == ["noun.feeling", "noun.food"]
    assert len(glosses["noun.food"]) == SYNSETS_PER_LEXFILE
    assert glosses["noun.food"][1] == (["food word 1", "alt 1"], f"{gloss_of('noun.food', 1)}; an example")


def test_list_stamps_takes_pngs_only_and_skips_mirrored_copies(sources):
    found = list_stamps(sources[1], ("food", "plants"))
    names = [str(p.relative_to(sources[1])) for p in found]
    assert names == [
        "food/stamp0.png",
        "food/stamp1.png",
        "food/sub/stamp2.png",
        "plants/stamp0.png",
        "plants/stamp1.png",
        "plants/sub/stamp2.png",
    ]


def test_output_loads_with_the_requested_users_and_topics(built):
    out, corpus = built
    again = load_corpus(out, image_check="decode", progress=False)
    assert again.num_users == corpus.num_users == SMALL.num_users
    assert again.label_names == sorted(t.name for t in TOPICS)
    sizes = np.bincount(again.labels, minlength=len(TOPICS))
    assert sizes.min() >= 5 and sizes.sum() == SMALL.num_users
    assert again.num_edges == round(SMALL.avg_degree * SMALL.num_users / 2)
    assert list(again.feature_names) == [
        "posts",
        "mean_caption_words",
        "image_share",
        "posts_per_week",
        "account_age_days",
        "likes_per_post",
    ]
    image = again.load_image(int(np.flatnonzero(again.post_has_image)[0]))
    assert image.size == (SMALL.image_size, SMALL.image_size)


def test_captions_are_glosses_of_the_fake_wordnet(built, sources):
    out, corpus = built
    glosses = read_glosses(sources[0] / "data.noun", [t.lexfile for t in TOPICS] + list(GENERIC_LEXFILES))
    known = {g for pool in glosses.values() for _, g in pool}
    texts = [t for t in corpus.post_text if t]
    assert texts and all(t.split(": ", 1)[-1] in known for t in texts)
    assert any(": " in t for t in texts) and any(": " not in t for t in texts)  # lemma prefix on some


def test_homophily_is_the_documented_value(built):
    out, corpus = built
    measured = homophily(corpus)
    assert abs(measured - SMALL.homophily) <= 1.0 / corpus.num_edges
    assert 0.5 <= measured <= 0.65
    assert json.loads((out / "_real_corpus.json").read_text())["homophily"] == round(measured, 4)


def test_same_seed_same_bytes_other_seed_other_corpus(built, sources, tmp_path):
    out, _ = built
    build(tmp_path / "again", SMALL, wordnet_dir=sources[0], stamps_dir=sources[1])
    first, again = tree_digest(out), tree_digest(tmp_path / "again")
    first.pop("_real_corpus.json"), again.pop("_real_corpus.json")  # it names the source folders only
    assert first == again
    build(tmp_path / "other", replace(SMALL, seed=1), wordnet_dir=sources[0], stamps_dir=sources[1])
    other = tree_digest(tmp_path / "other")
    assert other["users.csv"] != first["users.csv"] and other["posts.jsonl"] != first["posts.jsonl"]


def test_refuses_to_overwrite_without_the_flag(built, sources):
    out, _ = built
    with pytest.raises(FileExistsError, match="already holds users.csv"):
        build(out, SMALL, wordnet_dir=sources[0], stamps_dir=sources[1])


def test_cli_builds_and_reports(sources, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "--out",
            str(out),
            "--users",
            "100",
            "--seed",
            "3",
            "--wordnet-dir",
            str(sources[0]),
            "--stamps-dir",
            str(sources[1]),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{out}: 100 users, ") and "8 topics, homophily 0.550" in printed


@pytest.mark.parametrize(
    "missing, message",
    [
        (
            "wordnet",
            "WordNet data not found at {}/data.noun: install it with `apt-get install wordnet-base` "
            "(or pass --wordnet-dir)",
        ),
        (
            "stamps",
            "Tux Paint stamps not found at {}: install them with "
            "`apt-get install tuxpaint-stamps-default` (or pass --stamps-dir)",
        ),
    ],
)
def test_missing_packages_give_one_line_errors(sources, tmp_path, capsys, missing, message):
    absent = tmp_path / "absent"
    dirs = {"wordnet": str(sources[0]), "stamps": str(sources[1]), missing: str(absent)}
    code = main(
        ["--out", str(tmp_path / "x"), "--wordnet-dir", dirs["wordnet"], "--stamps-dir", dirs["stamps"]]
    )
    assert code == 2
    assert capsys.readouterr().err == f"error: {message.format(absent)}\n"
    with pytest.raises(SourceMissing):
        build(tmp_path / "y", SMALL, wordnet_dir=dirs["wordnet"], stamps_dir=dirs["stamps"])


def test_too_few_users_for_the_topics_is_refused(sources, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"5 users in the smallest one; 50 users give \[11, 8, 7, 6, 5, 5, 4, 4\] over 8 topics",
    ):
        build(tmp_path / "z", replace(SMALL, num_users=50), wordnet_dir=sources[0], stamps_dir=sources[1])
