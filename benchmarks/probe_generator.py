"""Probe scores of the synthetic generator's planted structure (no trained encoder; corpus/synthetic/probes.py).

Generates a corpus (default knobs, 1,000 users as in the bridge's default run) into a temporary folder, or reads
one given with --corpus, and prints what simple readers of its files get: topic macro-F1 from image, text, both,
X and the graph; ROC AUC of same-topic vs cross-topic edges from content, X and degree; R^2 of log fans.

    python benchmarks/probe_generator.py                       # default knobs, 1,000 users, seeds 0
    python benchmarks/probe_generator.py --seeds 0 1 2 --set homophily=0.8 --set design=factorised
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus.synthetic import SyntheticConfig, generate  # noqa: E402
from corpus.synthetic.probes import probe  # noqa: E402


def parse_knobs(pairs: list[str]) -> dict:
    types = {f.name: f.type for f in fields(SyntheticConfig)}
    casts = {"int": int, "float": float, "str": str}
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in types:
            sys.exit(f"error: unknown knob {name!r}")
        out[name] = casts[types[name] if isinstance(types[name], str) else types[name].__name__](value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help="generator knob")
    parser.add_argument("--corpus", type=Path, help="probe this generated corpus instead")
    args = parser.parse_args()
    results = []
    if args.corpus:
        results.append(probe(args.corpus))
    else:
        cfg = replace(SyntheticConfig(num_users=args.users, workers=1), **parse_knobs(args.set))
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                root = generate(Path(tmp) / "corpus", replace(cfg, seed=seed))
                took = time.perf_counter() - start
                results.append(probe(root))
                print(f"seed {seed}: generated in {took:.1f} s", file=sys.stderr)
        changed = ", ".join(args.set) or "defaults"
        print(f"{args.users} users, {changed}, seeds {' '.join(map(str, args.seeds))}")
    print("| probe | score |" if len(results) == 1 else "| probe | mean | min | max |")
    print("|---|---|" if len(results) == 1 else "|---|---|---|---|")
    for name in results[0]:
        values = np.array([r[name] for r in results])
        if len(results) == 1:
            print(f"| {name} | {values[0]:.3f} |")
        else:
            print(f"| {name} | {values.mean():.3f} | {values.min():.3f} | {values.max():.3f} |")


if __name__ == "__main__":
    main()
