"""A JSON manifest of what a bridge run completed, so that a rerun skips finished work.

Each entry is keyed by a typed key (``bridge.runfolder.keys``: ``"seed_0/mmga/round_1/stage2"``,
``"eval/seed_0/no_align/round_2"``) and records the resolved config it ran with (which includes
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

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bridge.runfolder.keys import EvalKey, StageKey
from bridge.runfolder.records import (
    FileRecord,
    config_diff,
    digest,
    resolve_run_relative,
    run_relative,
    to_jsonable,
)
from cache.atomic import atomic_write_bytes

MANIFEST_VERSION = 1
Key = str | StageKey | EvalKey


class ManifestError(RuntimeError):
    """The manifest file cannot be read or has an unexpected shape."""


class ManifestConflict(RuntimeError):
    """The run folder holds results made with another config or corpus than the one requested."""


@dataclass(frozen=True)
class Entry:
    """One completed step as the manifest recorded it.

    Attributes:
        config: the JSON of what it ran with (the resolved config and digests of its inputs).
        fingerprint: the corpus fingerprint it ran on ("" for steps that read no corpus).
        outputs: named output paths (files or folders), resolved against the run folder.
        files: the recorded files (run-relative names) with their size and hashes.
        dirs: the recorded output folders (run-relative names).
        metrics: what the step reported (JSON).
        seconds: its wall time.
    """

    config: Any
    fingerprint: str
    outputs: dict[str, Path]
    files: dict[str, FileRecord] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    metrics: Any = None
    seconds: float = 0.0


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, fsync it, and rename it over ``path``
    (a full disk raises :class:`cache.atomic.DiskFullError` naming ``path``)."""
    atomic_write_bytes(Path(path), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


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
        new = {"path": run_relative(Path(corpus_path), self.base), "fingerprint": fingerprint}
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

    @property
    def corpus_path(self) -> Path | None:
        """The corpus folder the run was made from (resolved against the run folder), or None."""
        recorded = (self.data.get("corpus") or {}).get("path")
        return None if not recorded else resolve_run_relative(str(recorded), self.base)

    @property
    def corpus_fingerprint(self) -> str | None:
        return (self.data.get("corpus") or {}).get("fingerprint")

    # --- entries ------------------------------------------------------------------------------------------
    def entry(self, key: Key) -> Entry | None:
        """The completed step ``key``, typed; None when the manifest has no such entry."""
        raw = self.data["entries"].get(str(key))
        if raw is None:
            return None
        return Entry(
            config=raw.get("config"),
            fingerprint=raw.get("fingerprint", ""),
            outputs={name: self._resolve(p) for name, p in raw.get("outputs", {}).items()},
            files={rel: FileRecord.from_json(rec) for rel, rec in raw.get("files", {}).items()},
            dirs=tuple(raw.get("dirs", ())),
            metrics=raw.get("metrics"),
            seconds=float(raw.get("seconds") or 0.0),
        )

    def keys(self) -> Iterator[str]:
        return iter(list(self.data["entries"]))

    def stage_keys(self) -> list[StageKey]:
        """Every recorded stage run, parsed."""
        return [k for k in map(StageKey.parse, self.keys()) if k is not None]

    def eval_keys(self) -> list[EvalKey]:
        """Every recorded evaluation, parsed."""
        return [k for k in map(EvalKey.parse, self.keys()) if k is not None]

    def entry_digest(self, key: Key) -> str:
        """A digest of a recorded entry's config and output hashes, for downstream entries to depend on."""
        raw = self.data["entries"].get(str(key))
        if raw is None:
            raise KeyError(f"manifest {self.path} has no entry {str(key)!r}")
        files = raw["files"]
        if all("content" in rec for rec in files.values()) and files:
            # content digests (not write times): a cache file repaired with the same data changes nothing
            return digest({"config": raw["config"], "content": {k: r["content"] for k, r in files.items()}})
        return digest({"config": raw["config"], "files": files})

    def intact(self, key: Key) -> bool:
        """True when ``key`` is recorded and every file it recorded still matches its record (size and sha256)
        and every folder it recorded is still there: the one "outputs unchanged" check."""
        entry = self.entry(key)
        if entry is None:
            return False
        if any(not rec.matches(self._resolve(rel)) for rel, rec in entry.files.items()):
            return False
        return all(self._resolve(rel).is_dir() for rel in entry.dirs)

    def is_complete(
        self,
        key: Key,
        config: Any,
        fingerprint: str,
        force: bool = False,
        validate: Callable[[dict[str, Path]], None] | None = None,
    ) -> bool:
        """True when ``key`` completed with exactly this config and corpus and its outputs are intact.

        Raises :class:`ManifestConflict` when it completed with another config or corpus, unless ``force``,
        which forgets the entry. Outputs that are gone or changed make the entry incomplete (it reruns).
        """
        entry = self.entry(key)
        if entry is None:
            return False
        config = to_jsonable(config, self.base)
        if entry.config != config or entry.fingerprint != fingerprint:
            if force:
                self.forget(key)
                return False
            what = (
                f"the corpus changed (fingerprint {str(entry.fingerprint)[:12]} -> {fingerprint[:12]})"
                if entry.fingerprint != fingerprint
                else "its config changed:\n" + config_diff(entry.config, config)
            )
            raise ManifestConflict(
                f"{self.path}: {key} was completed before, but {what}\n"
                "Use a new --run-dir to keep both, or --force to recompute it (and what depends on it)."
            )
        if not self.intact(key):
            return False
        if validate is not None:
            try:
                validate(entry.outputs)
            except Exception:
                return False
        return True

    def outputs(self, key: Key) -> dict[str, Path]:
        entry = self.entry(key)
        if entry is None:
            raise KeyError(f"manifest {self.path} has no entry {str(key)!r}")
        return entry.outputs

    def record(
        self,
        key: Key,
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
                files[self._rel(path)] = FileRecord.of(path).to_json()
            elif path.is_dir():
                dirs.append(self._rel(path))
            else:
                raise FileNotFoundError(f"{key}: output {path} does not exist, cannot record it as complete")
        self.data["entries"][str(key)] = {
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

    def forget(self, key: Key) -> None:
        if self.data["entries"].pop(str(key), None) is not None:
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
