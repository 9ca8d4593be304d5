"""Print what a cache file or a cache folder holds, and whether it passes the read checks.

Usage: ``python -m cache.inspect runs/demo/mmga/cache`` (every round) or ``... round_0/encoders.h5``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np

from cache.io import check_all_values, check_header, open_h5, read_datasets, rerun_advice
from cache.schema import (
    ATTR_KIND,
    ATTR_NUM_EDGES,
    ATTR_PRODUCER,
    ATTR_ROUND,
    ATTR_SCHEMA_VERSION,
    DATASETS,
    READABLE_SCHEMA_VERSIONS,
    REQUIRED_ATTRS,
    SCHEMA_VERSION,
    STAGE_NAME,
)
from cache.types import CacheError
from cache.validate import fmt_shape
from mmga_common.cli import prog_name

PRODUCER_LINES = 25


def _round_key(path: Path) -> tuple:
    match = re.fullmatch(r"round_(\d+)", path.parent.name)
    return (int(match.group(1)) if match else -1, str(path))


def find_files(target: Path) -> tuple[list[Path], list[Path]]:
    """Cache files under ``target`` (a file or a folder) by round, and leftover temporary files."""
    if target.is_file():
        return [target], []
    files = sorted(target.rglob("*.h5"), key=_round_key)
    stale = sorted(target.rglob("*.h5.tmp-*"), key=_round_key)
    return files, stale


def _flatten(obj, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(obj, dict) and obj:
        items = []
        for key in sorted(obj):
            items += _flatten(obj[key], f"{prefix}.{key}" if prefix else str(key))
        return items
    return [(prefix or "(value)", obj)]


def _stats(arr: np.ndarray) -> str:
    if arr.size == 0:
        return "empty"
    if arr.dtype == np.bool_:
        n_true = int(arr.sum())
        return f"True {n_true} / False {arr.size - n_true}"
    finite = np.isfinite(arr) if np.issubdtype(arr.dtype, np.floating) else np.ones(arr.shape, bool)
    vals = arr[finite]
    text = (
        f"min {vals.min():.4g}  max {vals.max():.4g}  mean {vals.mean():.4g}"
        if vals.size
        else "no finite values"
    )
    if not finite.all():
        text += f"  NON-FINITE {int((~finite).sum())}"
    return text


def _member_line(h5, name: str, values: np.ndarray | None) -> str:
    """One member of the file; links are named, never followed, and data is shown only once checked."""
    link = h5.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        target = f" -> {link.filename}:{link.path}" if isinstance(link, h5py.ExternalLink) else ""
        return f"    {name:<15} {type(link).__name__}{target} (not followed)"
    obj = h5[name]
    if not isinstance(obj, h5py.Dataset):
        return f"    {name:<15} group (not part of the schema)"
    chunks = fmt_shape(obj.chunks) if obj.chunks else "contiguous"
    row = f"    {name:<15} {fmt_shape(obj.shape):<14} {str(obj.dtype):<8} chunks {chunks:<12}"
    return row + (f" {_stats(values)}" if values is not None else "")


def describe(path: Path, fingerprint: str | None, stats: bool, full_producer: bool) -> tuple[str, bool]:
    """A readable description of one cache file, and whether it passed the checks."""
    lines = [str(path)]
    try:
        h5 = open_h5(path)
    except CacheError as err:
        return f"{path}\n  ERROR: {err.msg}", False
    with h5:
        try:
            kind = str(h5.attrs.get("kind", ""))
            info = check_header(h5, path, kind, round_idx=None, fingerprint=fingerprint, num_users=None)
            arrays, scans = read_datasets(h5, path, kind)
            check_all_values(kind, arrays, path, info.num_users, rerun_advice(kind, info.round), scans)
            status, ok = (
                "OK (schema, shapes, dtypes, values" + (", fingerprint)" if fingerprint else ")"),
                True,
            )
        except CacheError as err:
            status, ok, arrays = f"ERROR: {err}", False, {}
        try:
            attrs = dict(h5.attrs)
        except Exception as err:  # noqa: BLE001 - a crafted attribute h5py cannot decode
            return f"{path}\n  ERROR: {status}; attributes unreadable ({err})", False
        order = [ATTR_KIND, ATTR_ROUND, ATTR_SCHEMA_VERSION, *REQUIRED_ATTRS, ATTR_NUM_EDGES, *sorted(attrs)]
        for key in dict.fromkeys(order):
            if key in attrs and key != ATTR_PRODUCER:
                lines.append(f"  {key:<19} {attrs[key]}")
        if str(attrs.get(ATTR_KIND)) in STAGE_NAME:
            lines.append(f"  {'written by':<19} {STAGE_NAME[str(attrs[ATTR_KIND])]}")
        readable = ", ".join(str(v) for v in READABLE_SCHEMA_VERSIONS)
        lines.append(f"  {'this code reads':<19} schema_version {readable} (writes {SCHEMA_VERSION})")
        lines.append(f"  {'status':<19} {status}")
        lines.append("  datasets:")
        known = [spec.name for spec in DATASETS.get(str(attrs.get(ATTR_KIND)), ())]
        for name in dict.fromkeys([n for n in known if n in h5] + sorted(h5)):
            lines.append(_member_line(h5, name, arrays.get(name) if stats else None))
        producer = attrs.get(ATTR_PRODUCER)
        if producer is not None:
            lines.append("  producer config:")
            try:
                parsed = json.loads(producer)
            except (TypeError, ValueError):
                parsed = None
            if full_producer or parsed is None:
                text = json.dumps(parsed, indent=2, sort_keys=True) if parsed is not None else str(producer)
                lines.append(textwrap.indent(text, "    "))
            else:
                flat = _flatten(parsed)
                for key, value in flat[:PRODUCER_LINES]:
                    text = json.dumps(value)
                    lines.append(f"    {key} = {text if len(text) <= 80 else text[:77] + '...'}")
                if len(flat) > PRODUCER_LINES:
                    lines.append(f"    ... {len(flat) - PRODUCER_LINES} more (--producer prints all)")
    return "\n".join(lines), ok


def _shown_path(path: Path, limit: int = 200) -> str:
    """``path`` for a message, shortened in the middle when longer than ``limit`` characters."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 :]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog_name("python -m cache.inspect"),
        description="Print what an MMGA cache holds: kind, round, schema version, corpus fingerprint, "
        "datasets (shape, dtype, chunks, min/max/mean, mask counts) and the config that produced it; "
        "and run the same checks a read does. Exit status 1 when any file fails them.",
    )
    parser.add_argument(
        "path", type=Path, help="a cache file (round_<r>/encoders.h5 or graph.h5) or a cache folder"
    )
    parser.add_argument(
        "--fingerprint", help="also check the files belong to the corpus with this fingerprint"
    )
    parser.add_argument("--producer", action="store_true", help="print the full producer config as JSON")
    parser.add_argument("--no-stats", action="store_true", help="skip min/max/mean (faster on large caches)")
    args = parser.parse_args(argv)

    try:  # a path the OS refuses (too long, a loop of links, no permission) is one line, not a traceback
        if not args.path.exists():
            print(f"{args.path}: no such file or folder", file=sys.stderr)
            return 2
        files, stale = find_files(args.path)
    except OSError as err:
        print(f"{_shown_path(args.path)}: cannot read: {err.strerror or err}", file=sys.stderr)
        return 2
    if not files:
        print(f"{args.path}: no cache files (*.h5) found", file=sys.stderr)
        return 2
    all_ok = True
    for path in files:
        try:
            text, ok = describe(path, args.fingerprint, not args.no_stats, args.producer)
        except OSError as err:  # e.g. unreadable, or removed while we looked
            text, ok = f"{path}\n  ERROR: cannot read: {err.strerror or err}", False
        all_ok &= ok
        print(text, end="\n\n")
    for path in stale:
        print(f"{path}: temporary file left by an interrupted write; safe to delete")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
