"""Stage 1's encoders saved for transformers and open_clip reload outside this package and give the trained
encoders' outputs; building a tower does not log open_clip's random-init notice."""

from __future__ import annotations

import copy
import logging

import open_clip
import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

from mmga_common.layout import OPEN_CLIP_CONFIG_FILE, OPEN_CLIP_WEIGHTS_FILE
from stage1_encoders.encoders import MODEL_CONFIG_DIR, build_image_encoder
from stage1_encoders.hub import save_image_encoder, save_text_encoder


@pytest.fixture(scope="module")
def trained_like(tiny_parts):
    """Copies of the tiny encoders with weights moved off their init (as training would), in eval mode."""
    torch.manual_seed(1)
    image, text = copy.deepcopy(tiny_parts.image_encoder), copy.deepcopy(tiny_parts.text_encoder)
    with torch.no_grad():
        for param in [*image.parameters(), *text.parameters()]:
            param.add_(0.01 * torch.randn_like(param))
    return image.eval(), text.eval()


def test_the_text_encoder_reloads_with_auto_classes(tiny_parts, trained_like, tmp_path, capfd):
    _, text = trained_like
    folder = save_text_encoder(text, tiny_parts.tokenizer, tmp_path / "text_encoder")
    assert "Writing model shards" not in capfd.readouterr().err  # no progress bar in the stage's output
    model = AutoModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    captions = [t for t in tiny_parts.corpus.post_text if t.strip()][:8]
    ours = tiny_parts.tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
    theirs = tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    with torch.no_grad():
        expected = text(ours["input_ids"], ours["attention_mask"])
        got = model(input_ids=theirs["input_ids"], attention_mask=theirs["attention_mask"]).last_hidden_state[
            :, 0
        ]
        mlm = AutoModelForMaskedLM.from_pretrained(folder).eval()
        logits = mlm(input_ids=theirs["input_ids"], attention_mask=theirs["attention_mask"]).logits
        expected_logits = text.mlm_model(
            input_ids=ours["input_ids"], attention_mask=ours["attention_mask"]
        ).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=1e-5)
    assert got.shape == (len(captions), 32)


def test_the_image_tower_reloads_with_open_clip(trained_like, tmp_path, monkeypatch):
    image, _ = trained_like
    folder = save_image_encoder(image, "mmga-vit-tiny", tmp_path / "image_encoder")
    assert {p.name for p in folder.iterdir()} == {
        OPEN_CLIP_CONFIG_FILE,
        OPEN_CLIP_WEIGHTS_FILE,
        "mmga-vit-tiny.json",
    }
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = image(pixels)
        by_dir = open_clip.create_model(f"local-dir:{folder}").eval()
        torch.testing.assert_close(by_dir.encode_image(pixels), expected, rtol=0, atol=1e-6)
    # By name, as a user without this package does it: the preset is unknown to open_clip until the config saved
    # beside the weights is registered (the registry is restored after the test).
    factory = open_clip.factory
    paths = [p for p in factory._MODEL_CONFIG_PATHS if p.resolve() != MODEL_CONFIG_DIR.resolve()]
    monkeypatch.setattr(factory, "_MODEL_CONFIG_PATHS", paths)
    monkeypatch.setattr(
        factory, "_MODEL_CONFIGS", {k: v for k, v in factory._MODEL_CONFIGS.items() if "mmga" not in k}
    )
    assert "mmga-vit-tiny" not in open_clip.list_models()
    open_clip.add_model_config(folder)
    by_name = open_clip.create_model("mmga-vit-tiny", pretrained=str(folder / OPEN_CLIP_WEIGHTS_FILE)).eval()
    with torch.no_grad():
        torch.testing.assert_close(by_name.encode_image(pixels), expected, rtol=0, atol=1e-6)
    assert list(by_dir.visual.preprocess_cfg["mean"]) == list(image.preprocess_cfg["mean"])


def test_saving_leaves_the_global_rng_alone(trained_like, tmp_path):
    image, _ = trained_like
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    save_image_encoder(image, "mmga-vit-tiny", tmp_path / "image_encoder")
    assert torch.equal(torch.rand(3), expected)


def test_building_a_tower_does_not_log_the_random_init_notice(caplog, monkeypatch):
    # without the entry points' filters (mmga_common.noise), which an earlier test's CLI call may have installed
    monkeypatch.setattr(logging.getLogger(), "filters", [])
    monkeypatch.setattr(caplog.handler, "filters", [])
    with caplog.at_level(logging.INFO):
        open_clip.create_model("mmga-vit-tiny")  # open_clip itself: the notice this filter is about
    assert any("Model initialized randomly" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        build_image_encoder("mmga-vit-tiny")
        build_image_encoder("mmga-vit-tiny", load_weights=False)
        assert any(
            "creation process complete" in r.getMessage() for r in caplog.records
        )  # other records pass
        assert not any("Model initialized randomly" in r.getMessage() for r in caplog.records)
        logging.getLogger().warning("No pretrained weights loaded for model 'x'. Model initialized randomly.")
    notices = [r for r in caplog.records if "Model initialized randomly" in r.getMessage()]
    assert len(notices) == 1  # the filter is gone after the build
