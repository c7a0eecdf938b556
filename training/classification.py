"""Classifier training and prediction shared by every recipe.

A recipe turns records into an ``ArraySet`` (compact tensors, e.g. float16 images and uint8 masks,
plus labels and sources), chooses a network, a loss, an optimiser and a ``prepare`` function that
turns a batch of stored arrays into network inputs (augmenting while training). The engine does the
rest; the best epoch is chosen on the validation set's accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from training.engine import Engine, FitConfig, shuffled_batches
from training.metrics import classification_report


@dataclass
class ArraySet:
    inputs: tuple  # tensors with the sample axis first
    labels: torch.Tensor  # class indices
    sources: list

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "ArraySet":
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return ArraySet(tuple(x[index] for x in self.inputs), self.labels[index], [self.sources[i] for i in index.tolist()])


Prepare = Callable[[tuple, torch.device, bool], tuple]  # (stored batch, device, training) -> network inputs


def to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes; one sigmoid output (binary tasks with BCE) becomes [1 - p, p]."""
    logits = logits.float()
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits)
        return torch.cat([1 - positive, positive], 1)
    return torch.softmax(logits, 1)


def predict(net, data: ArraySet, prepare: Prepare, device, batch: int = 64) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(data), batch):
            inputs = prepare(tuple(x[start:start + batch] for x in data.inputs), device, False)
            out.append(to_probabilities(net(*inputs)).cpu().numpy())
    probs = np.concatenate(out)
    if not np.isfinite(probs).all():
        raise FloatingPointError("the network produced NaN/inf outputs: training diverged (lower the learning rate)")
    return probs


def fit_classifier(model, train: ArraySet, val: ArraySet, *, loss_fn, optimizer, prepare: Prepare,
                   config: FitConfig, batch: int, seed: int, scheduler=None):
    """Train with ``loss_fn(logits, labels)``; returns the best-validation-accuracy network (eval mode) and that accuracy."""

    def loss_step(net, index):
        inputs = prepare(tuple(x[index] for x in train.inputs), engine.device, True)
        return loss_fn(net(*inputs), train.labels[index].to(engine.device))

    def evaluate(net):
        probs = predict(net, val, prepare, engine.device)
        return {"accuracy": float((probs.argmax(1) == val.labels.numpy()).mean())}

    engine = Engine(model, optimizer, loss_step, evaluate, config, scheduler)
    engine.fit(shuffled_batches(len(train), batch, seed))
    model.load_state_dict(torch.load(engine.best_path, map_location=engine.device, weights_only=True))
    return model.eval(), float(engine.best_score)


def evaluate_classifier(net, data: ArraySet, prepare: Prepare, classes, device) -> tuple[dict, np.ndarray]:
    probs = predict(net, data, prepare, device)
    return classification_report(data.labels.numpy(), probs, list(classes), data.sources), probs



def binary_gradcam_panels(net, data: ArraySet, prepare: Prepare, classes, per_class: int = 4) -> list:
    """Grad-CAM of the single (positive-class) output on the first test images of each class.

    For one-input binary networks (HRNet and baselines, COVID-CXNet); panels for
    ``training.reports.plot_heatmap_grid``, showing the first input channel.
    """
    from core.explain import grad_cam

    device = next(net.parameters()).device
    panels = []
    for label, name in enumerate(classes):
        for index in np.flatnonzero(data.labels.numpy() == label)[:per_class]:
            (image,) = prepare(tuple(x[index:index + 1] for x in data.inputs), device, False)
            with torch.no_grad():
                positive = float(to_probabilities(net(image))[0, 1])
            heat = grad_cam(net, image, None, 1, single_logit=True)
            caption = f"true {name}, p({classes[1]}) {positive:.2f}\n{data.sources[index]}"
            panels.append((image[0, 0].cpu().numpy(), heat, caption))
    return panels
