import subprocess
import sys

import torch

from models._torchvision_ops import ensure_torchvision_ops, nms_reference


def test_torchvision_and_dependants_import():
    # A fresh interpreter: the shim must run before the first torchvision import anywhere.
    code = "import models, torchvision, pytorch_grad_cam; print(models.ensure_torchvision_ops())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() in {"native", "fallback"}


def test_registered_nms_matches_reference():
    assert ensure_torchvision_ops() in {"native", "fallback"}
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    keep = torch.ops.torchvision.nms(boxes, scores, 0.5)
    assert keep.tolist() == [3, 2]  # box 3 wins; 0 and 1 overlap it by > 0.5 IoU; box 2 is apart
    assert nms_reference(boxes, scores, 0.5).tolist() == keep.tolist()
    assert nms_reference(boxes, scores, 0.99).tolist() == [3, 0, 1, 2]
    assert nms_reference(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
