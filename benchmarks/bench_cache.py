"""Cache write/read throughput against numpy.save/numpy.load of the same arrays, in the same run.

    python benchmarks/bench_cache.py [--users 60000] [--dim 256] [--repeats 5] [--dir /tmp]

The payload is one encoder cache file: two float32 [N, D] embeddings and two bool [N] masks. The peer
writes the same four arrays with ``numpy.save`` (one .npy each) and reads them with ``numpy.load``.
The cache's figures include everything its API does: input checks, HDF5 metadata, fsync and rename on
write; schema, shape, dtype, finiteness, masked-row and fingerprint checks on read. The cache read maps
the file copy-on-write rather than copying it (cache/raw.py), and its checks bring every byte in; so the
run also times that peer, ``numpy.load(mmap_mode="c")`` plus one pass over the data. Reads come from the
OS page cache for all. Also times a random 256-user batch through ``LazyEmbeddings`` against ``np.load``
with ``mmap_mode="r"``. Prints medians over the repeats and the ratios cache / numpy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache import (  # noqa: E402
    EncoderEmbeddings,
    LazyEmbeddings,
    encoder_file,
    read_encoder_embeddings,
    write_encoder_embeddings,
)

FINGERPRINT = "bench" * 8


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256, help="users per random lazy batch")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n, d = args.users, args.dim
    image_mask, text_mask = rng.random(n) > 0.1, rng.random(n) > 0.1
    emb = EncoderEmbeddings(
        user_image_emb=rng.standard_normal((n, d), dtype=np.float32) * image_mask[:, None],
        user_text_emb=rng.standard_normal((n, d), dtype=np.float32) * text_mask[:, None],
        image_mask=image_mask,
        text_mask=text_mask,
    )
    arrays = vars(emb)
    megabytes = sum(a.nbytes for a in arrays.values()) / 1e6

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        cache_dir, npy_dir = tmp / "cache", tmp / "npy"
        npy_dir.mkdir()

        def cache_write():
            write_encoder_embeddings(cache_dir, 0, emb, fingerprint=FINGERPRINT, producer={"bench": True})

        def numpy_write(fsync: bool = False):
            for name, arr in arrays.items():
                with open(npy_dir / f"{name}.npy", "wb") as f:
                    np.save(f, arr)
                    if fsync:
                        f.flush()
                        os.fsync(f.fileno())

        def cache_read():
            read_encoder_embeddings(cache_dir, 0, fingerprint=FINGERPRINT, num_users=n)

        def h5py_read():  # the same file through h5py's own read path, without the checks
            with h5py.File(encoder_file(cache_dir, 0), "r") as h5:
                for name in arrays:
                    h5[name][()]

        def numpy_read():
            for name in arrays:
                np.load(npy_dir / f"{name}.npy")

        def numpy_map_read():  # copy-on-write maps, each brought in by one pass (a sum)
            for name in arrays:
                np.load(npy_dir / f"{name}.npy", mmap_mode="c").sum()

        timings = {
            "cache write": median_seconds(cache_write, args.repeats),
            "numpy.save": median_seconds(numpy_write, args.repeats),
            "numpy.save + fsync": median_seconds(lambda: numpy_write(fsync=True), args.repeats),
            "cache read": median_seconds(cache_read, args.repeats),
            "  (h5py, no checks)": median_seconds(h5py_read, args.repeats),
            "numpy.load": median_seconds(numpy_read, args.repeats),
            "  (mmap_mode=c + sum)": median_seconds(numpy_map_read, args.repeats),
        }
        for name, arr in arrays.items():  # the files were rewritten by the runs above: check them once
            assert np.array_equal(np.load(npy_dir / f"{name}.npy"), arr)
        back = read_encoder_embeddings(cache_dir, 0, fingerprint=FINGERPRINT, num_users=n)
        assert all(np.array_equal(getattr(back, k), v) for k, v in arrays.items())

        lazy = LazyEmbeddings(encoder_file(cache_dir, 0), "user_image_emb")
        mapped = np.load(npy_dir / "user_image_emb.npy", mmap_mode="r")
        batches = [np.sort(rng.choice(n, args.batch, replace=False)) for _ in range(20)]
        lazy_s = median_seconds(lambda: [lazy[b] for b in batches], args.repeats) / len(batches)
        mmap_s = median_seconds(lambda: [np.asarray(mapped[b]) for b in batches], args.repeats) / len(batches)
        size_cache = encoder_file(cache_dir, 0).stat().st_size / 1e6
        lazy.close()

    print(
        f"payload: 2 x float32 [{n}, {d}] + 2 x bool [{n}] = {megabytes:.1f} MB; cache file {size_cache:.1f} MB"
    )
    print(f"median of {args.repeats} runs")
    for label, seconds in timings.items():
        print(f"  {label:<20} {seconds * 1e3:8.1f} ms  {megabytes / seconds:8.0f} MB/s")
    print(
        f"  ratio cache/numpy write throughput: {timings['numpy.save'] / timings['cache write']:.2f} "
        f"(vs numpy.save + fsync: {timings['numpy.save + fsync'] / timings['cache write']:.2f})"
    )
    print(
        f"  ratio cache/numpy read throughput:  {timings['numpy.load'] / timings['cache read']:.2f} "
        f"(vs numpy.load mmap_mode=c + sum: {timings['  (mmap_mode=c + sum)'] / timings['cache read']:.2f})"
    )
    print(f"random batch of {args.batch} users (sorted), median per batch:")
    print(f"  LazyEmbeddings      {lazy_s * 1e3:8.2f} ms")
    print(f"  np.load mmap        {mmap_s * 1e3:8.2f} ms   ratio lazy/mmap time {lazy_s / mmap_s:.1f}")


if __name__ == "__main__":
    main()
