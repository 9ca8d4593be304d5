"""Reading ``posts.jsonl``: one JSON object a line with ``user_id``, ``text``, ``image`` and optional ``post_id``."""

from __future__ import annotations

import json
import re
from itertools import repeat
from operator import itemgetter

import numpy as np

from corpus.fileio import decode_utf8, nfc, shown_id
from corpus.types import CorpusError

_MISSING = object()
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # a JSON escape of a UTF-16 surrogate, paired or not


_JSON_TYPES = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def _describe(value) -> str:
    """How a bad JSON value reads in an error: ``got number 42``, ``got null``, ``the key is missing``."""
    if value is _MISSING:
        return "the key is missing"
    if value is None:
        return "got null"
    return f"got {_JSON_TYPES.get(type(value), type(value).__name__)} {json.dumps(value)}"


def _first_bad(values: list, ok) -> int | None:
    for i, v in enumerate(values):
        if not ok(v):
            return i
    return None


def _parse_lines(text: str, name: str) -> tuple[list, list[int]]:
    """Decode each non-blank line; the error of a malformed line is json's own message with its column.

    The common case calls json's C scanner directly (``json.loads`` adds two Python layers and a regex per
    line, a third of the parse time at 2,000,000 posts); anything unusual (white space around the object,
    a blank line, an error) takes ``json.loads`` for the exact semantics and message.
    """
    scan = json.JSONDecoder().scan_once
    records, line_nos = [], []
    for line_no, line in enumerate(text.split("\n"), 1):
        try:
            obj, end = scan(line, 0)
            if end != len(line):
                raise StopIteration(end)
        except (StopIteration, ValueError, RecursionError):
            if not line or line.isspace():
                continue
            try:
                obj = json.loads(line)
            except ValueError as err:
                msg = getattr(err, "msg", str(err))
                col = getattr(err, "colno", None)
                suffix = f" (column {col})" if col else ""
                raise CorpusError(name, line_no, None, f"malformed JSON: {msg}{suffix}") from None
            except RecursionError:
                raise CorpusError(name, line_no, None, "malformed JSON: nested too deeply") from None
        records.append(obj)
        line_nos.append(line_no)
    return records, line_nos


def _columns(records: list[dict]) -> tuple[list, list, list]:
    """``user_id``, ``text`` and ``image`` of every record (``_MISSING`` where a key is absent)."""
    try:  # one C-level lookup per record when every record has the three keys (the common case)
        rows = list(map(itemgetter("user_id", "text", "image"), records))
    except KeyError:
        rows = [
            (r.get("user_id", _MISSING), r.get("text", _MISSING), r.get("image", _MISSING)) for r in records
        ]
    if not rows:
        return [], [], []
    uids, texts, images = map(list, zip(*rows))
    return uids, texts, images


def read_posts(data: bytes, user_index: dict[str, int], name: str) -> dict:
    """Parse and validate the posts, then order them by user (users.csv order; file order within a user).

    Returns a dict with ``offsets`` int64 [N+1], ``text`` [P], ``image`` [P], ``post_ids`` ([P] or None),
    ``lines`` int64 [P] (1-based line in the file), ``images_first_line`` {relative path: first line}.
    Blank lines are skipped; extra keys in an object are allowed and ignored.
    """
    text = decode_utf8(data, name)
    records, line_nos = _parse_lines(text, name)
    if not set(map(type, records)) <= {dict}:
        bad = _first_bad(records, lambda r: type(r) is dict)
        raise CorpusError(name, line_nos[bad], None, f"expected a JSON object; {_describe(records[bad])}")

    uids, texts, images = _columns(records)
    checks = (
        ("user_id", uids, {str}, lambda v: type(v) is str, "a string"),
        ("text", texts, {str}, lambda v: type(v) is str, 'a string ("" for no caption)'),
        (
            "image",
            images,
            {str, type(None)},
            lambda v: v is None or (type(v) is str and v != ""),
            "a relative path or null",
        ),
    )
    for field, values, types, ok, wanted in checks:
        # Type sets are computed at C speed; the per-value scan only runs to locate an error.
        if not set(map(type, values)) <= types or (field == "image" and "" in values):
            bad = _first_bad(values, ok)
            raise CorpusError(name, line_nos[bad], field, f"must be {wanted}; {_describe(values[bad])}")

    if _SURROGATE_ESCAPE.search(text):  # only a JSON escape can make a lone surrogate: one C-level scan
        for field, values in (("user_id", uids), ("text", texts), ("image", images)):
            _refuse_lone_surrogates(values, field, line_nos, name)
    if not all(map(str.isascii, uids)):
        uids = list(map(nfc, uids))
    user_of_post = np.fromiter(map(user_index.get, uids, repeat(-1)), dtype=np.int64, count=len(uids))
    if (user_of_post < 0).any():
        i = int(np.flatnonzero(user_of_post < 0)[0])
        raise CorpusError(
            name, line_nos[i], "user_id", f"unknown user id {shown_id(uids[i])} (not in users.csv)"
        )

    post_ids = _read_post_ids(records, line_nos, name)
    # Dict insertion order = first reference in file order, so image errors come in file order.
    # Walking backwards, earlier lines overwrite later ones: each path maps to its first line.
    first_line = dict(zip(reversed(images), reversed(line_nos)))
    first_line.pop(None, None)
    images_first_line = dict(sorted(first_line.items(), key=itemgetter(1)))
    lines = np.asarray(line_nos, dtype=np.int64)
    if user_of_post.size and np.any(np.diff(user_of_post) < 0):
        order = np.argsort(user_of_post, kind="stable")
        texts = [texts[i] for i in order]
        images = [images[i] for i in order]
        post_ids = None if post_ids is None else [post_ids[i] for i in order]
        lines = lines[order]
    offsets = np.zeros(len(user_index) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_of_post, minlength=len(user_index)), out=offsets[1:])

    return {
        "offsets": offsets,
        "text": texts,
        "image": images,
        "post_ids": post_ids,
        "lines": lines,
        "images_first_line": images_first_line,
    }


def _refuse_lone_surrogates(values: list, field: str, line_nos: list[int], name: str) -> None:
    """``CorpusError`` for the first string holding a lone UTF-16 surrogate (JSON's ``"\\ud800"``), which is
    not text: it cannot be encoded to UTF-8, and would crash the tokenizer or the cache writer later."""
    try:
        "".join(filter(None, values)).encode("utf-8")  # one C-level pass over the column (None: no image)
        return
    except UnicodeEncodeError:
        pass
    for value, line in zip(values, line_nos):
        if type(value) is not str:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise CorpusError(
                name,
                line,
                field,
                f"holds a lone UTF-16 surrogate {ascii(value[err.start])} at character {err.start}, which is not "
                "text (a JSON \\u escape of half a surrogate pair); fix the escape or remove it",
            ) from None


def _read_post_ids(records: list[dict], line_nos: list[int], name: str) -> list[str | None] | None:
    """Optional ``post_id`` (string or integer), unique where given; None when no line has one."""
    raw = [r.get("post_id") for r in records]
    types = set(map(type, raw))
    if types <= {type(None)}:
        return None
    if types == {str} and len(set(raw)) == len(raw):  # the common case, checked at C speed
        return raw
    seen: dict[str, int] = {}
    post_ids: list[str | None] = []
    for value, line in zip(raw, line_nos):
        if value is None:
            post_ids.append(None)
            continue
        if type(value) not in (str, int):  # bool is not int here
            raise CorpusError(name, line, "post_id", f"must be a string or an integer; {_describe(value)}")
        key = str(value)
        if key in seen:
            raise CorpusError(name, line, "post_id", f"duplicate post id {key!r} (first on line {seen[key]})")
        seen[key] = line
        post_ids.append(key)
    return post_ids
