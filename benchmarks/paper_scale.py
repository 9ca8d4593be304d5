"""One full MMGA round at the paper's size (60,000 users, ~2,000,000 posts, ~1,000,000 edges) on this machine.

    python benchmarks/paper_scale.py                          # 60,000 users (hours on 2 cores: docs/performance.md)
    python benchmarks/paper_scale.py --users 300 2000 20000 60000 --plot docs/img/paper_scale.png
    python benchmarks/paper_scale.py --users 6000 --stage1 model.text_frozen_precision=bf16

For each size it generates (or reuses, in ``--dir``) a synthetic corpus at the paper's density (33 posts
and 33 follow edges per user; ``image_pool`` scaled with the users, 100,000 images at 60,000 users), then
runs one round through the bridge exactly as a user would::

    python bridge/alternate.py --corpus DIR --run-dir RUN --rounds 1 --seeds 1 --skip-baselines --jobs 1

which is the frozen text layers' caption states (once per corpus, before stage 1), stage 1 fit, stage 1 export
of every post, stage 2 fit, stage 2 graph export, and the evaluation of the MMGA rows (and X). It prints, per
size: wall time per step (corpus load, caption states, stage 1 fit and export, stage 2 fit and export,
evaluation), posts/s for stage 1 training and export, stage 2 seconds per step, the peak
resident memory of the bridge process and of its whole process tree, and the disk used by the corpus and
the run. ``--json`` writes every figure; ``--plot`` draws how time grows with the size (log-log). The memory
timeline of each round (every 5 s: tree RSS and the log's last line) is written to ``round_<users>.memory.tsv``
in ``--dir`` while the round runs.

The targets of issue 13 at 60,000 users on the 2-core machine: the whole round <= 60 min, peak RSS <= 12 GB,
stage 1 export >= 2,000 posts/s. Check ``uptime`` before a run: the figures are only meaningful on an
idle machine (the load average is printed with them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_synthetic import PAPER, disk  # noqa: E402  (this folder is on sys.path when run as a script)

from corpus.synthetic import SyntheticConfig  # noqa: E402

PAPER_USERS = PAPER["num_users"]  # bench_synthetic's paper knobs: 60,000 users, ~2M posts, ~1M edges


def corpus_knobs(users: int) -> dict:
    """The synthetic knobs of a paper-density corpus with ``users`` users."""
    cells = 4 * SyntheticConfig().num_image_families * 2  # the pool's minimum (one image per cell)
    pool = max(cells, round(PAPER["image_pool"] * users / PAPER_USERS))
    return {**PAPER, "num_users": users, "image_pool": pool}


class PeakMemory:
    """Samples the resident set of a process and of its whole tree (workers included) every ``interval``.

    Every 5 s it keeps ``(seconds, tree RSS, the last line of the process's log)`` in ``timeline`` and, with
    ``timeline_file``, appends it there at once (tab-separated, flushed), so a round that is interrupted, or a
    benchmark that is, still leaves where the memory went up to that point."""

    def __init__(
        self, pid: int, interval: float = 0.5, log: Path | None = None, timeline_file: Path | None = None
    ):
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.log = log
        self.timeline_file = timeline_file
        if timeline_file is not None:
            timeline_file.write_text("seconds\ttree_rss_bytes\tlast_log_line\n", encoding="utf-8")
        self.peak_self = self.peak_tree = 0
        self.timeline: list[tuple[float, int, str]] = []
        self._start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                own = self.proc.memory_info().rss
                tree = own
                for child in self.proc.children(recursive=True):
                    try:
                        tree += child.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                return
            self.peak_self, self.peak_tree = max(self.peak_self, own), max(self.peak_tree, tree)
            now = time.perf_counter() - self._start
            if not self.timeline or now - self.timeline[-1][0] >= 5.0:
                self._keep((round(now, 1), tree, self._last_line()))
            self._stop.wait(self.interval)

    def _keep(self, sample: tuple[float, int, str]) -> None:
        self.timeline.append(sample)
        if self.timeline_file is not None:
            line = "\t".join(str(field).replace("\t", " ") for field in sample)
            with self.timeline_file.open("a", encoding="utf-8") as out:
                out.write(line + "\n")

    def _last_line(self) -> str:
        """The last line the process has logged so far (where it is), for the memory timeline."""
        if self.log is None or not self.log.exists():
            return ""
        with self.log.open("rb") as f:
            f.seek(max(0, self.log.stat().st_size - 400))
            lines = [line for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
        return lines[-1][:120] if lines else ""

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` with stdout and stderr to ``log``; wall seconds, exit code and peak memory (bytes).

    ``peak_rss`` is the kernel's high-water mark of the process (``ru_maxrss`` from ``wait4``, which
    covers it and the children it waited for, the largest of them); ``peak_tree_rss`` the largest sampled
    sum over the process and all its descendants. The memory timeline is written as it is sampled to
    ``log`` with the suffix ``.memory.tsv``."""
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        sampler = PeakMemory(proc.pid, log=log, timeline_file=log.with_suffix(".memory.tsv"))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
    return {
        "seconds": time.perf_counter() - start,
        "returncode": proc.returncode,
        "peak_rss": max(usage.ru_maxrss * 1024, sampler.peak_self),
        "peak_tree_rss": max(usage.ru_maxrss * 1024, sampler.peak_tree),
        "memory_timeline": sampler.timeline,
    }


def ensure_corpus(folder: Path, users: int, log: Path) -> dict:
    """Generate the corpus unless ``folder`` already holds one with the same knobs; its figures."""
    knobs = corpus_knobs(users)
    stamp = folder / "_paper_scale.json"
    if stamp.exists() and json.loads(stamp.read_text(encoding="utf-8")) == knobs:
        return {"seconds": None, "reused": True}
    cmd = [sys.executable, "-m", "corpus.synthetic", "--out", str(folder), "--overwrite"]
    for name, value in knobs.items():
        cmd += [f"--{name.replace('_', '-')}".replace("num-users", "users"), str(value)]
    result = run_measured(cmd, log)
    if result["returncode"] != 0:
        raise SystemExit(f"corpus generation failed (exit {result['returncode']}); see {log}")
    stamp.write_text(json.dumps(knobs) + "\n", encoding="utf-8")
    return {**result, "reused": False}


def manifest_steps(run_dir: Path) -> dict:
    """Per-step seconds and the stages' own metrics, from the run's manifest."""
    entries = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    entries = entries.get("entries", entries)
    s1 = entries["seed_0/mmga/round_0/stage1"]
    s2 = entries["seed_0/mmga/round_0/stage2"]
    m1, m2 = s1.get("metrics") or {}, s2.get("metrics") or {}
    evals = {k: v["seconds"] for k, v in entries.items() if k.startswith("eval/")}
    return {
        "stage1_seconds": s1["seconds"],
        "stage1_fit_seconds": m1.get("train_seconds"),
        "stage1_export_seconds": m1.get("export_seconds"),
        "stage1_train_posts_per_second": m1.get("train_posts_per_second"),
        "stage1_export_posts_per_second": m1.get("export_posts_per_second"),
        "stage1_steps": m1.get("global_step"),
        "stage2_seconds": s2["seconds"],
        "stage2_fit_seconds": m2.get("fit_seconds"),
        "stage2_export_seconds": m2.get("export_seconds"),
        "stage2_steps": m2.get("steps_run"),
        "eval_seconds": sum(evals.values()),
        "evaluations": len(evals),
    }


def corpus_sizes(log_text: str) -> dict:
    """Users, posts, edges and load seconds from the bridge's ``[corpus] ...`` line."""
    found = re.search(r"(\d+) users, (\d+) posts, (\d+) edges \(loaded in ([\d.]+) s\)", log_text)
    if not found:
        return {}
    users, posts, edges, seconds = found.groups()
    return {"users": int(users), "posts": int(posts), "edges": int(edges), "load_seconds": float(seconds)}


def text_states_seconds(log_text: str) -> dict:
    """The caption states' seconds from the bridge's ``[text states] ...`` line (none when it did not compute
    them: a preset that freezes no text layer, or a run folder that already had them)."""
    found = re.search(r"\[text states\] .* computed in ([\d.]+) s", log_text)
    return {"text_states_seconds": float(found.group(1)) if found else None}


def report_metrics(run_dir: Path) -> dict:
    """The MMGA row's test scores (topic macro-F1, fans MAE) from the report's metrics.json."""
    path = run_dir / "report" / "metrics.json"
    if not path.exists():
        return {}
    row = json.loads(path.read_text(encoding="utf-8"))["rows"].get("mmga_round_0", {})
    scores = {}
    for task, key in (("topic", "macro_f1"), ("fans", "mae")):
        value = row.get(task, {}).get(key, {}).get("mean")
        if value is not None:
            scores[f"{task}_{key}"] = float(value)
    return scores


def bridge_command(
    corpus_dir: Path, run_dir: Path, threads: int, stage1: list[str] | None = None
) -> list[str]:
    """One MMGA round through the bridge, as a user would run it; ``stage1`` holds ``KEY=VALUE`` overrides."""
    cmd = [
        sys.executable,
        str(ROOT / "bridge" / "alternate.py"),
        "--corpus",
        str(corpus_dir),
        "--run-dir",
        str(run_dir),
        "--rounds",
        "1",
        "--seeds",
        "1",
        "--skip-baselines",
        "--jobs",
        "1",
        "--threads",
        str(threads),
        "--verbose",
    ]
    for override in stage1 or []:
        cmd += ["--stage1", override]
    return cmd


def one_size(users: int, root: Path, threads: int, stage1: list[str] | None = None) -> dict:
    corpus_dir, run_dir = root / f"corpus_{users}", root / f"run_{users}"
    load_before = os.getloadavg()
    generated = ensure_corpus(corpus_dir, users, root / f"generate_{users}.log")
    if run_dir.exists():
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    log = root / f"round_{users}.log"
    cmd = bridge_command(corpus_dir, run_dir, threads, stage1)
    print(f"[{users} users] {' '.join(cmd[1:])}", flush=True)
    measured = run_measured(cmd, log)
    text = log.read_text(encoding="utf-8", errors="replace")
    if measured["returncode"] != 0:
        raise SystemExit(f"the round at {users} users failed (exit {measured['returncode']}); see {log}")
    row = {
        "users_requested": users,
        "generate": generated,
        "round_seconds": measured["seconds"],
        "peak_rss": measured["peak_rss"],
        "peak_tree_rss": measured["peak_tree_rss"],
        "memory_timeline": measured["memory_timeline"],
        "corpus_disk": disk(corpus_dir)[2],
        "run_disk": disk(run_dir)[2],
        "load_before": load_before,
        "load_after": os.getloadavg(),
        **corpus_sizes(text),
        **text_states_seconds(text),
        **manifest_steps(run_dir),
        **report_metrics(run_dir),
    }
    row["stage2_seconds_per_step"] = (
        row["stage2_fit_seconds"] / row["stage2_steps"] if row.get("stage2_steps") else None
    )
    return row


def fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def size(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.0f} MiB"


def print_table(rows: list[dict]) -> None:
    print()
    print(
        "| users | posts | edges | generate | load | caption states | stage 1 fit | stage 1 export | stage 2 fit "
        "| stage 2 export | evaluation | round | train posts/s | export posts/s | stage 2 s/step | peak RSS (tree) "
        "| disk corpus / run |"
    )
    print("|" + "---:|" * 17)
    for r in rows:
        gen = r["generate"]
        generate = "reused" if gen.get("reused") else f"{gen['seconds']:.0f} s"
        print(
            f"| {r.get('users', r['users_requested']):,} | {r.get('posts', 0):,} | {r.get('edges', 0):,} | {generate} "
            f"| {fmt(r.get('load_seconds'))} s | {fmt(r.get('text_states_seconds'))} s "
            f"| {fmt(r['stage1_fit_seconds'])} s | {fmt(r['stage1_export_seconds'])} s "
            f"| {fmt(r['stage2_fit_seconds'])} s | {fmt(r['stage2_export_seconds'], '.2f')} s | {fmt(r['eval_seconds'])} s "
            f"| {r['round_seconds'] / 60:.1f} min | {fmt(r['stage1_train_posts_per_second'], ',.0f')} "
            f"| {fmt(r['stage1_export_posts_per_second'], ',.0f')} | {fmt(r['stage2_seconds_per_step'], '.3f')} "
            f"| {size(r['peak_rss'])} ({size(r['peak_tree_rss'])}) "
            f"| {size(r['corpus_disk'])} / {size(r['run_disk'])} |"
        )
    for r in rows:
        print(
            f"  {r['users_requested']} users: load average {r['load_before'][0]:.2f} before, "
            f"{r['load_after'][0]:.2f} after; MMGA topic macro-F1 {fmt(r.get('topic_macro_f1'), '.3f')}, "
            f"fans MAE {fmt(r.get('fans_mae'), '.3f')}"
        )


def check_targets(row: dict) -> None:
    """Print the issue's targets at the largest size, met or missed."""
    gb = 1e9
    checks = [
        ("whole round <= 60 min", row["round_seconds"] / 60, 60.0, "min", row["round_seconds"] / 60 <= 60),
        ("peak RSS <= 12 GB", row["peak_tree_rss"] / gb, 12.0, "GB", row["peak_tree_rss"] <= 12 * gb),
        (
            "export >= 2,000 posts/s",
            row["stage1_export_posts_per_second"],
            2000.0,
            "posts/s",
            (row["stage1_export_posts_per_second"] or 0) >= 2000,
        ),
    ]
    print(f"\ntargets at {row['users_requested']:,} users:")
    for name, value, _, unit, ok in checks:
        print(f"  {name}: {value:,.1f} {unit} -> {'met' if ok else 'MISSED'}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    users = [r.get("users", r["users_requested"]) for r in rows]
    series = {
        "whole round": [r["round_seconds"] for r in rows],
        "stage 1 export": [r["stage1_export_seconds"] for r in rows],
        "stage 1 fit": [r["stage1_fit_seconds"] for r in rows],
        "stage 2 fit": [r["stage2_fit_seconds"] for r in rows],
        "evaluation": [r["eval_seconds"] for r in rows],
        "corpus load": [r.get("load_seconds") for r in rows],
        "caption states": [r.get("text_states_seconds") for r in rows],
    }
    for name, values in series.items():
        axes[0].plot(users, values, marker="o", label=name)
    axes[0].plot(users, [rows[-1]["round_seconds"] * u / users[-1] for u in users], "k:", label="linear")
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="users (33 posts, 33 edges each)",
        ylabel="seconds",
        title="one MMGA round, 2-core CPU",
    )
    axes[0].legend(fontsize=7)
    posts = [r.get("posts") for r in rows]
    axes[1].plot(
        posts, [r["stage1_export_posts_per_second"] for r in rows], marker="o", label="stage 1 export"
    )
    axes[1].plot(
        posts, [r["stage1_train_posts_per_second"] for r in rows], marker="s", label="stage 1 training"
    )
    axes[1].axhline(2000, color="k", ls=":", label="target 2,000 posts/s")
    axes[1].set(xscale="log", yscale="log", xlabel="posts", ylabel="posts/s", title="stage 1 throughput")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument(
        "--users",
        type=int,
        nargs="+",
        default=[PAPER_USERS],
        help="corpus sizes in users, smallest first (default 60000)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("/tmp/mmga_paper_scale"),
        help="where corpora and runs go; a corpus with the same knobs is reused",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads of the bridge process (default 2)"
    )
    parser.add_argument(
        "--stage1",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to the bridge as --stage1 KEY=VALUE (repeatable), e.g. model.text_frozen_precision=bf16",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    parser.add_argument("--plot", type=Path, default=None, help="log-log PNG of time against size")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    rows = []
    for users in sorted(args.users):
        rows.append(one_size(users, args.dir, args.threads, args.stage1))
        print_table(rows)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    check_targets(rows[-1])
    if args.plot and len(rows) > 1:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
