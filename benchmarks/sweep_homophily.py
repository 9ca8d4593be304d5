"""Where does graph alignment help? MMGA's margin over no_align and peer_sgc across the corpus's homophily.

For each homophily value this runs the default bridge (``python bridge/alternate.py --rounds R --seeds K`` on the
synthetic corpus generated with ``--synthetic homophily=h``) into ``<out>/h<h>``, then reads each run's
``report/metrics.json`` and prints one table (margin mean ± sd over training seeds, per-seed margins, verdict) and
writes a PNG. Finished runs are reused (the bridge resumes), so an interrupted sweep continues where it stopped.

    python benchmarks/sweep_homophily.py --out runs/sweep --png docs/img/sweep_homophily.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AGAINST = ("no_align", "peer_sgc")
METRICS = (("topic_macro_f1", "topic macro-F1"), ("fans_mae", "fans MAE"))


def run_one(out: Path, homophily: float, rounds: int, seeds: int, extra: list[str]) -> dict:
    run_dir = out / f"h{homophily:g}"
    cmd = [
        sys.executable,
        str(REPO / "bridge" / "alternate.py"),
        "--rounds",
        str(rounds),
        "--seeds",
        str(seeds),
        "--run-dir",
        str(run_dir),
        "--synthetic",
        f"homophily={homophily}",
        *extra,
    ]
    print(f"[sweep] homophily {homophily:g}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    with open(out / f"h{homophily:g}.log", "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    if code != 0:
        raise SystemExit(
            f"[sweep] the run for homophily {homophily:g} failed; see {out / f'h{homophily:g}.log'}"
        )
    print(f"[sweep] homophily {homophily:g}: {time.perf_counter() - start:.0f} s", flush=True)
    return json.loads((run_dir / "report" / "metrics.json").read_text())


def table(results: dict[float, dict]) -> str:
    lines = [
        "| homophily | MMGA vs | "
        + " | ".join(f"{label} margin (mean ± sd) | per seed | verdict" for _, label in METRICS)
        + " |",
        "|---|---|" + "---|---|---|" * len(METRICS),
    ]
    for h, metrics in results.items():
        comp = {c["against"]: c for c in metrics["comparison"]}
        for other in AGAINST:
            cells = []
            for key, _ in METRICS:
                m = comp[other][key]
                cells += [
                    f"{m['margin']:+.3f} ± {m['margin_std']:.3f}",
                    " / ".join(f"{v:+.3f}" for v in m["margins"]),
                    m["verdict"],
                ]
            lines.append(f"| {h:g} | `{other}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[float, dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    hs = sorted(results)
    for ax, (key, label) in zip(axes, METRICS):
        for i, other in enumerate(AGAINST):
            ms = [next(c for c in results[h]["comparison"] if c["against"] == other)[key] for h in hs]
            ax.errorbar(
                [h + (i - 0.5) * 0.01 for h in hs],
                [m["margin"] for m in ms],
                yerr=[m["margin_std"] for m in ms],
                marker="o",
                capsize=4,
                label=f"vs {other}",
            )
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(hs)
        ax.set_xlabel("homophily (share of same-topic edges)")
        ax.set_ylabel("MMGA margin (> 0: MMGA better)")
        ax.set_title(f"{label}: mean ± sd over training seeds")
        ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/sweep_homophily"), help="folder for the runs")
    parser.add_argument(
        "--homophily", type=float, nargs="+", default=[0.5, 0.65, 0.8], help="values to sweep"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run (default 3)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per run (default 3)")
    parser.add_argument(
        "--png", type=Path, default=None, help="write the plot here (default <out>/sweep.png)"
    )
    parser.add_argument(
        "extra", nargs=argparse.REMAINDER, help="after --: more bridge/alternate.py arguments"
    )
    args = parser.parse_args(argv)
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    args.out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    results = {h: run_one(args.out, h, args.rounds, args.seeds, extra) for h in args.homophily}
    print(f"\n1-minute load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n")
    text = table(results)
    print(text)
    (args.out / "sweep.md").write_text(text + "\n")
    png = args.png or args.out / "sweep.png"
    plot(results, png)
    print(f"\nplot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
