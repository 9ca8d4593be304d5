"""Stage 1's trained encoders in their own libraries' formats, beside the checkpoint, so that they load without
this package (``mmga_common.layout``: ``text_encoder_dir``, ``image_encoder_dir``).

Text (``<out>/checkpoints/text_encoder/``): the masked-LM model and its tokenizer through ``save_pretrained`` (for a
frozen pretrained encoder, ``frozen_source.json`` naming it and the graph head's ``graph_head.safetensors``
instead)::

    model = transformers.AutoModel.from_pretrained(folder)          # the encoder; [CLS] state = R^T
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    # AutoModelForMaskedLM.from_pretrained(folder) also loads the MLM head

Image (``<out>/checkpoints/image_encoder/``): a whole open_clip CLIP model whose visual tower is the trained one,
as open_clip's hub format (``open_clip_config.json`` + ``open_clip_model.safetensors``), plus the model config as
``<model name>.json``::

    model = open_clip.create_model("local-dir:" + folder)           # open_clip >= 3
    # or, by name (our presets are not built into open_clip: register their config first)
    open_clip.add_model_config(folder)                              # registers <model name>.json
    model = open_clip.create_model(name, pretrained=folder + "/open_clip_model.safetensors")
    model.encode_image(pixels)                                      # R^I (normalize=False)

A packaged backbone (``model.image_model=efficientnet-lite0``: frozen trunk, trained projection) is not copied:
``frozen_source.json`` names its package and the model config in ``stage1_encoders/model_configs``, and
``image_head.safetensors`` holds the trained projection (``stage1_encoders.build_image_encoder(name)`` builds the
tower with the packaged trunk; load the head into its ``visual.head``), and ``graph_head.safetensors`` the image
graph head when there is one (``model.image_head_dim``; ``build_image_encoder(name, head_dim=d)``, then its
``graph_head``).

The text tower of that CLIP model is not MMGA's (stage 1 trains only the visual tower; its text encoder is
``text_encoder/``): it holds open_clip's initialisation, there only because open_clip loads whole models.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file
from transformers.utils import logging as hf_logging

from mmga_common.layout import OPEN_CLIP_CONFIG_FILE, OPEN_CLIP_WEIGHTS_FILE
from stage1_encoders.encoders import (
    ImageEncoder,
    TextEncoder,
    no_random_init_notice,
    register_image_presets,
)

FROZEN_SOURCE_FILE = "frozen_source.json"
GRAPH_HEAD_FILE = "graph_head.safetensors"
IMAGE_HEAD_FILE = "image_head.safetensors"


def _save_state(state: dict, path: Path) -> None:
    """A state dict as a safetensors file, each tensor a contiguous CPU copy (safetensors refuses tensors that
    share storage)."""
    save_file({name: value.detach().cpu().clone().contiguous() for name, value in state.items()}, str(path))


def save_text_encoder(text_encoder: TextEncoder, tokenizer, folder: Path) -> Path:
    """``text_encoder``'s masked-LM model and ``tokenizer`` to ``folder`` with ``save_pretrained``. A frozen
    pretrained encoder is its source, unchanged: ``frozen_source.json`` names it (load it from there with
    ``AutoModel.from_pretrained``) instead of a 90 MB copy per run, and the graph head, when there is one, goes to
    ``graph_head.safetensors`` (the MLP ``TextEncoder.head``: R^T = [m || head(m)] over the mean-pooled m)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if text_encoder.reloadable_keys() and text_encoder.tuned_layers == 0:
        info = {"source": text_encoder.source, "pooling": text_encoder.pooling, "frozen": True}
        if text_encoder.head is not None:
            info["graph_head"] = GRAPH_HEAD_FILE
            _save_state(text_encoder.head.state_dict(), folder / GRAPH_HEAD_FILE)
        (folder / FROZEN_SOURCE_FILE).write_text(json.dumps(info, indent=2) + "\n")
        return folder
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers 5 draws a "Writing model shards" bar for one small file
    try:
        text_encoder.mlm_model.save_pretrained(folder)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(folder)
    return folder


def save_image_encoder(image_encoder: ImageEncoder, model_name: str, folder: Path) -> Path:
    """The open_clip model ``model_name`` with ``image_encoder``'s visual tower, to ``folder`` in open_clip's hub
    format (config + safetensors weights), and its model config as ``<model_name>.json`` when the name is a plain
    one (not ``hf-hub:`` or a path). The global RNG is left as it was (the rebuilt text tower draws from it).
    A packaged backbone with a frozen trunk (``ImageEncoder.frozen``) is its package plus the trained projection:
    ``frozen_source.json`` names it, the package and the open_clip model config that builds its tower, and
    ``image_head.safetensors`` holds the tower's ``head`` (R^I = head(trunk(pixels))), instead of a copy per run;
    with an image graph head, ``graph_head.safetensors`` holds it (``ImageEncoder.graph_head``: R^I = [mean of the
    projections || graph_head(mean of the trunk outputs)] over a user's images)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if image_encoder.frozen:
        from stage1_encoders.image_backbones import PACKAGED_IMAGE_MODELS

        packaged = PACKAGED_IMAGE_MODELS[image_encoder.source]
        info = {
            "source": image_encoder.source,
            "package": packaged.distribution,
            "weights": packaged.weights,
            "open_clip_config": packaged.config,
            "preprocess_cfg": {"mean": list(packaged.mean), "std": list(packaged.std)},
            "frozen": "trunk",
            "head": IMAGE_HEAD_FILE,
        }
        _save_state(image_encoder.visual.head.state_dict(), folder / IMAGE_HEAD_FILE)
        if image_encoder.graph_head is not None:
            info["graph_head"] = GRAPH_HEAD_FILE
            _save_state(image_encoder.graph_head.state_dict(), folder / GRAPH_HEAD_FILE)
        (folder / FROZEN_SOURCE_FILE).write_text(json.dumps(info, indent=2) + "\n")
        return folder
    register_image_presets()
    model_cfg = open_clip.get_model_config(model_name)
    with torch.random.fork_rng(devices=[]), no_random_init_notice():
        clip = open_clip.create_model(model_name, pretrained=None, load_weights=False, device="cpu")
    clip.visual.load_state_dict({k: v.detach().cpu() for k, v in image_encoder.visual.state_dict().items()})
    _save_state(clip.state_dict(), folder / OPEN_CLIP_WEIGHTS_FILE)
    pre = image_encoder.preprocess_cfg
    preprocess = {key: pre[key] for key in ("mean", "std", "interpolation", "resize_mode") if pre.get(key)}
    hub_config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess}
    (folder / OPEN_CLIP_CONFIG_FILE).write_text(json.dumps(hub_config, indent=2) + "\n", encoding="utf-8")
    if model_cfg is not None and ":" not in model_name and "/" not in model_name:
        (folder / f"{model_name}.json").write_text(json.dumps(model_cfg, indent=2) + "\n", encoding="utf-8")
    return folder
