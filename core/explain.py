"""Explanations of a classifier's decision: Grad-CAM (pytorch-grad-cam) and the mask-attention maps.

Both register hooks on the network and Grad-CAM runs a backward pass through it, so each holds the
network's lock (``core.runtime.module_lock``) from the first hook to the last: a served network is
shared by every session's thread, and a hook fires on whichever thread runs the network.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from models._torchvision_ops import ensure_torchvision_ops

ensure_torchvision_ops()  # pytorch-grad-cam imports torchvision, which needs its operators registered first

from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget, ClassifierOutputTarget  # noqa: E402
from torch import nn  # noqa: E402

from models.mask_attention import MaskAttentionConv  # noqa: E402

from .imaging.resample import resize as bilinear  # noqa: E402
from .runtime import exclusive_use  # noqa: E402


class _Explained(nn.Module):
    """The network as Grad-CAM calls it, ``net(image)``: for mask-taking networks ``net(image, mask)`` with the mask
    fixed. Without the bookkeeping pytorch-grad-cam does on every call: ``eval()`` visits every submodule and
    ``zero_grad()`` every parameter (about 1 ms of a case), though a served network is in eval mode already and,
    inside ``_backward_stops_at``, no parameter takes a gradient."""

    def __init__(self, net: nn.Module, mask: torch.Tensor | None):
        super().__init__()
        self.net, self.mask = net, mask

    def forward(self, image):
        if self.mask is None:
            return self.net(image)
        return self.net(image, self.mask.expand(image.shape[0], -1, -1, -1))

    def train(self, mode: bool = True):
        if self.net.training != mode:  # served networks never are; a network in training is switched as before
            self.net.train(mode)
        self.training = mode
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass  # nothing to zero: _backward_stops_at turns every parameter's gradient off


def grad_cam(net: nn.Module, image: torch.Tensor, mask: torch.Tensor | None, class_index: int,
             single_logit: bool = False) -> np.ndarray:
    """Grad-CAM of class ``class_index`` at ``net.gradcam_layer``, in [0, 1] at the input's size.

    ``mask`` is the lung mask of mask-taking networks (``net(image, mask)``); None for ``net(image)``.
    ``single_logit``: a binary network with one sigmoid output, whose class 0 is the negated logit.
    """
    target = BinaryClassifierOutputTarget(class_index) if single_logit else ClassifierOutputTarget(class_index)
    with exclusive_use(net), _backward_stops_at(net, net.gradcam_layer):
        cam = GradCAM(model=_Explained(net, mask), target_layers=[net.gradcam_layer])  # eval mode, as it asks
        try:  # not ``with GradCAM``: its exit swallows an IndexError (a class the network does not have)
            heat = cam(input_tensor=image, targets=[target])
        finally:
            cam.activations_and_grads.release()
    return heat[0].astype(np.float32)


@contextmanager
def _backward_stops_at(net: nn.Module, layer: nn.Module):
    """While open, a backward pass through ``net`` computes only what Grad-CAM reads, the gradient at ``layer``'s
    output: no weight gets a gradient, and nothing before ``layer`` is recorded or differentiated (about half a
    case's Grad-CAM time). The forward values, and so the gradient at ``layer``, are the same as with the full
    graph. Registered before Grad-CAM's own hooks, so theirs see the output made here."""
    parameters = [(p, p.requires_grad) for p in net.parameters()]

    def graph_starts_here(_module, _inputs, output):
        if isinstance(output, torch.Tensor):  # clone: a following in-place op (ReLU) may not modify a leaf
            return output.detach().requires_grad_(True).clone()
        return None

    for parameter, _ in parameters:
        parameter.requires_grad_(False)
    hook = layer.register_forward_hook(graph_starts_here)
    try:
        yield
    finally:
        hook.remove()
        for parameter, requires_grad in parameters:
            parameter.requires_grad_(requires_grad)


def mask_attention_maps(net: nn.Module, image: torch.Tensor, mask: torch.Tensor) -> list[np.ndarray]:
    """The map each mask-attention convolution used (Eq. 1's P(M)), in network order."""
    maps: list[np.ndarray] = []
    with exclusive_use(net), _attention_hooks(net, maps), torch.no_grad():
        net(image, mask)
    return maps


def grad_cam_with_attention(net: nn.Module, image: torch.Tensor, mask: torch.Tensor, class_index: int,
                            single_logit: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """``grad_cam`` and ``mask_attention_maps`` from Grad-CAM's one forward pass: the maps that pass used, the
    same values as a separate pass computes, without running the network twice."""
    maps: list[np.ndarray] = []
    with exclusive_use(net), _attention_hooks(net, maps):
        heat = grad_cam(net, image, mask, class_index, single_logit)
    return heat, maps


@contextmanager
def _attention_hooks(net: nn.Module, maps: list[np.ndarray]):
    """While open, every mask-attention convolution of ``net`` appends its attention map to ``maps``."""
    hooks = [
        module.register_forward_hook(lambda _m, _in, out: maps.append(out[1][0, 0].detach().cpu().numpy()))
        for module in net.modules()
        if isinstance(module, MaskAttentionConv) and module.use_mask
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def to_image_shape(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A [0, 1] map resized to ``shape`` (clipped while small: the interpolation stays within its input's range)."""
    return bilinear(np.clip(heat, 0, 1), shape).astype(np.float32)
