"""Reliability round 3, the bridge's side: an embed or a report never destroys good output, files the manifest
does not vouch for are refused, and what cannot finish is refused early, each in one line (docs/reliability.md).

Every test here failed before its fix (issue "Reliability, round 3", items 1-3, 5-7, 11-14, and the late lock).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import snapshot, tiny_config

from bridge.embed import main as embed_main
from bridge.inference import EmbedError, load_run
from bridge.report.diagnostics import edge_topics
from bridge.rounds.runner import run_bridge
from bridge.runfolder import RunFolderUnwritable, run_lock
from bridge.variants import REGISTRY
from cache import read_encoder_embeddings, read_graph_outputs
from corpus import load_corpus
from corpus.synthetic import TRUTH_FILE

REPO = Path(__file__).resolve().parents[2]
EMBEDDABLE = sorted(name for name, v in REGISTRY.items() if v.embeddable)


@pytest.fixture(scope="module")
def every_variant(tiny_corpus, tmp_path_factory):
    """One round of every variant (baselines and ablations) on the tiny corpus."""
    run_dir = tmp_path_factory.mktemp("every_variant") / "run"
    run_bridge(tiny_config(tiny_corpus, baselines=True, ablations=True), run_dir)
    return run_dir


@pytest.mark.parametrize("variant", EMBEDDABLE)
def test_every_variant_embeds_its_own_corpus_as_its_cache(every_variant, tiny_corpus, variant):
    """Item 6 and the duplicated rule behind it: ``no_align`` and the uniform-gate ablation used to fail with
    "node input 'image' needs stage 1's image embeddings"."""
    run = load_run(every_variant, variant=variant)
    out = run.embed_corpus(tiny_corpus)
    corpus = load_corpus(tiny_corpus)
    cache_dir = run.paths.cache_dir(variant)
    graph = read_graph_outputs(
        cache_dir, 0, fingerprint=corpus.fingerprint, num_users=corpus.num_users, num_edges=corpus.num_edges
    )
    enc = read_encoder_embeddings(cache_dir, 0, fingerprint=corpus.fingerprint, num_users=corpus.num_users)
    np.testing.assert_allclose(out.graph.user_graph_emb, graph.user_graph_emb, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.encoders.user_text_emb, enc.user_text_emb, atol=1e-5, rtol=0)


def test_embed_refuses_to_write_into_the_run_folder(every_variant, tiny_corpus, tmp_path, capsys):
    """Item 1: ``--cache-out`` into the run's own cache silently overwrote the trained run's files."""
    before = snapshot(every_variant)
    cache = every_variant / "seed_0" / "mmga" / "cache"
    code = embed_main(
        [
            "--run-dir",
            str(every_variant),
            "--corpus",
            str(tiny_corpus),
            "--out",
            str(tmp_path / "x.npz"),
            "--cache-out",
            str(cache),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "inside the run folder" in err and "--cache-out" in err
    assert snapshot(every_variant) == before and not (tmp_path / "x.npz").exists()


def _with_huge_statistic(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    text = (dst / "users.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    column = next(i for i, name in enumerate(rows[0]) if name not in ("user_id", "label", "fans", "split"))
    rows[1][column] = "1e300"  # finite as a float64, infinite once standardized into float32
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    (dst / "users.csv").write_text(out.getvalue())
    return dst


def test_embed_never_replaces_a_good_npz_with_nan(every_variant, tiny_corpus, tmp_path, capsys):
    """Item 2: a huge statistic made embed replace a good .npz with NaN (and half-update the cache folder)."""
    good = tmp_path / "out.npz"
    args = ["--run-dir", str(every_variant), "--out", str(good)]
    assert embed_main([*args, "--corpus", str(tiny_corpus)]) == 0
    before = snapshot(tmp_path)
    huge = _with_huge_statistic(tiny_corpus, tmp_path.parent / f"{tmp_path.name}_huge")
    assert embed_main([*args, "--corpus", str(huge)]) == 2
    err = capsys.readouterr().err
    assert "users.csv" in err and err.count("\n") == 1  # refused (by the reader or by embed), in one line
    assert snapshot(tmp_path) == before  # the good .npz and its cache folder are untouched


def test_statistics_that_overflow_once_standardized_are_refused_naming_the_column():
    from types import SimpleNamespace

    from bridge.inference.embeddings import standardize_like

    train = SimpleNamespace(
        root=Path("train"),
        feature_names=["likes"],
        feature_mean=np.array([0.0]),
        feature_std=np.array([1e-3]),
    )
    new = SimpleNamespace(
        root=Path("new"),
        feature_names=["likes"],
        user_ids=["ann", "bob"],
        features=np.array([[1.0], [-1.0]], np.float32),
        feature_mean=np.array([0.0]),
        feature_std=np.array([1e37]),
    )  # raw values +-1e37: 1e40 once standardized
    with pytest.raises(
        EmbedError, match=r"new/users.csv: column 'likes' of user 'ann' is not a finite number"
    ):
        standardize_like(new, train)


def test_a_tampered_cache_file_is_refused(every_variant, tmp_path):
    """Item 5: ``load_run(...).embeddings()`` returned a tampered matrix (only sizes were checked)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(every_variant, copy)
    graph = copy / "seed_0" / "mmga" / "cache" / "round_0" / "graph.h5"
    data = bytearray(graph.read_bytes())
    data[-100] ^= 0xFF  # same size, other bytes
    graph.write_bytes(bytes(data))
    with pytest.raises(EmbedError, match="do not match what the run recorded"):
        load_run(copy).embeddings()


@pytest.mark.parametrize("which", ["out", "cache-out"])
def test_embed_outputs_that_cannot_be_written_fail_before_any_work(
    every_variant, tiny_corpus, tmp_path, capsys, which
):
    """Item 12: an unwritable ``--out`` / ``--cache-out`` (here: under a file) ended in a traceback, and the
    .npz was written before the cache failed."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "x.npz" if which == "out" else tmp_path / "x.npz"
    argv = ["--run-dir", str(every_variant), "--corpus", str(tiny_corpus), "--out", str(out)]
    if which == "cache-out":
        argv += ["--cache-out", str(blocker / "cache")]
    start = time.perf_counter()
    assert embed_main(argv) == 2
    assert time.perf_counter() - start < 5  # refused before loading any model
    err = capsys.readouterr().err
    assert err.startswith(f"error: --{which}: cannot write to") and err.count("\n") == 1
    assert not (tmp_path / "x.npz").exists()


def test_embed_on_a_full_disk_is_one_line(every_variant, tiny_corpus, tmp_path, capsys, monkeypatch):
    """Item 13: neither ENOSPC nor the cache's DiskFullError was caught by embed."""
    import errno

    from bridge.inference import embeddings

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.npz"))

    monkeypatch.setattr(embeddings.UserEmbeddings, "_write_npz", full)
    argv = ["--run-dir", str(every_variant), "--corpus", str(tiny_corpus), "--out", str(tmp_path / "x.npz")]
    assert embed_main(argv) == 2
    err = capsys.readouterr().err
    assert "no space left" in err and err.count("\n") == 1
    assert not (tmp_path / "x.npz").exists() and not any((tmp_path / "x_cache").iterdir())


def _shuffled_users(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    lines = (dst / "users.csv").read_text().splitlines()
    body = lines[1:]
    np.random.default_rng(0).shuffle(body)
    (dst / "users.csv").write_text("\n".join([lines[0], *body]) + "\n")
    return dst


def test_the_edge_diagnostic_matches_users_by_id(tiny_corpus, tmp_path):
    """Item 3: with the rows of users.csv shuffled, the truth was applied by row and said 17% same-topic."""
    truth = np.load(Path(tiny_corpus) / TRUTH_FILE)
    expected = float(truth["edge_same_topic"].mean())
    for corpus_dir in (tiny_corpus, _shuffled_users(tiny_corpus, tmp_path / "shuffled")):
        judged = edge_topics(load_corpus(corpus_dir))
        assert judged.source == "generator truth"
        assert float(judged.same.mean()) == pytest.approx(expected)


def test_a_corrupt_truth_file_falls_back_to_labels_with_a_note(tiny_corpus, tmp_path):
    """Item 14: a corrupt _truth.npz raised BadZipFile at report time, after all training."""
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(tiny_corpus, copy)
    (copy / TRUTH_FILE).write_bytes(b"PK\x03\x04 not really a zip")
    judged = edge_topics(load_corpus(copy))
    assert judged.source.startswith("labels of labelled users") and "could not be read" in judged.note


def test_a_plot_that_fails_is_a_warning_in_the_report_not_a_lost_run(every_variant, monkeypatch):
    """Item 7's second half: any plot failure used to end the run after all training."""
    from bridge.report import plots

    def broken(*args, **kwargs):
        raise ValueError("Unknown symbol: \\frac (mathtext)")

    monkeypatch.setattr(plots, "plot_margins", broken)
    with pytest.warns(UserWarning, match="margins.png was not drawn"):
        result = run_bridge(_same_config(every_variant), every_variant)
    assert result.metrics["plot_warnings"] == [
        "margins.png was not drawn: ValueError: Unknown symbol: \\frac (mathtext)"
    ]
    assert "## Plot warnings" in result.report.read_text()


def _same_config(run_dir: Path):
    from bridge.runfolder import Manifest

    corpus = Manifest.load(run_dir / "manifest.json").corpus_path
    return tiny_config(corpus, baselines=True, ablations=True)


def test_a_read_only_run_folder_is_one_line(tmp_path):
    """Item 11: a read-only run folder ended in ``OSError [Errno 30] ... run.lock`` with a traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunFolderUnwritable, match="cannot write the run folder"), run_lock(blocker / "run"):
        pass
    out = subprocess.run(
        [sys.executable, "bridge/alternate.py", "--run-dir", str(blocker / "run")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    assert "cannot write the run folder" in out.stderr


def test_a_busy_run_folder_is_refused_before_torch_is_imported(tmp_path):
    """The lock answered after 21-25 s: it was taken after torch and PyG were imported."""
    run = tmp_path / "run"
    hold = (
        "import sys, time; from bridge.runfolder.lock import run_lock\nwith run_lock(sys.argv[1]):\n"
        "    print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        probe = (
            "import runpy, sys; sys.argv = ['alternate.py', '--run-dir', sys.argv[1]]\n"
            "try:\n    runpy.run_path('bridge/alternate.py', run_name='__main__')\n"
            "except SystemExit as e:\n    print('torch' in sys.modules, e.code)"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe, str(run)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        elapsed = time.perf_counter() - start
    finally:
        holder.kill()
    assert out.stdout.split() == ["False", "2"], out.stderr  # refused, and torch was never imported
    assert "is in use by another bridge run" in out.stderr
    assert elapsed < 10  # about a second on an idle machine (the interpreter's start-up and the config check)


def test_a_label_matplotlib_cannot_parse_as_math_is_drawn_as_text(tmp_path):
    """Item 7: a topic label with ``$ ... $`` that mathtext cannot parse killed the run at the report."""
    from types import SimpleNamespace

    from bridge.report.plots import plot_projections

    n = 30
    corpus = SimpleNamespace(
        label_names=[r"cost $\frac{$", "$x^2$ fans"], labels=np.arange(n) % 2, num_users=n
    )
    blocks = [np.random.default_rng(0).standard_normal((n, 4))]
    plot_projections([("MMGA", blocks)], corpus, tmp_path / "tsne.png")
    assert (tmp_path / "tsne.png").stat().st_size > 0
