"""A frozen image trunk rewritten for inference: its batch norms folded into the convolutions before them, and
its tensors in channels-last order.

A frozen trunk in eval mode computes ``act(BN(conv(x)))`` with fixed statistics, so each batch norm is an affine
map per channel that can be folded into the weights and bias of the convolution that feeds it
(``torch.nn.utils.fusion.fuse_conv_bn_eval``); what follows the normalisation (timm's ``BatchNormAct2d`` applies
dropout and an activation after it) stays. Which convolution feeds which batch norm is read from the trunk's
traced graph (``torch.fx``), not from module names: a batch norm is folded only when its input is a plain
``nn.Conv2d`` whose output nothing else reads. Channels-last is the layout oneDNN's CPU convolutions (and cuDNN's)
prefer for depthwise and pointwise convolutions, which are most of an EfficientNet.

On the default tower (EfficientNet-Lite0, 96 x 96 inputs, 2 threads) the rewritten trunk takes 0.46x the
original's time on the same chunks of 64 images, for outputs equal within float rounding (a largest difference of
4e-6 of the largest output; ``benchmarks/bench_image_trunk.py``). A trunk that ``torch.fx`` cannot trace keeps its
batch norms and gets the channels-last layout only.
"""

from __future__ import annotations

import copy
import logging
import weakref

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)


class _BatchNormLeaves(fx.Tracer):
    """Traces a trunk with every batch norm (subclasses such as timm's ``BatchNormAct2d`` included) kept as one
    module call, so that the graph shows which convolution feeds it."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.BatchNorm2d) or super().is_leaf_module(m, module_qualified_name)


def _after_normalisation(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What a batch norm module computes after the normalisation itself: timm's ``BatchNormAct2d`` (and its
    kin) apply ``drop`` then ``act``; a plain batch norm nothing. None for a subclass of another shape (not
    folded)."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    if not isinstance(drop, nn.Module) or not isinstance(act, nn.Module):
        return None
    return nn.Sequential(drop, act)


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def fold_batch_norms(trunk: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``trunk`` (in eval mode) with each batch norm that directly follows a convolution folded into
    it, and the number folded; ``trunk`` itself is left as it is. Raises what ``torch.fx`` raises for a trunk it
    cannot trace."""
    model = copy.deepcopy(trunk).eval()
    graph = _BatchNormLeaves().trace(model)
    folded = fx.GraphModule(model, graph, class_name=type(trunk).__name__)
    modules = dict(folded.named_modules())
    count = 0
    for node in folded.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        bn, source = modules[node.target], node.args[0]
        if not (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and type(modules[source.target]) is nn.Conv2d
            and len(source.users) == 1
            and bn.track_running_stats
            and bn.running_mean is not None
        ):
            continue
        rest = _after_normalisation(bn)
        if rest is None:
            log.debug("image trunk: %s (%s) left unfolded", node.target, type(bn).__name__)
            continue
        _replace(folded, source.target, fuse_conv_bn_eval(modules[source.target], bn))
        _replace(folded, node.target, rest)
        count += 1
    folded.recompile()
    return folded, count


def inference_trunk(trunk: nn.Module) -> nn.Module:
    """``trunk`` rewritten for inference (:func:`fold_batch_norms`, then channels-last), frozen and in eval
    mode; a trunk that ``torch.fx`` cannot trace is copied unfolded. Inputs may come in either layout."""
    try:
        model, count = fold_batch_norms(trunk)
        log.debug("image trunk: %d batch norms folded into their convolutions", count)
    except Exception as err:  # noqa: BLE001 -- tracing raises many types; the unfolded copy computes the same
        log.debug(
            "image trunk: not traceable by torch.fx (%s: %s); batch norms kept", type(err).__name__, err
        )
        model = copy.deepcopy(trunk)
    model = model.to(memory_format=torch.channels_last).eval()
    model.requires_grad_(False)
    return model


# Each trunk's rewritten copy with the key of the weights it was built from; held beside the trunk, not in it, so
# that it is never part of a state dict, a weights digest, a pickle or a deep copy of the encoder.
_REWRITTEN: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = weakref.WeakKeyDictionary()


def _weights_key(trunk: nn.Module) -> tuple:
    """Changes whenever a weight or statistic of ``trunk`` does: replaced (``to()``, a new tensor), moved, cast,
    or written in place (``load_state_dict``'s copies, an optimizer step: each bumps the tensor's version)."""
    tensors = (*trunk.parameters(), *trunk.buffers())
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


def rewritten_trunk(trunk: nn.Module) -> nn.Module:
    """:func:`inference_trunk` of ``trunk``, built on first use and rebuilt whenever ``trunk``'s weights have
    changed since."""
    key = _weights_key(trunk)
    held = _REWRITTEN.get(trunk)
    if held is None or held[0] != key:
        held = (key, inference_trunk(trunk))
        _REWRITTEN[trunk] = held
    return held[1]
