"""Every bad input raises CorpusError with an exact message naming the file, the line and the field."""

from __future__ import annotations

import io
import json
import os

import pytest
from PIL import Image
from sample_corpus import EDGES_CSV, POSTS, USERS_CSV, image_bytes, posts_text

from corpus import CorpusError, load_corpus


def _users(old: str, new: str) -> str:
    assert old in USERS_CSV
    return USERS_CSV.replace(old, new, 1)


def _posts(index: int, **changes) -> list[dict]:
    posts = [dict(p) for p in POSTS]
    posts[index].update(changes)
    return [{k: v for k, v in p.items() if v != "<drop>"} for p in posts]


# (id, make_corpus overrides, load_corpus kwargs, exact message)
CASES = [
    # users.csv
    (
        "duplicate-user",
        {"users": USERS_CSV + "c,cat,1,1,1,5\n"},
        {},
        "users.csv, line 13, field 'user_id': duplicate user id 'c' (first on line 4)",
    ),
    (
        "empty-user-id",
        {"users": _users("c,cat,0", ",cat,0")},
        {},
        "users.csv, line 4, field 'user_id': empty user id",
    ),
    (
        "non-numeric-stat",
        {"users": _users("c,cat,0,5,6,5", "c,cat,0,abc,6,5")},
        {},
        "users.csv, line 4, field 'likes': not a number: 'abc'",
    ),
    (
        "nan-stat",
        {"users": _users("c,cat,0,5,6,5", "c,cat,0,nan,6,5")},
        {},
        "users.csv, line 4, field 'likes': not a finite number: 'nan'",
    ),
    (
        "inf-stat",
        {"users": _users("e,cat,1,9,10,5", "e,cat,1,9,-inf,5")},
        {},
        "users.csv, line 6, field 'posts_per_week': not a finite number: '-inf'",
    ),
    (
        "empty-stat",
        {"users": _users("c,cat,0,5,6,5", "c,cat,0,5,,5")},
        {},
        "users.csv, line 4, field 'posts_per_week': missing value (empty); every statistic must be a number",
    ),
    (
        "no-user-id-column",
        {"users": USERS_CSV.replace("user_id,", "uid,", 1)},
        {},
        "users.csv, line 1, field 'user_id': required column missing from the header",
    ),
    (
        "duplicate-column",
        {"users": USERS_CSV.replace("posts_per_week", "likes", 1)},
        {},
        "users.csv, line 1, field 'likes': duplicate column in the header",
    ),
    (
        "short-row",
        {"users": _users("c,cat,0,5,6,5", "c,cat,0,5,6")},
        {},
        "users.csv, line 4: expected 6 fields (as in the header), found 5",
    ),
    (
        "negative-fans",
        {"users": _users("c,cat,0,", "c,cat,-1,")},
        {},
        "users.csv, line 4, field 'fans': must be a non-negative integer, got '-1'",
    ),
    (
        "fractional-fans",
        {"users": _users("d,dog,7,", "d,dog,2.5,")},
        {},
        "users.csv, line 5, field 'fans': must be a non-negative integer, got '2.5'",
    ),
    (
        "text-fans",
        {"users": _users("d,dog,7,", "d,dog,many,")},
        {},
        "users.csv, line 5, field 'fans': not a number: 'many'",
    ),
    (
        "too-few-labels",
        {"users": _users("j,dog", "j,cat")},
        {},
        "users.csv, line 3, field 'label': label 'dog' has 4 labelled user(s); at least 5 per class are needed "
        "to evaluate (min_labelled_per_class)",
    ),
    (
        "too-few-labels-option",
        {},
        {"min_labelled_per_class": 6},
        "users.csv, line 2, field 'label': label 'cat' has 5 labelled user(s); at least 6 per class are needed "
        "to evaluate (min_labelled_per_class)",
    ),
    (
        "one-class",
        {"users": "user_id,label\nx,cat\ny,cat\ny2,\n", "posts": "", "edges": "src,dst\n"},
        {},
        "users.csv, line 2, field 'label': only one label class ('cat'); at least 2 are needed to evaluate",
    ),
    (
        "bad-split",
        {"users": "user_id,split\nx,train\ny,holdout\n", "posts": "", "edges": "src,dst\n"},
        {},
        "users.csv, line 3, field 'split': must be train, val or test, got 'holdout' (drop the column for a seeded split)",
    ),
    ("no-users", {"users": "user_id,label\n"}, {}, "users.csv: no users (only a header)"),
    ("empty-users-file", {"users": ""}, {}, "users.csv: file is empty (a header row is required)"),
    # posts.jsonl
    (
        "unknown-post-user",
        {"posts": _posts(2, user_id="zz")},
        {},
        "posts.jsonl, line 3, field 'user_id': unknown user id 'zz' (not in users.csv)",
    ),
    (
        "malformed-json",
        {"posts": posts_text(POSTS[:1]) + '{"user_id": "a" "text": ""}\n'},
        {},
        "posts.jsonl, line 2: malformed JSON: Expecting ',' delimiter (column 17)",
    ),
    (
        "trailing-garbage",
        {"posts": posts_text(POSTS[:1]) + '{"user_id": "a", "text": "", "image": null} x\n'},
        {},
        "posts.jsonl, line 2: malformed JSON: Extra data (column 45)",
    ),
    (
        "not-an-object",
        {"posts": posts_text(POSTS[:2]) + "[1, 2]\n"},
        {},
        "posts.jsonl, line 3: expected a JSON object; got array [1, 2]",
    ),
    (
        "missing-text",
        {"posts": _posts(1, text="<drop>")},
        {},
        "posts.jsonl, line 2, field 'text': must be a string (\"\" for no caption); the key is missing",
    ),
    (
        "null-text",
        {"posts": _posts(1, text=None)},
        {},
        "posts.jsonl, line 2, field 'text': must be a string (\"\" for no caption); got null",
    ),
    (
        "numeric-user-id",
        {"posts": _posts(0, user_id=42)},
        {},
        "posts.jsonl, line 1, field 'user_id': must be a string; got number 42",
    ),
    (
        "missing-image-key",
        {"posts": _posts(4, image="<drop>")},
        {},
        "posts.jsonl, line 5, field 'image': must be a relative path or null; the key is missing",
    ),
    (
        "empty-image-path",
        {"posts": _posts(4, image="")},
        {},
        "posts.jsonl, line 5, field 'image': must be a relative path or null; got string \"\"",
    ),
    (
        "duplicate-post-id",
        {"posts": _posts(3, post_id="p1")},
        {},
        "posts.jsonl, line 4, field 'post_id': duplicate post id 'p1' (first on line 1)",
    ),
    (
        "bad-post-id",
        {"posts": _posts(3, post_id=[1])},
        {},
        "posts.jsonl, line 4, field 'post_id': must be a string or an integer; got array [1]",
    ),
    # images
    (
        "missing-image",
        {"images": {"images/sub/y.jpg": image_bytes("JPEG"), "images/z.webp": image_bytes("WEBP")}},
        {},
        "posts.jsonl, line 1, field 'image': image file not found: 'images/x.png'",
    ),
    (
        "undecodable-image",
        {
            "images": {
                "images/x.png": b"not an image",
                "images/sub/y.jpg": image_bytes("JPEG"),
                "images/z.webp": image_bytes("WEBP"),
            }
        },
        {},
        "posts.jsonl, line 1, field 'image': not a decodable JPEG, PNG or WebP image: 'images/x.png'",
    ),
    (
        "unsupported-format",
        {
            "images": {
                "images/x.png": image_bytes("GIF"),
                "images/sub/y.jpg": image_bytes("JPEG"),
                "images/z.webp": image_bytes("WEBP"),
            }
        },
        {},
        "posts.jsonl, line 1, field 'image': unsupported image format GIF (JPEG, PNG or WebP are accepted): 'images/x.png'",
    ),
    (
        "too-many-pixels",
        {},
        {"max_image_pixels": 20},
        "posts.jsonl, line 2, field 'image': image is 5x6 = 30 pixels, over the limit of 20 (max_image_pixels): "
        "'images/sub/y.jpg'",
    ),
    (
        "image-is-a-folder",
        {"posts": _posts(0, image="images/sub")},
        {},
        "posts.jsonl, line 1, field 'image': not a regular file: 'images/sub'",
    ),
    (
        "dotdot-escape",
        {"posts": _posts(5, image="images/../../outside.png")},
        {},
        "posts.jsonl, line 6, field 'image': path escapes the corpus folder ('..' is not allowed): 'images/../../outside.png'",
    ),
    (
        "backslash",
        {"posts": _posts(5, image="images\\x.png")},
        {},
        "posts.jsonl, line 6, field 'image': absolute paths and backslashes are not allowed; give a path relative to "
        "the corpus folder: 'images\\\\x.png'",
    ),
    (
        "drive-letter",
        {"posts": _posts(5, image="C:/x.png")},
        {},
        "posts.jsonl, line 6, field 'image': absolute paths and backslashes are not allowed; give a path relative to "
        "the corpus folder: 'C:/x.png'",
    ),
    # edges.csv
    (
        "unknown-edge-src",
        {"edges": EDGES_CSV + "zz,a\n"},
        {},
        "edges.csv, line 7, field 'src': unknown user id 'zz' (not in users.csv)",
    ),
    (
        "unknown-edge-dst",
        {"edges": "src,dst\na,b\nb,zz\n"},
        {},
        "edges.csv, line 3, field 'dst': unknown user id 'zz' (not in users.csv)",
    ),
    (
        "unknown-edge-after-blank-line",
        {"edges": "src,dst\na,b\n\nzz,a\n"},
        {},
        "edges.csv, line 4, field 'src': unknown user id 'zz' (not in users.csv)",
    ),
    (
        "edge-header",
        {"edges": "source,target\na,b\n"},
        {},
        "edges.csv, line 1: header must be 'src,dst', got 'source,target'",
    ),
    (
        "edge-row",
        {"edges": "src,dst\na,b,c\n"},
        {},
        "edges.csv, line 2: expected 2 fields (as in the header), found 3",
    ),
]


@pytest.mark.parametrize("overrides, kwargs, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_message(make_corpus, overrides, kwargs, message):
    root = make_corpus(**overrides)
    with pytest.raises(CorpusError) as info:
        load_corpus(root, **kwargs)
    assert str(info.value) == message


def test_error_carries_file_line_and_field(make_corpus):
    with pytest.raises(CorpusError) as info:
        load_corpus(make_corpus(posts=_posts(2, user_id="zz")))
    err = info.value
    assert (err.file, err.line, err.field) == ("posts.jsonl", 3, "user_id")
    assert err.msg == "unknown user id 'zz' (not in users.csv)"


def test_absolute_path_is_rejected_even_when_inside(make_corpus):
    root = make_corpus()
    absolute = str(root / "images" / "x.png")
    (root / "posts.jsonl").write_text(posts_text(_posts(0, image=absolute)))
    with pytest.raises(CorpusError) as info:
        load_corpus(root)
    assert str(info.value) == (
        "posts.jsonl, line 1, field 'image': absolute paths and backslashes are not allowed; give a path relative "
        f"to the corpus folder: {absolute!r}"
    )


def test_dotdot_is_rejected_even_when_it_stays_inside(make_corpus):
    root = make_corpus(posts=_posts(0, image="images/sub/../x.png"))
    with pytest.raises(CorpusError, match=r"path escapes the corpus folder \('\.\.' is not allowed\)"):
        load_corpus(root)


def test_symlinked_file_pointing_outside_is_rejected(make_corpus, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(image_bytes("PNG"))
    root = make_corpus()
    (root / "images" / "evil.png").symlink_to(outside)
    (root / "posts.jsonl").write_text(posts_text(_posts(0, image="images/evil.png")))
    with pytest.raises(CorpusError) as info:
        load_corpus(root)
    real = os.path.realpath(outside)
    assert str(info.value) == (
        "posts.jsonl, line 1, field 'image': path resolves outside the corpus folder (through a symlink) "
        f"to {real!r}: 'images/evil.png'"
    )


def test_symlinked_folder_pointing_outside_is_rejected(make_corpus, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "a.png").write_bytes(image_bytes("PNG"))
    root = make_corpus()
    (root / "images" / "linked").symlink_to(outside, target_is_directory=True)
    (root / "posts.jsonl").write_text(posts_text(_posts(3, image="images/linked/a.png")))
    with pytest.raises(CorpusError) as info:
        load_corpus(root)
    real = os.path.realpath(outside)
    assert str(info.value) == (
        "posts.jsonl, line 4, field 'image': path resolves outside the corpus folder (through a symlink) "
        f"to {real!r}: 'images/linked/a.png'"
    )


def test_dangling_symlink_is_not_found(make_corpus):
    root = make_corpus()
    (root / "images" / "gone.png").symlink_to(root / "images" / "nothing.png")
    (root / "posts.jsonl").write_text(posts_text(_posts(0, image="images/gone.png")))
    with pytest.raises(
        CorpusError, match=r"^posts.jsonl, line 1, field 'image': image file not found: 'images/gone.png'$"
    ):
        load_corpus(root)


def _truncated_png() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()[:300]


def test_truncated_image_fails_on_load_naming_the_file(make_corpus):
    images = {
        "images/x.png": _truncated_png(),
        "images/sub/y.jpg": image_bytes("JPEG"),
        "images/z.webp": image_bytes("WEBP"),
    }
    root = make_corpus(images=images)
    corpus = load_corpus(root)  # the header is fine: the default check is cheap
    with pytest.raises(CorpusError) as info:
        corpus.load_image(2)
    # named like every other image error: posts.jsonl, the line, the field, then the image path
    assert (info.value.file, info.value.line, info.value.field) == ("posts.jsonl", 1, "image")
    assert str(info.value).startswith("posts.jsonl, line 1, field 'image': cannot decode image (OSError: ")
    assert str(info.value).endswith(": 'images/x.png'")
    with pytest.raises(
        CorpusError, match=r"^posts.jsonl, line 1, field 'image': cannot decode image \(OSError: "
    ):
        load_corpus(root, image_check="decode")


def test_load_image_of_a_post_without_image(make_corpus):
    corpus = load_corpus(make_corpus())
    with pytest.raises(
        CorpusError, match=r"^posts.jsonl, line 3, field 'image': post 3 has no image \(image is null\)$"
    ):
        corpus.load_image(3)


def test_invalid_utf8_names_the_line(make_corpus):
    root = make_corpus()
    (root / "posts.jsonl").write_bytes(
        posts_text(POSTS[:1]).encode() + b'{"user_id": "a", "text": "\xff", "image": null}\n'
    )
    with pytest.raises(
        CorpusError, match=r"^posts.jsonl, line 2: not valid UTF-8 \(invalid start byte at byte \d+\)$"
    ):
        load_corpus(root)


@pytest.mark.parametrize("name", ["users.csv", "posts.jsonl", "edges.csv"])
def test_missing_file(make_corpus, name):
    root = make_corpus()
    (root / name).unlink()
    with pytest.raises(CorpusError) as info:
        load_corpus(root)
    assert str(info.value) == f"{name}: required file not found in {root}"


def test_missing_folder(tmp_path):
    with pytest.raises(CorpusError) as info:
        load_corpus(tmp_path / "nope")
    assert str(info.value) == f"{tmp_path / 'nope'}: corpus folder not found"


def test_corpus_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(CorpusError("edges.csv", 3, "src", "boom")))
    assert (str(err), err.line, err.field) == ("edges.csv, line 3, field 'src': boom", 3, "src")


def test_json_error_message_is_stable():
    # The malformed-json case above relies on the json module's wording.
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads('{"user_id": "a" "text": ""}')
    assert (info.value.msg, info.value.colno) == ("Expecting ',' delimiter", 17)


def test_overflowing_statistic(make_corpus):
    from sample_corpus import USERS_CSV

    users = USERS_CSV.replace("c,cat,0,5,6,5", "c,cat,0,1e308,6,5").replace(
        "d,dog,7,7,8,5", "d,dog,7,-1e308,8,5"
    )
    with pytest.raises(CorpusError) as info:
        load_corpus(make_corpus(users=users))
    assert str(info.value) == (
        "users.csv, line 4, field 'likes': value 1e308 is beyond float32's range (|x| <= 3.4e+38), where the "
        "stages compute; rescale the column (e.g. log1p)"
    )


def test_load_image_enforces_the_pixel_limit_when_headers_were_not_checked(make_corpus):
    corpus = load_corpus(make_corpus(), image_check="exists", max_image_pixels=20)
    assert corpus.load_image(1).size == (2, 2)  # z.webp, 4 pixels
    with pytest.raises(CorpusError) as info:
        corpus.load_image(0)  # y.jpg, 5x6
    assert str(info.value) == (
        "posts.jsonl, line 2, field 'image': image is 5x6 = 30 pixels, over the limit of 20 "
        "(max_image_pixels): 'images/sub/y.jpg'"
    )
