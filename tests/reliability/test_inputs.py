"""Matrix, inputs (issue 24): text, numbers, images and config files that used to pass and fail later.

| input | expected outcome |
|---|---|
| the same user id in NFC and NFD (`café`) in `users.csv` | error: users.csv, the line, `user_id`, both escaped forms |
| an NFD id in `posts.jsonl`/`edges.csv` for an NFC id in `users.csv` | the same user (ids are read in NFC) |
| a post naming an unknown non-ASCII id | the error shows the id escaped (`'caf\\xe9'`), so look-alikes differ |
| a lone surrogate (`"\\ud800"`) in a caption | error: posts.jsonl, the line, `text` (not a UnicodeEncodeError later) |
| `1_000`, Arabic-Indic `١٢` or full-width `５` in a statistic | error: users.csv, the line, the field |
| a statistic of `1e308` or `1e39` (beyond float32) | error: users.csv, the line, the field |
| `fans` above 1e10 | kept, with a `CorpusWarning` naming the line and the value |
| a topic with users in test but none in train | loads, with a `CorpusWarning` naming the topic |
| a 16-bit grayscale PNG (`I;16`) | scaled to 8 bits by range (mean as the data's), not clipped to white |
| a key given twice in a YAML or JSON config file | error naming the file, the line and the key |
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from corpus import CorpusError, CorpusWarning, load_corpus
from mmga_common.config import ConfigError, load_file

NFC, NFD = "caf\u00e9", "cafe\u0301"


def _replace(path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def _set_cell(root, row: int, column: str, value: str) -> None:
    """users.csv's data row ``row`` (0-based; line ``row + 2``) gets ``value`` in ``column``."""
    path = root / "users.csv"
    lines = path.read_text(encoding="utf-8").split("\n")
    j = lines[0].split(",").index(column)
    cells = lines[row + 1].split(",")
    cells[j] = value
    lines[row + 1] = ",".join(cells)
    path.write_text("\n".join(lines), encoding="utf-8")


def _load(root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        corpus = load_corpus(root)
    return corpus, [w for w in caught if issubclass(w.category, CorpusWarning)]


def _error(root) -> str:
    with pytest.raises(CorpusError) as info:
        load_corpus(root)
    return str(info.value)


# --- Unicode ---------------------------------------------------------------------------------------------


def test_nfc_equal_user_ids_are_duplicates(corpus_copy):
    root = corpus_copy()
    _replace(root / "users.csv", "\nu00000,", f"\n{NFC},")
    _replace(root / "users.csv", "\nu00001,", f"\n{NFD},")
    assert _error(root) == (
        "users.csv, line 3, field 'user_id': duplicate user id 'café' (first on line 2); "
        "'cafe\\u0301' and 'caf\\xe9' are the same text in Unicode NFC"
    )


def test_ids_are_read_in_nfc_everywhere(corpus_copy):
    root = corpus_copy()
    _replace(root / "users.csv", "\nu00000,", f"\n{NFC},")
    _replace(root / "posts.jsonl", '"u00000"', f'"{NFD}"', count=-1)
    _replace(root / "edges.csv", "u00000", NFD, count=-1)
    corpus, _ = _load(root)
    reference, _ = _load(corpus_copy("reference"))
    assert corpus.user_ids[0] == NFC
    np.testing.assert_array_equal(corpus.edges, reference.edges)
    np.testing.assert_array_equal(corpus.post_offsets, reference.post_offsets)


def test_unknown_id_is_shown_escaped(corpus_copy):
    root = corpus_copy()
    _replace(root / "posts.jsonl", '"u00000"', f'"{NFC}"')
    assert _error(root) == (
        "posts.jsonl, line 1, field 'user_id': unknown user id 'café' (escaped: 'caf\\xe9') (not in users.csv)"
    )


def test_unicode_labels_are_read_in_nfc(corpus_copy):
    root = corpus_copy()
    text = (root / "users.csv").read_text(encoding="utf-8")
    lines = text.split("\n")
    lines = [lines[0]] + [
        line.replace("topic_1", NFC if i % 2 else NFD, 1) for i, line in enumerate(lines[1:])
    ]
    (root / "users.csv").write_text("\n".join(lines), encoding="utf-8")
    corpus, _ = _load(root)
    assert NFC in corpus.label_names and NFD not in corpus.label_names


def test_lone_surrogate_in_a_caption_is_refused_at_read_time(corpus_copy):
    root = corpus_copy()
    lines = (root / "posts.jsonl").read_text().split("\n")
    record = json.loads(lines[3])
    record["text"] = "ok \\ud800 then"  # written below as a JSON escape
    lines[3] = json.dumps(record).replace("\\\\ud800", "\\ud800")
    (root / "posts.jsonl").write_text("\n".join(lines))
    assert _error(root) == (
        "posts.jsonl, line 4, field 'text': holds a lone UTF-16 surrogate '\\ud800' at character 3, which is "
        "not text (a JSON \\u escape of half a surrogate pair); fix the escape or remove it"
    )


def test_an_escaped_surrogate_pair_is_text(corpus_copy):
    root = corpus_copy()
    lines = (root / "posts.jsonl").read_text().split("\n")
    lines[3] = lines[3].replace('"text": "', '"text": "\\ud83d\\ude00 ', 1)  # an emoji, as JSON escapes it
    (root / "posts.jsonl").write_text("\n".join(lines))
    corpus, _ = _load(root)
    assert any(text.startswith("\U0001f600 ") for text in corpus.post_text)


# --- numbers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "escaped"),
    [("1_000", "'1_000'"), ("\u0661\u0662", "'\\u0661\\u0662'"), ("\uff15", "'\\uff15'")],
    ids=["underscore", "arabic-indic", "full-width"],
)
def test_only_plain_decimal_numerals_are_numbers(corpus_copy, value, escaped):
    root = corpus_copy()
    _set_cell(root, 1, "posts_per_week", value)
    assert _error(root) == (
        f"users.csv, line 3, field 'posts_per_week': not a plain decimal number: {value!r} (escaped: {escaped}); "
        "write ASCII digits 0-9, with no '_' separators and no other scripts' digits"
    )


@pytest.mark.parametrize("value", ["1e308", "1e39", "-4e38"])
def test_statistic_beyond_float32_names_the_line(corpus_copy, value):
    root = corpus_copy()
    _set_cell(root, 1, "posts_per_week", value)
    assert _error(root) == (
        f"users.csv, line 3, field 'posts_per_week': value {value} is beyond float32's range "
        "(|x| <= 3.4e+38), where the stages compute; rescale the column (e.g. log1p)"
    )


def test_extreme_fans_warn_naming_line_and_value(corpus_copy):
    root = corpus_copy()
    _set_cell(root, 1, "fans", "1e300")
    corpus, caught = _load(root)
    assert corpus.fans[1] == 1e300
    assert [str(w.message) for w in caught] == [
        "users.csv, line 3, field 'fans': 1e300 fans is above 1e+10 (more than the world's population), a "
        "likely data error kept as is (1 such user(s)); one such value dominates the fans regression's error"
    ]


def test_ordinary_fans_do_not_warn(corpus_copy):
    _, caught = _load(corpus_copy())
    assert caught == []


def test_topic_only_in_the_test_split_warns(corpus_copy):
    root = corpus_copy()
    lines = (root / "users.csv").read_text().rstrip("\n").split("\n")
    header, rows = lines[0] + ",split", lines[1:]
    rows = [
        f"{row},{'test' if 'topic_1,' in row else ('val' if i % 5 == 0 else 'train')}"
        for i, row in enumerate(rows)
    ]
    (root / "users.csv").write_text("\n".join([header, *rows]) + "\n")
    corpus, caught = _load(root)
    assert "topic_1" in corpus.label_names
    n_test = sum("topic_1," in row for row in rows)
    assert [str(w.message) for w in caught] == [
        f"users.csv: topic 'topic_1' has no users in the train split (0 in val, {n_test} in test); the topic "
        "classifier can never predict it"
    ]


# --- images ----------------------------------------------------------------------------------------------


def _gradient16(height: int = 32, width: int = 32) -> np.ndarray:
    return (np.arange(height * width, dtype=np.uint32).reshape(height, width) * 64).astype(np.uint16)


def test_16_bit_png_is_scaled_not_clipped(corpus_copy):
    root = corpus_copy()
    corpus, _ = _load(root)
    post = next(p for p, rel in enumerate(corpus.post_image) if rel is not None)
    values = _gradient16()
    Image.fromarray(values).save(root / corpus.post_image[post])  # a real 16-bit grayscale PNG
    with Image.open(root / corpus.post_image[post]) as img:
        assert img.mode.startswith("I")
    rgb = np.asarray(load_corpus(root).load_image(post))
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
    expected = np.rint(values / 65535 * 255)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    assert abs(rgb.mean() - expected.mean()) < 0.01  # ~31.7, where clipping gave ~254.5


@pytest.mark.parametrize(
    "mode, values, expected",
    [
        ("I;16B", np.array([[0, 65535], [257, 32896]]), [[0, 255], [1, 128]]),
        ("I", np.array([[0, 65535], [257, 32896]]), [[0, 255], [1, 128]]),
        ("I", np.array([[-100, 100], [0, 50]]), [[0, 255], [128, 191]]),
        ("F", np.array([[0.0, 1.0], [0.5, 0.25]]), [[0, 255], [128, 64]]),
        ("F", np.array([[-1.0, 3.0], [1.0, 1.0]]), [[0, 255], [128, 128]]),
    ],
    ids=["I;16B", "I-16bit-range", "I-signed", "F-unit", "F-other"],
)
def test_high_depth_modes_scale_by_range(mode, values, expected):
    from corpus.pixels import to_rgb

    if mode == "I;16B":
        img = Image.frombytes("I;16B", (2, 2), values.astype(">u2").tobytes())
    elif mode == "I":
        img = Image.fromarray(values.astype(np.int32))
    else:
        img = Image.fromarray(values.astype(np.float32))
    assert img.mode == mode
    rgb = np.asarray(to_rgb(img))
    np.testing.assert_array_equal(rgb[..., 0], np.array(expected, dtype=np.uint8))
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


# --- config files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text, line, key",
    [
        (
            "cfg.yaml",
            "trainer:\n  max_steps: 10\n  precision: 32-true\n  max_steps: 20\n",
            4,
            "trainer.max_steps",
        ),
        ("cfg.yaml", "seed: 1\nseed: 2\n", 2, "seed"),
        (
            "cfg.json",
            '{\n  "trainer": {\n    "max_steps": 10,\n    "max_steps": 20\n  }\n}\n',
            4,
            "trainer.max_steps",
        ),
    ],
    ids=["yaml-nested", "yaml-top", "json"],
)
def test_duplicate_config_keys_are_refused(tmp_path, name, text, line, key):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    first = 2 if key == "trainer.max_steps" and name.endswith("yaml") else (1 if key == "seed" else 3)
    assert str(info.value) == (
        f"{path}, line {line}, field '{key}': key given twice (first on line {first}); a config file must name "
        "each key once"
    )
