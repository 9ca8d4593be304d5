"""Benchmark of stage 1's image path on large images: decoding them small, in threads, against decoding them whole.

The default image tower reads 96 x 96 pixels, and its frozen trunk costs about 1.5 ms an image on 2 threads (rewritten
for inference since 2026-12-07, 4-7 ms before: ``benchmarks/bench_image_trunk.py``); a
photo or a clip art file of a real crawl is 1,000-2,000 pixels a side, and decoding and resizing it whole costs
5-10x the trunk. ``stage1_encoders.data.PostPreprocessor`` now decodes an image with both sides at least 6x the
model's input side small (a JPEG at libjpeg's reduced scale, then an integer box reduce down to no less than 3x
the input side: ``corpus.Corpus.load_image``'s ``min_side``), and a batch's images in threads.

Writes a corpus of large images (PNG clip art: shapes on a transparent background; JPEG photos: smooth gradients,
shapes and mild noise, quality 90) at each side given, then times, in turns and in one process, the images per
second of ``PostPreprocessor.images`` (decode + transform + normalise, what the image states and the export
run per batch) for

- ``whole``: the previous path (each image decoded at full size, one at a time; ``decode_side=None``);
- ``small``: decoded small, one thread;
- ``small+threads``: decoded small, the default way: by torch's ``--threads`` threads once a batch decoded in turn
  showed at least ``THREADED_DECODE_SECONDS`` an image (the first repeat of each row is that batch), else in turn,

and the frozen EfficientNet-Lite0 trunk's images per second on the same batch (``--threads`` torch threads), as the
peer the decode is weighed against. Prints the median over ``--repeats`` of each, the ratios to ``whole``, and the
pixels' difference from the whole decode (mean and max, in levels of 255) with the least cosine similarity between
the trunk's outputs of the two decodes of an image.

    python benchmarks/bench_image_decode.py
    python benchmarks/bench_image_decode.py --sides 256 1080 2048 --images 48 --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from corpus import load_corpus  # noqa: E402
from stage1_encoders.data import PostPreprocessor  # noqa: E402
from stage1_encoders.encoders import build_image_encoder  # noqa: E402


def _clip_art(side: int, rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGBA", (side, int(side * 0.8)), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.integers(0, side, 2)
        r = int(rng.integers(side // 16, side // 4))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3)) + (255,)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x - r, y - r, x + r, y + r], fill=fill)
    return image


def _photo(side: int, rng: np.random.Generator) -> Image.Image:
    height = int(side * 0.75)
    yy, xx = np.mgrid[0:height, 0:side]
    tint = rng.uniform(0.3, 1.0, 3)
    base = np.stack([(xx / side) * 255 * tint[0], (yy / height) * 255 * tint[1], 128 * tint[2] + 0 * xx], -1)
    image = Image.fromarray(np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, side, 2)
        r = int(rng.integers(side // 12, side // 4))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def write_corpus(root: Path, sides: list[int], images: int) -> dict[tuple[int, str], list[str]]:
    """A corpus with ``images`` PNG clip arts and as many JPEG photos per side; returns each (side, format)'s
    image files."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    posts, groups = [], {}
    for side in sides:
        for fmt in ("png", "jpg"):
            for i in range(images):
                name = f"images/{side}_{i}.{fmt}"
                if fmt == "png":
                    _clip_art(side, rng).save(root / name)
                else:
                    _photo(side, rng).save(root / name, quality=90)
                groups.setdefault((side, fmt), []).append(name)
                posts.append(
                    {
                        "post_id": f"p{len(posts)}",
                        "user_id": f"u{len(posts) % 10}",
                        "text": "x",
                        "image": name,
                    }
                )
    (root / "users.csv").write_text("user_id\n" + "".join(f"u{i}\n" for i in range(10)))
    (root / "posts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in posts))
    (root / "edges.csv").write_text("src,dst\nu0,u1\n")
    return groups


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[256, 1080, 2048], help="longer image sides")
    parser.add_argument("--images", type=int, default=32, help="images per side and format (default 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats, in turns (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="decode threads and torch threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    encoder = build_image_encoder("efficientnet-lite0").eval()
    transform, size = encoder.image_transform(), encoder.preprocess_cfg["size"]
    with tempfile.TemporaryDirectory() as tmp:
        groups = write_corpus(Path(tmp) / "corpus", args.sides, args.images)
        corpus = load_corpus(Path(tmp) / "corpus", progress=False)
        preps = {
            "whole": PostPreprocessor(corpus, None, transform, size, 16, decode_threads=1),
            "small": PostPreprocessor(corpus, None, transform, size, 16, decode_threads=1),
            "small+threads": PostPreprocessor(
                corpus, None, transform, size, 16
            ),  # the default: threads by cost
        }
        preps["whole"].decode_side = None  # the previous path: every image decoded at full size
        print(
            f"decode side {preps['small'].decode_side} px (model input {size}); {args.threads} thread(s); "
            f"{args.images} images per side and format; median of {args.repeats}, images per second"
        )
        print(
            f"{'side':>5} {'format':>6} | {'whole':>7} {'small':>7} {'+threads':>8} | {'trunk':>7} | "
            f"{'small/whole':>11} {'+thr/whole':>10} | {'mean diff':>9} {'max diff':>8} | {'trunk cos':>9}"
        )
        post_of = {image: post for post, image in enumerate(corpus.post_image)}  # posts are grouped by user
        for (side, fmt), names in groups.items():
            posts = np.asarray([post_of[name] for name in names])
            times: dict[str, list[float]] = {name: [] for name in (*preps, "trunk")}
            order = list(preps)
            for repeat in range(args.repeats):
                for name in order[repeat % 3 :] + order[: repeat % 3]:  # each path first in turn
                    prep = preps[name]
                    start = time.perf_counter()
                    pixels = prep.images(posts)
                    times[name].append(time.perf_counter() - start)
                with torch.no_grad():
                    start = time.perf_counter()
                    encoder.trunk_rows(pixels)
                    times["trunk"].append(time.perf_counter() - start)
            rate = {name: len(posts) / statistics.median(t) for name, t in times.items()}
            whole, small = preps["whole"].images(posts), preps["small"].images(posts)
            levels = (whole - small).abs() * torch.tensor(transform.transforms[-1].std).view(1, 3, 1, 1) * 255
            with (
                torch.no_grad()
            ):  # the trunk's pooled outputs of the two decodes: the least cosine over the images
                cos = torch.nn.functional.cosine_similarity(
                    encoder.trunk_rows(whole), encoder.trunk_rows(small)
                )
            print(
                f"{side:>5} {fmt:>6} | {rate['whole']:7.0f} {rate['small']:7.0f} {rate['small+threads']:8.0f} | "
                f"{rate['trunk']:7.0f} | {rate['small'] / rate['whole']:11.2f} "
                f"{rate['small+threads'] / rate['whole']:10.2f} | {float(levels.mean()):9.3f} "
                f"{float(levels.max()):8.1f} | {float(cos.min()):9.5f}"
            )


if __name__ == "__main__":
    main()
