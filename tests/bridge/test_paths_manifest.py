"""RunPaths, the manifest's skip / complete / conflict logic, and the bridge config's parsing."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.rounds.config import build_config
from bridge.runfolder.manifest import Manifest, ManifestConflict, ManifestError
from bridge.runfolder.paths import RunPaths
from bridge.runfolder.records import config_diff, to_jsonable
from mmga_common.config import ConfigError, nest, parse_override


def test_run_paths_layout(tmp_path):
    paths = RunPaths(tmp_path)
    assert paths.manifest == tmp_path / "manifest.json"
    assert paths.generated_corpus == tmp_path / "corpus"
    assert paths.report_dir == tmp_path / "report"
    assert paths.cache_dir("mmga") == tmp_path / "mmga" / "cache"
    assert (
        paths.stage_dir(paths.stage_key("no_align", 2, "stage1"))
        == tmp_path / "no_align" / "round_2" / "stage1"
    )
    assert str(paths.stage_key("mmga", 1, "stage2")) == "mmga/round_1/stage2"
    seeded = paths.for_seed(2)
    assert seeded.cache_dir("mmga") == tmp_path / "seed_2" / "mmga" / "cache"
    key = seeded.stage_key("abl_no_gcl", 0, "stage1")
    assert paths.stage_dir(key) == tmp_path / "seed_2" / "abl_no_gcl" / "round_0" / "stage1"
    assert str(seeded.stage_key("mmga", 1, "stage2")) == "seed_2/mmga/round_1/stage2"
    assert str(seeded.eval_key("no_align", 2)) == "eval/seed_2/no_align/round_2"
    assert seeded.manifest == paths.manifest and seeded.report_dir == paths.report_dir
    with pytest.raises(ValueError, match="training seed"):
        paths.for_seed(-1)
    # every (variant, round, stage) folder is distinct
    dirs = {
        paths.stage_dir(paths.stage_key(v, r, s))
        for v in ("mmga", "no_align", "graph_only")
        for r in range(3)
        for s in ("stage1", "stage2")
    }
    assert len(dirs) == 18
    with pytest.raises(ValueError, match="variant must be a name"):
        paths.stage_key("mmga/../x", 0, "stage1")
    with pytest.raises(ValueError, match="round must be"):
        paths.stage_key("mmga", -1, "stage1")
    with pytest.raises(ValueError, match="unknown stage"):
        paths.stage_key("mmga", 0, "stage3")


@dataclass
class _Cfg:
    out_dir: Path
    steps: int = 10


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_manifest_complete_skip_and_reload(tmp_path):
    m = Manifest.load(tmp_path / "manifest.json")
    cfg = _Cfg(tmp_path / "mmga" / "round_0" / "stage1")
    assert not m.is_complete("a", cfg, "fp")
    ckpt = _write(cfg.out_dir / "last.ckpt", "weights")
    m.record(
        "a",
        cfg,
        "fp",
        outputs={"checkpoint": ckpt, "log_dir": cfg.out_dir},
        metrics={"loss": 1.5},
        seconds=2.0,
    )
    # a fresh load sees the same entry; paths in the config are stored relative to the run folder
    m2 = Manifest.load(tmp_path / "manifest.json")
    assert m2.is_complete("a", cfg, "fp")
    assert m2.entry("a").config["out_dir"] == "$RUN/mmga/round_0/stage1"
    assert m2.outputs("a")["checkpoint"] == ckpt
    assert m2.entry("a").metrics == {"loss": 1.5}
    # a validator that fails makes it incomplete (e.g. an unreadable cache file)
    assert not m2.is_complete("a", cfg, "fp", validate=lambda outputs: (_ for _ in ()).throw(OSError("bad")))


def test_manifest_detects_changed_or_missing_outputs(tmp_path):
    m = Manifest.load(tmp_path / "manifest.json")
    cfg = _Cfg(tmp_path / "s")
    ckpt = _write(tmp_path / "s" / "last.ckpt", "weights")
    m.record("a", cfg, "fp", outputs={"checkpoint": ckpt})
    ckpt.write_text("weightz")  # same size, other content
    assert not m.is_complete("a", cfg, "fp")
    m.record("a", cfg, "fp", outputs={"checkpoint": ckpt})
    ckpt.unlink()
    assert not m.is_complete("a", cfg, "fp")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        m.record("b", cfg, "fp", outputs={"checkpoint": tmp_path / "nope"})


def test_manifest_conflicts_and_force(tmp_path):
    m = Manifest.load(tmp_path / "manifest.json")
    ckpt = _write(tmp_path / "s" / "last.ckpt", "w")
    m.record("mmga/round_0/stage1", _Cfg(tmp_path / "s", steps=10), "fp", outputs={"checkpoint": ckpt})
    with pytest.raises(ManifestConflict, match=r"steps: 10 -> 20[\s\S]*--run-dir[\s\S]*--force"):
        m.is_complete("mmga/round_0/stage1", _Cfg(tmp_path / "s", steps=20), "fp")
    with pytest.raises(ManifestConflict, match="corpus changed"):
        m.is_complete("mmga/round_0/stage1", _Cfg(tmp_path / "s", steps=10), "other")
    # --force forgets the entry (it will be recomputed), on disk too
    assert not m.is_complete("mmga/round_0/stage1", _Cfg(tmp_path / "s", steps=20), "fp", force=True)
    assert Manifest.load(m.path).entry("mmga/round_0/stage1") is None


def test_manifest_corpus_binding(tmp_path):
    m = Manifest.load(tmp_path / "manifest.json")
    m.bind_corpus(tmp_path / "corpus", "aaa")
    m.record("x", {"k": 1}, "aaa")
    m.bind_corpus(tmp_path / "corpus", "aaa")  # same corpus: fine
    with pytest.raises(ManifestConflict, match="new --run-dir, or --force"):
        m.bind_corpus(tmp_path / "other", "bbb")
    m.bind_corpus(tmp_path / "other", "bbb", force=True)
    assert m.entry("x") is None and m.data["corpus"]["fingerprint"] == "bbb"


def test_manifest_written_atomically_and_bad_file_named(tmp_path):
    m = Manifest.load(tmp_path / "manifest.json")
    m.record("x", {"k": 1}, "fp")
    assert json.loads(m.path.read_text())["entries"]["x"]["config"] == {"k": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temporary file left behind
    m.path.write_text('{"entries": {\n  "x": oops}')
    with pytest.raises(ManifestError, match=r"manifest.json, line 2"):
        Manifest.load(m.path)


def test_entry_digest_changes_with_outputs(tmp_path):
    m = Manifest.load(tmp_path / "manifest.json")
    f = _write(tmp_path / "o.bin", "1")
    m.record("a", {"k": 1}, "fp", outputs={"o": f})
    d1 = m.entry_digest("a")
    f.write_text("2")
    m.record("a", {"k": 1}, "fp", outputs={"o": f})
    assert m.entry_digest("a") != d1


def test_to_jsonable_and_diff(tmp_path):
    data = to_jsonable({"p": tmp_path / "a", "t": (1, 2.5), "n": None, "q": Path("/elsewhere")}, tmp_path)
    assert data == {"p": "$RUN/a", "t": [1, 2.5], "n": None, "q": "/elsewhere"}
    assert (
        config_diff({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 4})
        == "  a.c: 2 -> 3\n  d: '<absent>' -> 4"
    )


def test_overrides_and_config_file(tmp_path):
    assert parse_override("trainer.max_steps=10", "--stage1") == ("trainer.max_steps", 10)
    assert parse_override("optim.lr=1e-3", "--stage1") == ("optim.lr", 0.001)
    assert parse_override("model.image_pretrained=null", "--stage1") == ("model.image_pretrained", None)
    assert parse_override("head_seeds=[0, 1]", "--eval") == ("head_seeds", [0, 1])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("trainer.max_steps", "--stage1")
    assert nest({"a.b": 1, "a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}

    cfg_file = _write(
        tmp_path / "cfg.yaml",
        "rounds: 2\nstage1:\n  trainer: {max_steps: 5}\n  optim.lr: 0.01\neval:\n  head_seeds: [1, 2]\n",
    )
    cfg = build_config(cfg_file, stage1=["trainer.max_steps=7"], rounds=None)
    assert cfg.rounds == 2
    assert cfg.stage1 == {"trainer": {"max_steps": 7}, "optim": {"lr": 0.01}}  # the command line wins
    assert cfg.eval.head_seeds == (1, 2)
    assert build_config(cfg_file, rounds=4).rounds == 4

    bad = _write(tmp_path / "bad.yaml", "rounds: 2\nstage3:\n  x: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml, line 2, field 'stage3': unknown section"):
        build_config(bad)
    bad_eval = _write(tmp_path / "bad_eval.json", '{\n "eval": {"seedz": [1]}\n}')
    with pytest.raises(ConfigError, match=r"bad_eval.json, line 2, field 'eval.seedz': unknown field"):
        build_config(bad_eval)
    with pytest.raises(ConfigError, match="rounds"):
        build_config(rounds=0)


def test_config_file_sets_the_preset_and_eval_scalars_become_lists(tmp_path):
    cfg_file = _write(
        tmp_path / "cfg.yaml", "preset: real\neval:\n  head_seeds: 4\n  weight_decays: [1e-3]\n"
    )
    cfg = build_config(cfg_file)
    assert cfg.preset == "real" and cfg.eval.head_seeds == (4,) and cfg.eval.weight_decays == (0.001,)
    with pytest.raises(
        ConfigError, match=r"field 'eval.sgc_hops': each hop count must be in 1..10, got \[0\]"
    ):
        build_config(cfg_file, eval_overrides=["sgc_hops=0"])


@pytest.mark.parametrize("flag, value", [("rounds", 1_000_000_000), ("seeds", 1_000_000)])
def test_absurd_rounds_and_seeds_are_refused(flag, value):
    with pytest.raises(ConfigError, match=f"field '{flag}'.*<= 100"):
        build_config(**{flag: value})
