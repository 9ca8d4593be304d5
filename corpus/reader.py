"""``load_corpus``: read and validate a corpus folder (format: docs/corpus.md).

Every bad input raises ``CorpusError(file, line, field, msg)``; nothing is dropped silently (self-loops in
``edges.csv`` are dropped with a ``CorpusWarning``). Parsing avoids per-row Python work where it can (C-level
splits and maps, numpy for numbers), so the paper's size (60,000 users, 2,000,000 posts, 1,000,000 edges)
loads in well under a minute; figures in docs/corpus.md.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Literal

import numpy as np

from corpus.fileio import decode_utf8, nfc, shown_id
from corpus.images import check_images
from corpus.posts import read_posts
from corpus.splits import stratified_split
from corpus.types import SPLIT_NAMES, Corpus, CorpusError, CorpusWarning

USERS, POSTS, EDGES = "users.csv", "posts.jsonl", "edges.csv"
RESERVED_COLUMNS = ("user_id", "label", "fans", "split")
FORMAT_TAG = b"mmga-corpus-v1"
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
# A statistic must fit float32, where the stages compute (3.4e38); larger values are typos or overflows.
MAX_STATISTIC = float(np.finfo(np.float32).max)
# A fans count above this (more than the world's population) is almost surely a data error: it is kept, with a
# CorpusWarning, since a single such user dominates the fans regression's error (docs/corpus.md).
FANS_WARN_ABOVE = 1e10
# A plain decimal numeral: ASCII digits, optional sign, point and exponent; no '_' separators, no other scripts'
# digits (Python's float() accepts '1_000', Arabic-Indic and full-width digits).
_PLAIN_NUMBER = r"[ \t]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t]*"
_PLAIN_NUMBERS = re.compile(rf"(?:{_PLAIN_NUMBER}\n)*{_PLAIN_NUMBER}")
_NON_FINITE_WORDS = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def load_corpus(
    root: str | Path,
    *,
    split_seed: int = 0,
    min_labelled_per_class: int = 5,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    image_check: Literal["header", "decode", "exists"] = "header",
    progress: bool | None = None,
    image_workers: int = 1,
) -> Corpus:
    """Read and validate the corpus folder ``root``.

    Args:
        root: folder with ``users.csv``, ``posts.jsonl``, ``edges.csv`` and the images.
        split_seed: seed of the stratified 60/20/20 split made when ``users.csv`` has no ``split`` column.
        min_labelled_per_class: when any user has a label, there must be at least 2 classes and each needs at
            least this many labelled users (default 5: enough for one user in each of train/val/test).
            0 turns the check off.
        max_image_pixels: largest allowed ``width * height`` of an image; None turns the check off.
        image_check: ``"header"`` (default) opens each distinct image's header (format and size, cheap);
            ``"decode"`` fully decodes each one (slow, catches truncated files up front); ``"exists"`` only
            checks that the file is there. Whatever the mode, ``Corpus.load_image`` names the file on failure.
        progress: show a progress bar for the image check (None: only for large corpora on a terminal).
        image_workers: processes for ``image_check="decode"`` (1: in this process).
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(root, None, None, "corpus folder not found")
    digest = hashlib.sha256(FORMAT_TAG)

    users_bytes = _read_bytes(root, USERS, digest)
    users = _parse_users(users_bytes, min_labelled_per_class)
    user_index = {uid: i for i, uid in enumerate(users.user_ids)}

    posts_bytes = _read_bytes(root, POSTS, digest)
    posts = read_posts(posts_bytes, user_index, POSTS)

    edges_bytes = _read_bytes(root, EDGES, digest)
    edges = _parse_edges(edges_bytes, user_index)

    sizes = check_images(
        root,
        posts["images_first_line"],
        POSTS,
        max_image_pixels,
        image_check,
        progress=progress,
        workers=image_workers,
    )
    for rel in sorted(sizes):
        digest.update(f"{rel}\0{sizes[rel]}\n".encode())

    if users.splits is None:
        splits = stratified_split(users.labels, seed=split_seed)
        split_source = f"seeded-stratified-60/20/20(seed={split_seed})"
    else:
        splits, split_source = users.splits, USERS
    _warn_topics_without_train_users(users.labels, users.label_names, splits)

    return Corpus(
        root=root,
        user_ids=users.user_ids,
        features=users.features,
        feature_names=users.feature_names,
        labels=users.labels,
        label_names=users.label_names,
        fans=users.fans,
        splits=splits,
        edges=edges,
        post_offsets=posts["offsets"],
        post_text=posts["text"],
        post_image=posts["image"],
        fingerprint=digest.hexdigest(),
        split_source=split_source,
        post_ids=posts["post_ids"],
        post_lines=posts["lines"],
        feature_mean=users.feature_mean,
        feature_std=users.feature_std,
        max_image_pixels=max_image_pixels,
    )


def reuse_or_load(root: str | Path, corpus: Corpus | None = None, **load_kwargs) -> Corpus:
    """``corpus`` when it was loaded from the folder ``root``, else ``load_corpus(root, **load_kwargs)``.

    The stages take an already loaded ``Corpus`` this way, so a caller running many stages on one corpus (the
    bridge) reads and validates it once. A corpus of another folder is refused rather than silently used.
    """
    if corpus is None:
        return load_corpus(root, **load_kwargs)
    if os.path.realpath(corpus.root) != os.path.realpath(root):
        raise ValueError(f"the corpus passed in was loaded from {corpus.root}, but the config names {root}")
    return corpus


def _read_bytes(root: Path, name: str, digest) -> bytes:
    path = root / name
    if not path.is_file():
        raise CorpusError(name, None, None, f"required file not found in {root}")
    data = path.read_bytes()
    digest.update(f"\0{name}\0{len(data)}\0".encode())
    digest.update(data)
    return data


def _read_csv(data: bytes, name: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows and the 1-based line of each row; blank lines are skipped."""
    text = decode_utf8(data, name)
    if name == EDGES:  # only ids there: the whole text in NFC at once (commas and newlines are unchanged)
        text = nfc(text)
    if '"' not in text and "\r" not in text:
        return _read_plain_csv(text, name)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise CorpusError(name, None, None, "file is empty (a header row is required)")
        header = [h.strip() for h in header]
        rows, lines = [], []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise CorpusError(
                    name,
                    reader.line_num,
                    None,
                    f"expected {len(header)} fields (as in the header), found {len(row)}",
                )
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as err:
        raise CorpusError(name, reader.line_num, None, f"malformed CSV: {err}") from None
    _check_header(header, name)
    return header, rows, lines


def _read_plain_csv(text: str, name: str) -> tuple[list[str], list[list[str]], list[int]]:
    """``_read_csv`` for a file without quotes or carriage returns, where a row is a line split at commas
    (what ``csv.reader`` would return, at a fraction of the cost for a million edges)."""
    lines = text.split("\n")
    if not lines[0]:
        raise CorpusError(name, None, None, "file is empty (a header row is required)")
    header = [h.strip() for h in lines[0].split(",")]
    body = lines[1:]
    if "" in body:
        numbered = [(i, line) for i, line in enumerate(body, 2) if line]
        line_nos = [i for i, _ in numbered]
        rows = [line.split(",") for _, line in numbered]
    else:
        line_nos = list(range(2, len(body) + 2))
        rows = [line.split(",") for line in body]
    if not set(map(len, rows)) <= {len(header)}:
        i = next(i for i, row in enumerate(rows) if len(row) != len(header))
        raise CorpusError(
            name, line_nos[i], None, f"expected {len(header)} fields (as in the header), found {len(rows[i])}"
        )
    _check_header(header, name)
    return header, rows, line_nos


def _check_header(header: list[str], name: str) -> None:
    seen = set()
    for col in header:
        if col in seen:
            raise CorpusError(name, 1, col, "duplicate column in the header")
        if not col:
            raise CorpusError(name, 1, None, "empty column name in the header")
        seen.add(col)


def _parse_numeric(
    values: tuple[str, ...], lines: list[int], name: str, column: str, allow_empty: bool
) -> np.ndarray:
    """float64 [N]; empty -> nan when ``allow_empty``; any other non-number or non-finite value is an error."""
    arr = np.asarray(values, dtype=str)
    empty = np.char.str_len(np.char.strip(arr)) == 0 if arr.size else np.zeros(0, dtype=bool)
    if empty.any() and not allow_empty:
        i = int(np.flatnonzero(empty)[0])
        raise CorpusError(name, lines[i], column, "missing value (empty); every statistic must be a number")
    out = np.full(arr.shape[0], np.nan)
    given = [values[i] for i in np.flatnonzero(~empty)] if empty.any() else list(values)
    joined = "\n".join(given)
    if joined.count("\n") != len(given) - 1 or not _PLAIN_NUMBERS.fullmatch(joined):  # one C-level match
        for i in np.flatnonzero(~empty):
            _check_plain_number(values[i], name, lines[i], column)
    out[~empty] = arr[~empty].astype(np.float64)
    bad = ~empty & ~np.isfinite(out)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CorpusError(name, lines[i], column, f"not a finite number: {values[i]!r}")
    return out


def _check_plain_number(value: str, name: str, line: int, column: str) -> None:
    """``CorpusError`` unless ``value`` is a plain decimal numeral (see ``_PLAIN_NUMBER``)."""
    if re.fullmatch(_PLAIN_NUMBER, value):
        return
    if value.strip().lower() in _NON_FINITE_WORDS:
        raise CorpusError(name, line, column, f"not a finite number: {value!r}")
    try:
        float(value)
    except ValueError:
        raise CorpusError(name, line, column, f"not a number: {value!r}") from None
    raise CorpusError(
        name,
        line,
        column,
        f"not a plain decimal number: {value!r} (escaped: {ascii(value)}); write ASCII digits 0-9, with no "
        "'_' separators and no other scripts' digits",
    )


@dataclass
class _UserTable:
    """What ``users.csv`` holds, parsed and checked (X standardized; ``splits`` None without a split column)."""

    user_ids: list[str]
    features: np.ndarray
    feature_names: list[str]
    feature_mean: np.ndarray
    feature_std: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    fans: np.ndarray
    splits: np.ndarray | None


def _parse_users(data: bytes, min_labelled_per_class: int) -> _UserTable:
    header, rows, lines = _read_csv(data, USERS)
    if "user_id" not in header:
        raise CorpusError(USERS, 1, "user_id", "required column missing from the header")
    if not rows:
        raise CorpusError(USERS, None, None, "no users (only a header)")
    columns = dict(zip(header, zip(*rows)))
    user_ids = _parse_user_ids(list(columns["user_id"]), lines)
    feature_names = [h for h in header if h not in RESERVED_COLUMNS]
    features, mean, std = _standardized_features(columns, feature_names, lines)
    labels, label_names = _parse_labels(columns.get("label"), lines, min_labelled_per_class)
    fans = _parse_fans(columns["fans"], lines) if "fans" in columns else np.full(len(rows), np.nan)
    splits = _parse_split_column(columns["split"], lines) if "split" in columns else None
    return _UserTable(user_ids, features, feature_names, mean, std, labels, label_names, fans, splits)


def _parse_user_ids(raw_ids: list[str], lines: list[int]) -> list[str]:
    """The ids in NFC; an empty id, white space around one and duplicates (NFC-equal ones too) are errors."""
    user_ids = [nfc(uid) for uid in raw_ids]
    first_line: dict[str, int] = {}
    first_raw: dict[str, str] = {}
    for raw, uid, line in zip(raw_ids, user_ids, lines):
        if not uid.strip():
            raise CorpusError(USERS, line, "user_id", "empty user id")
        if uid != uid.strip():
            raise CorpusError(
                USERS,
                line,
                "user_id",
                f"user id {uid!r} has leading or trailing whitespace; remove it (posts.jsonl and edges.csv "
                "refer to users by the exact id)",
            )
        if uid in first_line:
            same = (
                ""
                if raw == first_raw[uid]
                else (f"; {ascii(raw)} and {ascii(first_raw[uid])} are the same text in Unicode NFC")
            )
            raise CorpusError(
                USERS, line, "user_id", f"duplicate user id {uid!r} (first on line {first_line[uid]}){same}"
            )
        first_line[uid] = line
        first_raw[uid] = raw
    return user_ids


def _standardized_features(
    columns: dict, feature_names: list[str], lines: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X standardized per column (mean 0, std 1; a constant column is 0), and the means and deviations."""
    raw = np.zeros((len(lines), len(feature_names)))
    for j, col in enumerate(feature_names):
        raw[:, j] = _parse_numeric(columns[col], lines, USERS, col, allow_empty=False)
        big = np.abs(raw[:, j]) > MAX_STATISTIC
        if big.any():
            i = int(np.flatnonzero(big)[0])
            raise CorpusError(
                USERS,
                lines[i],
                col,
                f"value {columns[col][i].strip()} is beyond float32's range (|x| <= {MAX_STATISTIC:.3g}), where "
                "the stages compute; rescale the column (e.g. log1p)",
            )
    with np.errstate(over="ignore", invalid="ignore"):
        mean = raw.mean(axis=0)
        std = raw.std(axis=0)
        safe_std = np.where(std > 0, std, 1.0)
        features = np.where(std > 0, (raw - mean) / safe_std, 0.0).astype(np.float32)
    bad = ~np.isfinite(mean) | ~np.isfinite(std) | ~np.isfinite(features).all(axis=0)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        i = int(np.argmax(np.abs(raw[:, j])))  # the largest value is the one that overflows
        raise CorpusError(
            USERS,
            lines[i],
            feature_names[j],
            f"values too large to standardize (overflow; largest {columns[feature_names[j]][i].strip()} on this "
            "line); rescale the column (e.g. log1p)",
        )
    return features, mean, std


def _parse_fans(values, lines: list[int]) -> np.ndarray:
    fans = _parse_numeric(values, lines, USERS, "fans", allow_empty=True)
    bad = np.isfinite(fans) & ((fans < 0) | (fans != np.round(fans)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CorpusError(USERS, lines[i], "fans", f"must be a non-negative integer, got {values[i]!r}")
    huge = np.isfinite(fans) & (fans > FANS_WARN_ABOVE)
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        warnings.warn(
            f"{USERS}, line {lines[i]}, field 'fans': {values[i].strip()} fans is above {FANS_WARN_ABOVE:.0e} "
            f"(more than the world's population), a likely data error kept as is ({int(huge.sum())} such "
            "user(s)); one such value dominates the fans regression's error",
            CorpusWarning,
            stacklevel=4,
        )
    return fans


def _parse_split_column(values, lines: list[int]) -> np.ndarray:
    codes = {name: k for k, name in enumerate(SPLIT_NAMES)}
    stripped = [v.strip() for v in values]
    for v, line in zip(stripped, lines):
        if v not in codes:
            raise CorpusError(
                USERS,
                line,
                "split",
                f"must be train, val or test, got {v!r} (drop the column for a seeded split)",
            )
    return np.array([codes[v] for v in stripped], dtype=np.int8)


def _parse_labels(values, lines: list[int], min_per_class: int) -> tuple[np.ndarray, list[str]]:
    if values is None:
        return np.full(len(lines), -1, dtype=np.int64), []
    stripped = [nfc(v.strip()) for v in values]
    label_names = sorted({v for v in stripped if v})
    code = {name: k for k, name in enumerate(label_names)}
    labels = np.array([code.get(v, -1) for v in stripped], dtype=np.int64)
    if label_names and min_per_class > 0:
        counts = np.bincount(labels[labels >= 0], minlength=len(label_names))
        if len(label_names) < 2:
            first = lines[int(np.flatnonzero(labels >= 0)[0])]
            raise CorpusError(
                USERS,
                first,
                "label",
                f"only one label class ({label_names[0]!r}); at least 2 are needed to evaluate",
            )
        rare = int(np.argmin(counts))
        if counts[rare] < min_per_class:
            first = lines[int(np.flatnonzero(labels == rare)[0])]
            raise CorpusError(
                USERS,
                first,
                "label",
                f"label {label_names[rare]!r} has {counts[rare]} labelled user(s); at least {min_per_class} per class "
                "are needed to evaluate (min_labelled_per_class)",
            )
    return labels, label_names


def _warn_topics_without_train_users(labels: np.ndarray, label_names: list[str], splits: np.ndarray) -> None:
    """A ``CorpusWarning`` naming each topic that has labelled users but none in the train split: the
    downstream classifier never sees it, so its val/test users are always wrong."""
    if not label_names:
        return
    k = len(label_names)
    labelled = labels >= 0
    per_split = [np.bincount(labels[labelled & (splits == s)], minlength=k) for s in range(len(SPLIT_NAMES))]
    for c in np.flatnonzero((per_split[0] == 0) & (per_split[1] + per_split[2] > 0)):
        warnings.warn(
            f"{USERS}: topic {label_names[c]!r} has no users in the train split ({int(per_split[1][c])} in val, "
            f"{int(per_split[2][c])} in test); the topic classifier can never predict it",
            CorpusWarning,
            stacklevel=3,
        )


def _edge_columns(data: bytes) -> tuple[list[str], list[str], list[str], list[int] | None]:
    """Header, src ids, dst ids and line numbers (None: line i + 2) of ``edges.csv`` (ids in NFC).

    A plain file (no quotes, no carriage returns, no blank lines, one comma a line) is split in two C-level
    calls instead of one ``split`` per line: 10x faster at a million edges.
    """
    text = nfc(decode_utf8(data, EDGES))
    head, _, body = text.partition("\n")
    if body.endswith("\n"):
        body = body[:-1]
    if body and '"' not in text and "\r" not in text:
        lines = body.split("\n")
        if set(map(str.count, lines, repeat(","))) == {1}:
            flat = body.replace("\n", ",").split(",")
            return [h.strip() for h in head.split(",")], flat[0::2], flat[1::2], None
    header, rows, line_nos = _read_csv(data, EDGES)
    if header != ["src", "dst"] or not rows:
        return header, [], [], line_nos
    src_ids, dst_ids = (list(col) for col in zip(*rows))
    return header, src_ids, dst_ids, line_nos


def _parse_edges(data: bytes, user_index: dict[str, int]) -> np.ndarray:
    header, src_ids, dst_ids, line_nos = _edge_columns(data)
    if header != ["src", "dst"]:
        raise CorpusError(EDGES, 1, None, f"header must be 'src,dst', got {','.join(header)!r}")
    num_users = len(user_index)
    if not src_ids:
        return np.zeros((0, 2), dtype=np.int64)
    lines = line_nos if line_nos is not None else range(2, len(src_ids) + 2)
    src = np.fromiter(map(user_index.get, src_ids, repeat(-1)), dtype=np.int64, count=len(src_ids))
    dst = np.fromiter(map(user_index.get, dst_ids, repeat(-1)), dtype=np.int64, count=len(dst_ids))
    for field, idx, ids in (("src", src, src_ids), ("dst", dst, dst_ids)):
        if (idx < 0).any():
            i = int(np.flatnonzero(idx < 0)[0])
            raise CorpusError(EDGES, lines[i], field, f"unknown user id {shown_id(ids[i])} (not in {USERS})")
    loops = src == dst
    if loops.any():
        first = lines[int(np.flatnonzero(loops)[0])]
        warnings.warn(
            f"{EDGES}: dropped {int(loops.sum())} self-loop(s) (first on line {first})",
            CorpusWarning,
            stacklevel=3,
        )
        src, dst = src[~loops], dst[~loops]
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    keys = np.unique(lo * num_users + hi)
    return np.stack([keys // num_users, keys % num_users], axis=1).astype(np.int64)
