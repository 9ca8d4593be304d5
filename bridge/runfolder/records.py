"""What the manifest records of a file, and the one check that a file still matches its record.

A :class:`FileRecord` holds a file's size, its sha256 and, for a cache file, a digest of what it holds
(``cache.digest``: datasets and attributes but the write time, so a file rewritten with the same data keeps it).
:meth:`FileRecord.matches` is the only "this file is still the one the run wrote" test: the stage skip logic, the
corpus-ownership check and ``bridge.load_run`` all call it. Hashes are computed once per file per process (keyed
by path, size and modification time), so a run that checks a file many times reads it once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from cache.digest import content_digest as cache_content_digest
from cache.types import CacheError

_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 hex of a file's bytes, computed once per (path, size, mtime) in this process."""
    stat = Path(path).stat()
    memo_key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    cached = _SHA_MEMO.get(memo_key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    _SHA_MEMO[memo_key] = h.hexdigest()
    return _SHA_MEMO[memo_key]


def content_digest(path: Path) -> str:
    """A digest of what a file holds, for entries downstream to depend on: for a cache file its datasets and
    attributes except the write time (``created``); for any other file its sha256."""
    if Path(path).suffix == ".h5":
        try:
            return cache_content_digest(path)
        except CacheError:
            pass
    return file_sha256(path)


@dataclass(frozen=True)
class FileRecord:
    """A file as the manifest recorded it."""

    size: int
    sha256: str
    content: str | None = None

    @classmethod
    def of(cls, path: Path) -> FileRecord:
        path = Path(path)
        return cls(path.stat().st_size, file_sha256(path), content_digest(path))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileRecord:
        return cls(int(data["size"]), str(data["sha256"]), data.get("content"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"size": self.size, "sha256": self.sha256}
        return out if self.content is None else {**out, "content": self.content}

    def matches(self, path: Path) -> bool:
        """True when ``path`` is a file with the recorded size and sha256."""
        path = Path(path)
        return path.is_file() and path.stat().st_size == self.size and file_sha256(path) == self.sha256


def to_jsonable(value: Any, base: Path | None = None) -> Any:
    """Turn a (nested) config into plain JSON types: dataclasses and mappings to dicts, tuples to lists,
    paths to strings (paths below ``base`` become ``"$RUN/<relative>"`` so a moved run folder still matches)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name), base) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, base) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v, base) for v in value]
    if isinstance(value, Path):
        return run_relative(value, base)
    if isinstance(value, Enum):
        return to_jsonable(value.value, base)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return to_jsonable(value.item(), base)
    return repr(value)


RUN_PREFIX = "$RUN/"


def run_relative(path: Path, base: Path | None) -> str:
    """``"$RUN/<relative>"`` for a path below the run folder ``base``, else the path as it is."""
    if base is not None:
        try:
            return RUN_PREFIX + Path(path).resolve().relative_to(Path(base).resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def resolve_run_relative(text: str, base: Path) -> Path:
    """The inverse of :func:`run_relative`."""
    return Path(base) / text[len(RUN_PREFIX) :] if text.startswith(RUN_PREFIX) else Path(text)


def digest(value: Any) -> str:
    """sha256 of the canonical JSON of an already JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: value}


def config_diff(old: Any, new: Any, limit: int = 8) -> str:
    """A short human-readable list of the dotted keys whose values differ."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(f"  {key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more
