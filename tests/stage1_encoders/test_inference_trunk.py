"""The frozen image trunk rewritten for inference (``stage1_encoders.inference_trunk``): batch norms folded into
the convolutions that feed them, channels-last, the same outputs; and ``ImageEncoder.trunk_rows`` through it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stage1_encoders import encoders
from stage1_encoders.image_backbones import PACKAGED_IMAGE_MODELS
from stage1_encoders.inference_trunk import fold_batch_norms, inference_trunk, rewritten_trunk

LITE0 = PACKAGED_IMAGE_MODELS["efficientnet-lite0"]


class BatchNormAct(nn.BatchNorm2d):
    """A batch norm followed by dropout and an activation, the shape of timm's ``BatchNormAct2d``."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.drop, self.act = nn.Identity(), nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


class Trunk(nn.Module):
    """Three foldable pairs (a plain batch norm, one with an activation, a depthwise convolution's), and two that
    must stay: a convolution whose output is also read by a residual sum, and a batch norm after a pooling."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn_stem = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.dw, self.bn_dw = nn.Conv2d(8, 8, 3, padding=1, groups=8), BatchNormAct(8)
        self.pw, self.bn_pw = nn.Conv2d(8, 8, 1), BatchNormAct(8)  # pw's output is also the residual's
        self.pool, self.bn_pool = nn.AvgPool2d(2), nn.BatchNorm2d(8)
        self.head, self.bn_head = nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn_stem(self.stem(x)))
        x = self.bn_dw(self.dw(x))
        y = self.pw(x)
        x = self.bn_pw(y) + y
        x = self.bn_pool(self.pool(x))
        return self.bn_head(self.head(x)).mean((2, 3))


def randomized(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with batch-norm statistics and affine parameters far from the identity."""
    gen = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) * 3 + 0.1)
            m.weight.data.copy_(torch.randn(n, generator=gen))
            m.bias.data.copy_(torch.randn(n, generator=gen))
    return module.eval()


def test_folds_each_batch_norm_fed_by_a_convolution_alone_and_computes_the_same():
    torch.manual_seed(0)
    trunk = randomized(Trunk())
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    folded, count = fold_batch_norms(trunk)
    assert count == 3  # bn_stem, bn_dw, bn_head; not bn_pw (pw's output has two readers) nor bn_pool
    kinds = {name: type(m) for name, m in folded.named_modules()}
    assert kinds["bn_pw"] is BatchNormAct and kinds["bn_pool"] is nn.BatchNorm2d
    assert kinds["bn_stem"] is nn.Identity and kinds["bn_head"] is nn.Identity
    assert kinds["bn_dw"] is nn.Sequential  # its activation stays: what it computed after the normalisation
    x = torch.randn(5, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), trunk(x), atol=1e-5, rtol=1e-5)
    # the trunk given is untouched
    for name, value in trunk.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert isinstance(trunk.bn_stem, nn.BatchNorm2d)


def test_a_fold_that_ignored_the_batch_norm_would_be_caught():
    """The parity above can fail: folded weights without the normalisation give other outputs."""
    trunk = randomized(Trunk())
    folded, _ = fold_batch_norms(trunk)
    folded.stem.weight.data.copy_(trunk.stem.weight)  # the stem's fold undone
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        assert not torch.allclose(folded(x), trunk(x), atol=1e-3)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on a value: torch.fx cannot trace it
            x = x * 2
        return self.bn(self.conv(x)).mean((2, 3))


def test_an_untraceable_trunk_is_copied_unfolded_in_channels_last():
    trunk = randomized(Untraceable())
    rewritten = inference_trunk(trunk)
    assert isinstance(rewritten.bn, nn.BatchNorm2d) and rewritten is not trunk
    assert rewritten.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.requires_grad for p in rewritten.parameters())
    x = torch.randn(3, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), trunk(x))


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip(LITE0.package)
    return encoders.build_image_encoder("efficientnet-lite0")


def test_packaged_trunk_rows_equal_the_trunk_with_every_batch_norm_folded(lite0):
    trunk = lite0.visual.trunk
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in trunk.modules())
    folded, count = fold_batch_norms(trunk)
    assert norms > 40 and count == norms
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    digest, keys = lite0.frozen_digest(), set(lite0.state_dict())
    torch.manual_seed(0)
    pixels = torch.randn(encoders.TRUNK_CPU_CHUNK + 5, 3, 96, 96)  # two chunks
    with torch.no_grad():
        rows = lite0.trunk_rows(pixels)
        torch.testing.assert_close(rows, trunk(pixels), atol=1e-4, rtol=1e-4)
        # an image's row does not depend on its chunk
        torch.testing.assert_close(lite0.trunk_rows(pixels[-3:]), rows[-3:], atol=1e-6, rtol=1e-6)
    # the rewritten trunk lives outside the module tree: the weights a checkpoint and the states' key see are the same
    assert lite0.frozen_digest() == digest and set(lite0.state_dict()) == keys
    assert rewritten_trunk(trunk) is rewritten_trunk(trunk)  # built once while the weights stay


def test_trunk_rows_follow_weights_changed_in_place(lite0):
    torch.manual_seed(1)
    pixels = torch.randn(3, 3, 96, 96)
    stem = lite0.visual.trunk.conv_stem.weight
    saved = stem.detach().clone()
    try:
        with torch.no_grad():
            lite0.trunk_rows(pixels)  # the rewritten trunk is built
            before = rewritten_trunk(lite0.visual.trunk)
            stem.mul_(0.5)
            assert rewritten_trunk(lite0.visual.trunk) is not before
            torch.testing.assert_close(
                lite0.trunk_rows(pixels), lite0.visual.trunk(pixels), atol=1e-4, rtol=1e-4
            )
    finally:
        with torch.no_grad():
            stem.copy_(saved)


class ScaledNorm(nn.BatchNorm2d):
    """A batch norm subclass of another shape (no ``drop`` and ``act``): what follows its normalisation is unknown."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_a_batch_norm_subclass_of_another_shape_stays_unfolded():
    trunk = randomized(
        nn.Sequential(nn.Conv2d(3, 4, 1), ScaledNorm(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    )
    folded, count = fold_batch_norms(trunk)
    assert count == 1 and isinstance(folded.get_submodule("1"), ScaledNorm)
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), trunk(x), atol=1e-5, rtol=1e-5)
