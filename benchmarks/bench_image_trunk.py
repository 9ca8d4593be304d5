"""Benchmark of the frozen image trunk's inference: as it was, against the trunk rewritten for inference.

The default image tower's trunk (EfficientNet-Lite0, frozen) computes the image states of a run folder once (every
image of the corpus) and the rows of new users' images (``bridge.embed``). ``ImageEncoder.trunk_rows`` runs it
rewritten for inference (``stage1_encoders.inference_trunk``: batch norms folded into their convolutions,
channels-last) in chunks of ``TRUNK_CPU_CHUNK`` images. Times, in turns and in one process, on the same random
pixels at the tower's input size:

- ``before``: ``visual.trunk`` on the export's batches (``--batch``, the default ``data.export_batch_size``),
  what the image states ran before;
- ``chunked``: the same trunk on chunks of ``TRUNK_CPU_CHUNK`` images (what the chunking alone buys);
- ``rewritten``: ``trunk_rows`` on the same batches (folded, channels-last, chunked): what runs now;

and prints the median milliseconds per image of each, its ratio to ``before`` and the largest difference of the
outputs from ``before``'s, relative to the largest output. The 1-minute load average is printed before and after.

    python benchmarks/bench_image_trunk.py
    python benchmarks/bench_image_trunk.py --images 1024 --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()

import torch  # noqa: E402

from stage1_encoders.encoders import TRUNK_CPU_CHUNK, build_image_encoder  # noqa: E402
from stage1_encoders.inference_trunk import fold_batch_norms  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024, help="images per timed pass (default 1024)")
    parser.add_argument(
        "--batch", type=int, default=512, help="images per batch, as the export's (default 512)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats, in turns (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    encoder = build_image_encoder("efficientnet-lite0").eval()
    trunk = encoder.visual.trunk
    height, width = encoder.preprocess_cfg["size"]
    torch.manual_seed(0)
    pixels = torch.randn(args.images, 3, height, width)
    batches = pixels.split(args.batch)
    paths = {
        "before": lambda: torch.cat([trunk(b) for b in batches]),
        "chunked": lambda: torch.cat([trunk(c) for b in batches for c in b.split(TRUNK_CPU_CHUNK)]),
        "rewritten": lambda: torch.cat([encoder.trunk_rows(b) for b in batches]),
    }
    folded = fold_batch_norms(trunk)[1]
    load = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name in paths}
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for name, run in paths.items():  # warm-up (the rewritten trunk is built here)
            outputs[name] = run()
        order = list(paths)
        for repeat in range(args.repeats):
            for name in order[repeat % 3 :] + order[: repeat % 3]:  # each path first in turn
                start = time.perf_counter()
                run = paths[name]
                run()
                times[name].append(time.perf_counter() - start)
    scale = float(outputs["before"].abs().max())
    print(
        f"{args.images} images {height} x {width}, batches of {args.batch}, chunks of {TRUNK_CPU_CHUNK}; "
        f"{args.threads} thread(s); {folded} batch norms folded; median of {args.repeats}; "
        f"1-minute load {load:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(f"{'path':>10} | {'ms/image':>8} {'images/s':>8} | {'x before':>8} | {'max rel diff':>12}")
    before = statistics.median(times["before"])
    for name, t in times.items():
        per = statistics.median(t)
        diff = float((outputs[name] - outputs["before"]).abs().max()) / scale
        print(
            f"{name:>10} | {per / args.images * 1e3:8.2f} {args.images / per:8.0f} | {per / before:8.2f} | "
            f"{diff:12.2e}"
        )


if __name__ == "__main__":
    main()
