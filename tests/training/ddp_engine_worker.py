"""A least-squares fit through ``training.engine.Engine``, the same under ``python`` and under torchrun.

No batch norm, no augmentation, no dropout: the only difference data parallelism may make is the order of
floating-point sums, so a 2-process run must end with the 1-process run's weights (``tests/training/test_ddp.py``).
Usage: ``[torchrun --standalone --nproc_per_node 2] tests/training/ddp_engine_worker.py OUT_DIR``.
"""

import os
import sys

import torch

if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    from training.engine import Engine, FitConfig, seed_everything, shuffled_batches

    seed_everything(0)
    inputs = torch.randn(64, 5)
    targets = inputs @ torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0]) + 0.1 * torch.randn(64)
    model = torch.nn.Linear(5, 1)

    def loss_step(net, batch):
        return torch.nn.functional.mse_loss(net(inputs[batch])[:, 0], targets[batch])

    def evaluate(net):
        return {"mse": float(torch.nn.functional.mse_loss(net(inputs)[:, 0], targets))}

    engine = Engine(model, torch.optim.SGD(model.parameters(), lr=0.05), loss_step, evaluate,
                    FitConfig(epochs=4, out_dir=sys.argv[1], select_metric="mse", higher_is_better=False, device="cpu"))
    engine.fit(shuffled_batches(len(inputs), batch=8, seed=0))
