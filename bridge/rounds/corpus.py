"""The run's corpus: ``--corpus`` loaded, or the embedded synthetic corpus generated into the run folder once.

Generating the synthetic corpus into a run folder never removes a file the bridge did not write.

``<run_dir>/corpus`` is (re)generated only when it is absent or empty, or when it carries the bridge's
marker (:mod:`corpus.ownership`) whose token matches the one this run folder's manifest recorded (or, for a
folder generated before markers existed, when its files still hash to what the manifest recorded). Anything
else there, e.g. a user's own corpus copied in, stops the run naming the folder and ``--corpus``; a folder
that is ours is cleared file by file, and only of the files the generator wrote.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bridge.evaluation.tasks import check_corpus_can_finish
from bridge.rounds.config import BridgeConfig
from bridge.rounds.context import BridgeRun
from bridge.runfolder import CORPUS_KEY, Manifest, ManifestConflict
from corpus import Corpus, load_corpus
from corpus.ownership import (
    GENERATOR_RECORD,
    folder_files,
    foreign_files,
    read_marker,
    remove_generated,
    write_marker,
)
from corpus.synthetic import SyntheticConfig, generate
from mmga_common.config import ConfigError, deep_merge, from_dict

TOKEN_KEY = "generated_corpus_token"
# The embedded synthetic corpus generated when no --corpus is given (sized for the 10-minute default run).
SYNTHETIC_DEFAULTS: dict[str, Any] = {"num_users": 1000}


class CorpusFolderNotOwned(ManifestConflict):
    """The folder the bridge would generate into holds files it did not write."""


def _matches_manifest(corpus_dir: Path, manifest: Manifest, corpus_key: str) -> bool:
    """A marker-less folder from before markers: every file the manifest hashed is unchanged."""
    entry = manifest.entry(corpus_key)
    if entry is None or not entry.files or not (corpus_dir / GENERATOR_RECORD).is_file():
        return False
    return manifest.intact(corpus_key)


def check_owned(corpus_dir: Path, manifest: Manifest, corpus_key: str) -> set[str]:
    """The files of ``corpus_dir`` the bridge may remove; raises :class:`CorpusFolderNotOwned` otherwise."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.exists() or (corpus_dir.is_dir() and not any(corpus_dir.iterdir())):
        return set()
    refuse = (
        f"{corpus_dir} already holds files that this run folder did not generate ({{why}}); refusing to "
        f"overwrite or remove them. To train on that corpus pass --corpus {corpus_dir}; to generate the "
        "synthetic corpus, use another --run-dir (or move that folder away)."
    )
    if not corpus_dir.is_dir():
        raise CorpusFolderNotOwned(refuse.format(why="it is not a folder"))
    marker = read_marker(corpus_dir)
    token = manifest.data.get(TOKEN_KEY)
    if marker is not None and token is not None and marker["token"] == token:
        owned = set(marker["files"])
    elif marker is None and _matches_manifest(corpus_dir, manifest, corpus_key):
        owned = set()
    else:
        why = "no generator marker" if marker is None else "its marker does not match this run's manifest"
        raise CorpusFolderNotOwned(refuse.format(why=why))
    foreign = foreign_files(corpus_dir, owned)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise CorpusFolderNotOwned(refuse.format(why=f"files the generator never wrote: {shown}"))
    return owned


def generate_owned(corpus_dir: Path, synth: SyntheticConfig, manifest: Manifest, corpus_key: str) -> Path:
    """(Re)generate the synthetic corpus into ``corpus_dir`` under the rules in the module docstring."""
    corpus_dir = Path(corpus_dir)
    owned = check_owned(corpus_dir, manifest, corpus_key)
    if corpus_dir.exists() and any(corpus_dir.iterdir()):
        remove_generated(corpus_dir, owned)
    token = secrets.token_hex(8)
    manifest.data[TOKEN_KEY] = token
    manifest.save()
    # The marker comes first, so a generation killed half-way leaves a folder the next run may clear.
    write_marker(corpus_dir, token, [])
    generate(corpus_dir, synth, overwrite=False)
    write_marker(corpus_dir, token, folder_files(corpus_dir))
    return corpus_dir


def synthetic_config(cfg: BridgeConfig) -> SyntheticConfig:
    """The generator's knobs: the bridge's defaults with the user's ``synthetic`` section on top."""
    source = "bridge config"
    synth = from_dict(
        SyntheticConfig, deep_merge(SYNTHETIC_DEFAULTS, cfg.synthetic), source, prefix="synthetic."
    )
    try:
        synth.check()
    except ValueError as err:
        raise ConfigError(source, None, "synthetic", str(err)) from err
    return synth


def _generate(run: BridgeRun) -> Path:
    """Generate the synthetic corpus into the run folder once (manifest key ``corpus/generate``)."""
    corpus_dir = run.paths.generated_corpus
    synth = synthetic_config(run.cfg)
    recorded = {"synthetic": asdict(synth)}
    if run.manifest.is_complete(CORPUS_KEY, recorded, "", force=run.force):
        run.console.detail(f"[corpus] {corpus_dir} already generated (skipped)")
        run.note_step(CORPUS_KEY, False, run.manifest.entry(CORPUS_KEY).seconds)
        return corpus_dir
    run.console.detail(
        f"[corpus] generating the synthetic corpus ({synth.num_users} users) into {corpus_dir}"
    )
    start = time.perf_counter()
    generate_owned(corpus_dir, synth, run.manifest, CORPUS_KEY)  # never removes files it did not write
    seconds = time.perf_counter() - start
    names = ("users.csv", "posts.jsonl", "edges.csv")
    run.manifest.record(
        CORPUS_KEY,
        recorded,
        "",
        outputs={"corpus": corpus_dir},
        hash_files={n: corpus_dir / n for n in names},
        seconds=seconds,
    )
    run.note_step(CORPUS_KEY, True, seconds)
    run.console.info(f"[corpus] generated the synthetic corpus ({synth.num_users} users) in {seconds:.1f} s")
    return corpus_dir


def prepare_corpus(run: BridgeRun) -> Corpus:
    """Load ``--corpus``, or generate the synthetic corpus into the run folder once and load it; refuse a corpus
    the run cannot finish on before it is recorded or anything trains."""
    corpus_dir = Path(run.cfg.corpus) if run.cfg.corpus is not None else _generate(run)
    start = time.perf_counter()
    corpus = load_corpus(corpus_dir)
    run.console.info(
        f"[corpus] {corpus_dir}: {corpus.num_users} users, {corpus.num_posts} posts, {corpus.num_edges} edges "
        f"(loaded in {time.perf_counter() - start:.1f} s)"
    )
    check_corpus_can_finish(corpus, run.console.always)
    run.manifest.bind_corpus(corpus_dir, corpus.fingerprint, force=run.force)
    return corpus
