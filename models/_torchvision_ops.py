"""Make ``import torchvision`` work when its compiled operators cannot load.

The PyPI wheel ``torchvision==0.28.0`` is a CUDA build. On a CPU-only torch its ``_C`` extension
fails to load, and ``torchvision/_meta_registrations.py`` then dies at import time with
``operator torchvision::nms does not exist`` (upstream pytorch/vision#9085). Every library built
on torchvision (timm, pytorch-grad-cam, ...) inherits the crash.

``ensure_torchvision_ops()`` must run before torchvision is first imported. It tries to load the
real extension; only if that fails does it define ``torchvision::nms`` and ``torchvision::qnms``
(the two operators torchvision registers unconditionally) with pure-PyTorch CPU kernels. Nothing in
this project calls NMS; the fallback exists so the import succeeds and, if some caller does use
it, it still returns the right answer.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import torch

_state: dict[str, str] = {}


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # torchvision absent: nothing to fix, and importing it will fail on its own
    folder = list(spec.submodule_search_locations)[0]
    candidates = glob.glob(os.path.join(folder, "_C*.so")) + glob.glob(os.path.join(folder, "_C*.pyd"))
    if not candidates:
        return False
    try:
        torch.ops.load_library(candidates[0])
        return True
    except (OSError, RuntimeError):
        return False


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, same contract as ``torchvision.ops.nms``."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort(descending=True)
    keep = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    for rank, i in enumerate(order.tolist()):
        if suppressed[rank]:
            continue
        keep.append(i)
        rest = order[rank + 1 :]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rank + 1 :] |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def _register_fallbacks() -> None:
    library = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 - kept alive below
    for name in ("nms", "qnms"):
        library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.impl(name, lambda d, s, t: nms_reference(d.float(), s.float(), t), "CompositeExplicitAutograd")
    _state["library"] = library  # a Library object unregisters its ops when garbage-collected


def ensure_torchvision_ops() -> str:
    """Return ``"native"`` when torchvision's own operators load, ``"fallback"`` otherwise."""
    if "mode" not in _state:
        if _extension_loads():
            _state["mode"] = "native"
        else:
            _register_fallbacks()
            _state["mode"] = "fallback"
    return _state["mode"]
