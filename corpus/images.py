"""Validating the image paths of ``posts.jsonl``: containment in the corpus folder (a security boundary),
existence, format and pixel limit."""

from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path
from typing import Literal

from PIL import Image
from tqdm import tqdm

from corpus.types import CorpusError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
_DRIVE = re.compile(r"^[A-Za-z]:")
_PROGRESS_MIN = 20_000


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def check_images(
    root: Path,
    first_line: dict[str, int],
    posts_name: str,
    max_pixels: int | None,
    mode: Literal["header", "decode", "exists"] = "header",
    progress: bool | None = None,
    workers: int = 1,
) -> dict[str, int]:
    """Check each distinct image path once; return {relative path: size in bytes}.

    Rules: no absolute paths, drive letters, backslashes or ``..`` components; the real path (after
    resolving every symlink, in the folders and in the file itself) must lie inside the real corpus
    folder; the file must be a regular file. ``mode="header"`` also opens the header (format in
    JPEG/PNG/WebP, ``width * height <= max_pixels``); ``"decode"`` decodes it fully, over ``workers``
    processes when more than one. Errors point at the first ``posts.jsonl`` line that references the path.
    """
    if mode not in ("header", "decode", "exists"):
        raise ValueError(f"image_check must be 'header', 'decode' or 'exists', got {mode!r}")
    root_real = os.path.realpath(root)
    dir_real: dict[str, str] = {}
    sizes: dict[str, int] = {}
    items = first_line.items()
    if progress is None:
        disable = None if len(first_line) >= _PROGRESS_MIN else True  # None: tqdm shows it on a terminal only
    else:
        disable = not progress
    bar = tqdm(items, total=len(first_line), desc="checking images", unit="img", disable=disable)
    pending: list[tuple[str, str, int]] = []  # (real path, rel, line) to decode in parallel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for rel, line in bar:

            def fail(msg: str, rel=rel, line=line) -> CorpusError:
                return CorpusError(posts_name, line, "image", f"{msg}: {rel!r}")

            if rel.startswith("/") or "\\" in rel or _DRIVE.match(rel) or os.path.isabs(rel):
                raise fail(
                    "absolute paths and backslashes are not allowed; give a path relative to the corpus folder"
                )
            if ".." in rel.split("/"):
                raise fail("path escapes the corpus folder ('..' is not allowed)")
            if "\0" in rel:
                raise fail("path contains a NUL character")
            folder, base = os.path.split(rel)
            real_folder = dir_real.get(folder)
            if real_folder is None:
                real_folder = dir_real[folder] = os.path.realpath(os.path.join(root_real, folder))
            if not _inside(real_folder, root_real):
                raise fail(f"path resolves outside the corpus folder (through a symlink) to {real_folder!r}")
            full = os.path.join(real_folder, base)
            try:
                st = os.lstat(full)
                if stat.S_ISLNK(st.st_mode):
                    full = os.path.realpath(full)
                    if not _inside(full, root_real):
                        raise fail(f"path resolves outside the corpus folder (through a symlink) to {full!r}")
                    st = os.stat(full)
            except (FileNotFoundError, NotADirectoryError):
                raise fail("image file not found") from None
            if not stat.S_ISREG(st.st_mode):
                raise fail("not a regular file")
            sizes[rel] = st.st_size
            if mode == "decode" and workers > 1:
                pending.append((full, rel, line))
            elif mode != "exists":
                _check_header(full, max_pixels, mode == "decode", fail)
    if pending:
        _decode_parallel(pending, max_pixels, posts_name, workers, disable)
    return sizes


class _Failed(Exception):
    pass


def _decode_one(item: tuple[str, int | None]) -> str | None:
    """Decode one image in a worker; the error message, or None when it decodes."""
    path, max_pixels = item

    def fail(msg: str) -> _Failed:
        return _Failed(msg)

    try:
        _check_header(path, max_pixels, True, fail)
    except _Failed as err:
        return str(err)
    return None


def _decode_parallel(pending: list, max_pixels: int | None, posts_name: str, workers: int, disable) -> None:
    """Fully decode ``pending`` (path, rel, line) over ``workers`` processes; raise for the first failure
    in file order, exactly as the sequential check would."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_decode_one, [(full, max_pixels) for full, _, _ in pending], chunksize=64)
        bar = tqdm(results, total=len(pending), desc="decoding images", unit="img", disable=disable)
        errors = list(bar)
    for (_, rel, line), msg in zip(pending, errors):
        if msg is not None:
            raise CorpusError(posts_name, line, "image", f"{msg}: {rel!r}")


def _check_header(path: str, max_pixels: int | None, decode: bool, fail) -> None:
    try:
        with Image.open(path) as img:
            fmt, (width, height) = img.format, img.size
            if fmt not in ALLOWED_FORMATS:
                raise fail(f"unsupported image format {fmt} (JPEG, PNG or WebP are accepted)")
            if max_pixels is not None and width * height > max_pixels:
                raise fail(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
                    "(max_image_pixels)"
                )
            if decode:
                img.load()
    except Image.DecompressionBombError as err:
        raise fail(f"image is over Pillow's decompression-bomb limit ({err})") from None
    except CorpusError:
        raise
    except Image.UnidentifiedImageError:
        raise fail("not a decodable JPEG, PNG or WebP image") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise fail(f"cannot decode image ({type(err).__name__}: {err})") from None
