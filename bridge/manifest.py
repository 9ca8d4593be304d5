"""A JSON manifest of what a bridge run completed, so that a rerun skips finished work.

Each entry is keyed like ``"mmga/round_1/stage2"`` and records the resolved config it ran with (which includes
digests of the entries it read from, so a change upstream invalidates everything downstream), the corpus
fingerprint, its output files with their sizes and sha256, its metrics and its wall time. The file is
rewritten atomically (temporary file + rename) after each completed entry, so a crash or Ctrl-C leaves
either the previous or the next manifest, never half of one.

An entry counts as complete when it exists, its config and fingerprint equal the requested ones, and every
output file is still there with the recorded size and hash (and passes the caller's validator, e.g. a cache
read). A complete entry with a different config or corpus is a conflict: the user must choose a new run
folder or ``--force`` (which drops the conflicting entry and recomputes it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from cache.atomic import atomic_write_bytes
from cache.digest import content_digest as cache_content_digest
from cache.types import CacheError

MANIFEST_VERSION = 1


class ManifestError(RuntimeError):
    """The manifest file cannot be read or has an unexpected shape."""


class ManifestConflict(RuntimeError):
    """The run folder holds results made with another config or corpus than the one requested."""


def to_jsonable(value: Any, base: Path | None = None) -> Any:
    """Turn a (nested) config into plain JSON types: dataclasses and mappings to dicts, tuples to lists,
    paths to strings (paths below ``base`` become ``"$RUN/<relative>"`` so a moved run folder still matches)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name), base) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, base) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v, base) for v in value]
    if isinstance(value, Path):
        if base is not None:
            try:
                return "$RUN/" + value.resolve().relative_to(base.resolve()).as_posix()
            except ValueError:
                pass
        return str(value)
    if isinstance(value, Enum):
        return to_jsonable(value.value, base)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return to_jsonable(value.item(), base)
    return repr(value)


def digest(value: Any) -> str:
    """sha256 of the canonical JSON of an already JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, fsync it, and rename it over ``path``
    (a full disk raises :class:`cache.atomic.DiskFullError` naming ``path``)."""
    atomic_write_bytes(Path(path), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def content_digest(path: Path) -> str:
    """A digest of what a file holds, for entries downstream to depend on: for a cache file, its datasets
    and attributes except the write time (``created``), so a file rewritten with the same data keeps it;
    for any other file, its sha256."""
    if Path(path).suffix == ".h5":
        try:
            return cache_content_digest(path)
        except CacheError:
            pass
    return file_sha256(path)


def backup_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".bak")


def _parse_manifest(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f", line {e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        raise ManifestError(f"{path}{where}: not valid JSON ({msg}); use a new --run-dir") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        raise ManifestError(f"{path}: field 'entries' is missing; use a new --run-dir")
    if data.get("version") != MANIFEST_VERSION:
        raise ManifestError(
            f"{path}: field 'version' is {data.get('version')!r}, this code writes {MANIFEST_VERSION}; "
            "use a new --run-dir"
        )
    return data


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ManifestError(f"{path}: cannot be read ({e.strerror}); use a new --run-dir") from None
    return _parse_manifest(raw, path)


class Manifest:
    """What a run folder completed. Load with :meth:`load`; every :meth:`record` rewrites the file atomically."""

    def __init__(self, path: Path, data: dict[str, Any] | None = None):
        self.path = Path(path)
        self.data: dict[str, Any] = data or {"version": MANIFEST_VERSION, "corpus": None, "entries": {}}

    @property
    def base(self) -> Path:
        return self.path.parent

    @property
    def backup_path(self) -> Path:
        return backup_path(self.path)

    @classmethod
    def load(cls, path: Path, log: Callable[[str], None] | None = print) -> Manifest:
        """Read ``path``; when it is damaged, recover from the previous good manifest (``manifest.json.bak``),
        saying so through ``log``. Raises :class:`ManifestError` only when neither can be read."""
        path = Path(path)
        if not path.exists() and not backup_path(path).exists():
            return cls(path)
        try:
            manifest = cls(path, _read_manifest(path))
        except ManifestError as err:
            try:
                data = _read_manifest(backup_path(path))
            except ManifestError:
                raise err from None
            if log is not None:
                log(
                    f"warning: {err}\nRecovered the previous good manifest from {backup_path(path)}: steps "
                    "completed after it are checked again (and recomputed if their outputs do not match)."
                )
            manifest = cls(path, data)
            manifest.save()
            return manifest
        return manifest

    def save(self) -> None:
        """Rewrite the manifest atomically, keeping the previous good one as ``manifest.json.bak``."""
        if self.path.is_file():
            try:
                previous = self.path.read_bytes()
                _parse_manifest(previous, self.path)
            except (OSError, ManifestError):
                previous = None  # a damaged file is never made the backup
            if previous is not None:
                atomic_write_bytes(self.backup_path, previous)
        write_json_atomic(self.path, self.data)

    # --- corpus -------------------------------------------------------------------------------------------
    def bind_corpus(self, corpus_path: Path, fingerprint: str, force: bool = False) -> None:
        """Record the run's corpus, or check it is the one the folder was made with."""
        old = self.data.get("corpus")
        new = {"path": to_jsonable(Path(corpus_path), self.base), "fingerprint": fingerprint}
        computed = [k for k in self.data["entries"] if not k.startswith("corpus/")]
        if old and old.get("fingerprint") != fingerprint and computed:
            if not force:
                raise ManifestConflict(
                    f"{self.base} was made from corpus {old.get('path')} (fingerprint "
                    f"{str(old.get('fingerprint'))[:12]}), but this run uses {new['path']} (fingerprint "
                    f"{fingerprint[:12]}). Use a new --run-dir, or --force to recompute everything."
                )
            self.data["entries"] = {}
        self.data["corpus"] = new
        self.save()

    # --- entries ------------------------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        return self.data["entries"].get(key)

    def entry_digest(self, key: str) -> str:
        """A digest of a recorded entry's config and output hashes, for downstream entries to depend on."""
        entry = self.get(key)
        if entry is None:
            raise KeyError(f"manifest {self.path} has no entry {key!r}")
        files = entry["files"]
        if all("content" in rec for rec in files.values()) and files:
            # content digests (not write times): a cache file repaired with the same data changes nothing
            return digest({"config": entry["config"], "content": {k: r["content"] for k, r in files.items()}})
        return digest({"config": entry["config"], "files": files})

    def is_complete(
        self,
        key: str,
        config: Any,
        fingerprint: str,
        force: bool = False,
        validate: Callable[[dict[str, Path]], None] | None = None,
    ) -> bool:
        """True when ``key`` completed with exactly this config and corpus and its outputs are intact.

        Raises :class:`ManifestConflict` when it completed with another config or corpus, unless ``force``,
        which forgets the entry. Outputs that are gone or changed make the entry incomplete (it reruns).
        """
        entry = self.get(key)
        if entry is None:
            return False
        config = to_jsonable(config, self.base)
        if entry.get("config") != config or entry.get("fingerprint") != fingerprint:
            if force:
                self.forget(key)
                return False
            what = (
                f"the corpus changed (fingerprint {str(entry.get('fingerprint'))[:12]} -> {fingerprint[:12]})"
                if entry.get("fingerprint") != fingerprint
                else "its config changed:\n" + config_diff(entry.get("config"), config)
            )
            raise ManifestConflict(
                f"{self.path}: {key} was completed before, but {what}\n"
                "Use a new --run-dir to keep both, or --force to recompute it (and what depends on it)."
            )
        outputs = self.outputs(key)
        for rel, rec in entry.get("files", {}).items():
            path = self._resolve(rel)
            if not path.is_file() or path.stat().st_size != rec["size"] or file_sha256(path) != rec["sha256"]:
                return False
        if any(not self._resolve(rel).is_dir() for rel in entry.get("dirs", [])):
            return False
        if validate is not None:
            try:
                validate(outputs)
            except Exception:
                return False
        return True

    def outputs(self, key: str) -> dict[str, Path]:
        entry = self.get(key)
        if entry is None:
            raise KeyError(f"manifest {self.path} has no entry {key!r}")
        return {name: self._resolve(p) for name, p in entry.get("outputs", {}).items()}

    def record(
        self,
        key: str,
        config: Any,
        fingerprint: str,
        outputs: Mapping[str, Path] | None = None,
        metrics: Any = None,
        seconds: float | None = None,
        hash_files: Mapping[str, Path] | None = None,
    ) -> None:
        """Mark ``key`` complete. ``outputs`` are named paths (files or folders) handed to later steps;
        every file among them (and in ``hash_files``) is hashed so a changed or truncated file is noticed."""
        outputs = dict(outputs or {})
        files: dict[str, Any] = {}
        dirs: list[str] = []
        for path in list(outputs.values()) + list((hash_files or {}).values()):
            path = Path(path)
            if path.is_file():
                files[self._rel(path)] = {
                    "size": path.stat().st_size,
                    "sha256": file_sha256(path),
                    "content": content_digest(path),
                }
            elif path.is_dir():
                dirs.append(self._rel(path))
            else:
                raise FileNotFoundError(f"{key}: output {path} does not exist, cannot record it as complete")
        self.data["entries"][key] = {
            "config": to_jsonable(config, self.base),
            "fingerprint": fingerprint,
            "outputs": {name: self._rel(Path(p)) for name, p in outputs.items()},
            "files": files,
            "dirs": sorted(set(dirs)),
            "metrics": to_jsonable(metrics, self.base),
            "seconds": seconds,
            "completed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self.save()

    def forget(self, key: str) -> None:
        if self.data["entries"].pop(key, None) is not None:
            self.save()

    # --- paths relative to the run folder -----------------------------------------------------------------
    def _rel(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.base.resolve()).as_posix()
        except ValueError:
            return str(path.resolve())

    def _resolve(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.base / p
