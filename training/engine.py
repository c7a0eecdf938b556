"""The training loop every recipe shares: fit, validate, keep the best, checkpoint, resume.

A recipe supplies the model, the optimiser and scheduler, a ``loss_step(model, batch) -> loss`` and
an ``evaluate(model) -> dict`` on the validation split. The engine owns everything else:
device and AMP, seeds, per-epoch checkpoints (``last.pt``, resumable after an interruption),
the best weights by the chosen validation metric (``best.pt``), a CSV log (``log.csv``) and, when
asked, a TensorBoard log (``tensorboard/``).

Multi-GPU: launched under ``torchrun --nproc_per_node N``, the engine joins the process group, wraps
the model in DistributedDataParallel and gives each process its share of every batch, so the global
batch stays the recipe's batch. Every process validates (cheap next to training); only rank 0 writes (the
log's ``train_loss`` is averaged over all processes). On CPU the group uses gloo:
``torchrun --standalone --nproc_per_node 2 -m training ct-lungs --profile smoke ...`` runs, and
``tests/training/test_ddp.py`` checks it against the one-process run.
"""

from __future__ import annotations

import csv
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.progress import progress_bar


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless launched by torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    return world()[0] == 0


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(name)


def _join_process_group(device: torch.device) -> None:
    import torch.distributed as dist

    if world()[1] > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def shuffled_batches(count: int, batch: int, seed: int):
    """``epoch -> index batches``, reshuffled per epoch from (seed, epoch) so a resumed run sees the same order."""

    def batches(epoch):
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(count, generator=generator)
        return [order[i:i + batch] for i in range(0, count, batch)]

    return batches


@dataclass(frozen=True)
class RunSettings:
    """Where and how every recipe trains; each recipe's ``Profile`` extends it with the paper's settings."""

    max_steps_per_epoch: int | None = None  # cap for tests and smoke runs
    device: str = "auto"
    amp: bool = False
    tensorboard: bool = False


@dataclass
class FitConfig:
    epochs: int
    out_dir: Path
    select_metric: str  # validation metric that chooses best.pt
    higher_is_better: bool = True
    device: str = "auto"
    amp: bool = False  # mixed precision, CUDA only
    max_steps_per_epoch: int | None = None  # quick profiles and tests
    tensorboard: bool = False

    @classmethod
    def from_settings(cls, settings, epochs: int, out_dir: Path, select_metric: str) -> FitConfig:
        """Take device, AMP, step limit and TensorBoard from a ``RunSettings`` profile or a ``SegmenterConfig``."""
        return cls(epochs, out_dir, select_metric, device=settings.device, amp=settings.amp,
                   max_steps_per_epoch=settings.max_steps_per_epoch, tensorboard=settings.tensorboard)


class Engine:
    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_step: Callable[[torch.nn.Module, object], torch.Tensor],
        evaluate: Callable[[torch.nn.Module], dict],
        config: FitConfig,
        scheduler=None,
    ):
        self.config = config
        self.device = pick_device(config.device)
        self.rank, self.world_size = world()
        self.model = model.to(self.device)
        self.trained = self.model  # what the loss sees: the DDP wrapper when distributed
        if self.world_size > 1:
            _join_process_group(self.device)
            self.trained = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loss_step = loss_step
        self.evaluate = evaluate
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.out_dir = Path(config.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.start_epoch = 0
        self.best_score: float | None = None
        self._resume()
        self.tensorboard = self._open_tensorboard() if config.tensorboard and self.rank == 0 else None

    def _open_tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise RuntimeError("TensorBoard logging needs the tensorboard package: pip install tensorboard") from error
        return SummaryWriter(self.out_dir / "tensorboard", purge_step=self.start_epoch + 1)

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    def _resume(self) -> None:
        if not self.last_path.exists():
            return
        state = torch.load(self.last_path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch = state["epoch"] + 1
        self.best_score = state["best_score"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed from {self.last_path} at epoch {self.start_epoch}")

    def _is_better(self, score: float) -> bool:
        if self.best_score is None:
            return True
        return score > self.best_score if self.config.higher_is_better else score < self.best_score

    def _train_epoch(self, batches: Iterable, epoch: int) -> tuple[float, int]:
        """(mean loss, images seen by this process)."""
        self.model.train()
        total, count, images = 0.0, 0, 0
        limit = self.config.max_steps_per_epoch
        progress = progress_bar(batches, desc=f"epoch {epoch + 1}/{self.config.epochs}", leave=False, total=limit,
                        disable=self.rank != 0)
        for step, batch in enumerate(progress):
            if limit is not None and step >= limit:
                break
            if len(batch) < self.world_size:
                continue  # a ragged last batch would leave a process without samples
            batch = batch[self.rank::self.world_size]  # this process's share of the global batch
            with torch.autocast(self.device.type, enabled=self.use_amp):
                loss = self.loss_step(self.trained, batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += loss.item()
            count += 1
            images += len(batch)
            progress.set_postfix(loss=f"{total / count:.4f}", refresh=False)  # redraws follow the bar's interval
        if self.world_size > 1:  # the log shows the loss over the global batches, as one process would see it
            sums = torch.tensor([total, float(count)], dtype=torch.float64)
            torch.distributed.all_reduce(sums)
            total, count = float(sums[0]), int(sums[1])
        return total / max(count, 1), images

    def fit(self, train_batches: Callable[[int], Iterable]) -> dict:
        """``train_batches(epoch)`` returns that epoch's batches (so shuffling is seeded per epoch)."""
        log_path = self.out_dir / "log.csv"
        for epoch in range(self.start_epoch, self.config.epochs):
            started = time.time()
            train_loss, images = self._train_epoch(train_batches(epoch), epoch)
            train_seconds = time.time() - started
            if self.scheduler is not None:
                self.scheduler.step()
            self.model.eval()
            with torch.no_grad():
                metrics = self.evaluate(self.model)
            score = metrics[self.config.select_metric]
            improved = self._is_better(score)
            if improved:
                self.best_score = score
            row = {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "seconds": round(time.time() - started, 1),
                   "train_images_per_s": round(images * self.world_size / max(train_seconds, 1e-9), 2)}
            row.update({f"val_{k}": round(float(v), 5) for k, v in metrics.items()})
            if self.rank == 0:
                if improved:
                    torch.save(self.model.state_dict(), self.best_path)
                self._write_logs(log_path, row, improved)
                self._save_last(epoch)
            self._barrier()
        if self.tensorboard is not None:
            self.tensorboard.close()
        return {"best_score": self.best_score, "best_path": self.best_path}

    def _write_logs(self, log_path: Path, row: dict, improved: bool) -> None:
        self._append_log(log_path, row)
        print(" ".join(f"{k}={v}" for k, v in row.items()) + (" *best*" if improved else ""), flush=True)
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "epoch":
                    self.tensorboard.add_scalar(key.replace("_", "/", 1), value, row["epoch"])
            self.tensorboard.add_scalar("lr", self.optimizer.param_groups[0]["lr"], row["epoch"])
            self.tensorboard.flush()

    def _barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def _save_last(self, epoch: int) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "epoch": epoch,
            "best_score": self.best_score,
            "torch_rng": torch.get_rng_state(),
        }
        tmp = self.last_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.last_path)  # atomic: an interrupted save never corrupts the checkpoint

    @staticmethod
    def _append_log(path: Path, row: dict) -> None:
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
