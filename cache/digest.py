"""A digest of what a cache file holds, independent of when it was written.

Two writes of the same data differ in their bytes (the ``created`` attribute, HDF5's own layout choices),
so a file repaired by rerunning its stage would look "changed" to everything downstream if that were
judged by the file's sha256. :func:`content_digest` covers the attributes except ``created`` and every
dataset's name, dtype, shape and values (a string dataset, ``user_ids``, by its text).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from cache.io import MALFORMED, check_members, check_storage, info_from_h5, open_h5
from cache.schema import ATTR_CREATED
from cache.types import CacheError


def content_digest(path: str | Path) -> str:
    """sha256 over the attributes (except ``created``) and datasets of the cache file at ``path``."""
    path = Path(path)
    h = hashlib.sha256()
    with open_h5(path) as h5:
        info = info_from_h5(h5, path)
        check_members(h5, path, info.kind, MALFORMED)  # no links or external storage are followed
        check_storage(h5, path, info.kind, MALFORMED)
        try:
            for name in sorted(h5.attrs):
                if name != ATTR_CREATED:
                    value = h5.attrs[name]
                    value = value.tolist() if isinstance(value, np.ndarray | np.generic) else value
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    h.update(json.dumps([name, value], default=str).encode())
            for name in sorted(h5):
                dset = h5[name]
                assert isinstance(dset, h5py.Dataset)
                h.update(json.dumps([name, str(dset.dtype), list(dset.shape)]).encode())
                if h5py.check_string_dtype(dset.dtype) is not None:  # user_ids: the text, not object pointers
                    h.update(json.dumps(dset.asstr()[()].tolist(), ensure_ascii=False).encode())
                else:
                    h.update(np.ascontiguousarray(dset[()]).tobytes())
        except (OSError, TypeError, ValueError, AssertionError) as err:
            raise CacheError(path, None, f"cannot be digested ({err}): {MALFORMED}") from None
    return h.hexdigest()
