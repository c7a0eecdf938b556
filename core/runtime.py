"""Where models run: ONNX Runtime (CUDA when present, else CPU) for fast inference, PyTorch for gradients.

``onnxruntime`` (CPU) is the default install; ``onnxruntime-gpu`` replaces it on CUDA machines
(README, GPU install). Providers are chosen at run time from what the installed build offers.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import ModelError


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=1)
def onnx_providers() -> tuple[str, ...]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    preferred = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return tuple(preferred or available)


def compute_description() -> str:
    """One line for the home page: which hardware serves the models."""
    device = torch_device()
    if device == "cuda":
        import torch

        return f"GPU ({torch.cuda.get_device_name(0)})"
    return "CPU"


class OnnxModel:
    """A callable over an ONNX Runtime session: ``model(*arrays) -> first output``."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # the CPU fallback of a GPU build is expected, not an error
        # Idle worker threads sleep instead of spinning: the app shares its cores (Streamlit sessions, several
        # models, other processes), and spinning threads then steal them from the work (CT slice models on a
        # 2-core machine with one core busy: 2-2.3x faster per slice without spinning).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=list(onnx_providers()))
        except Exception as error:  # onnxruntime raises its own untyped Fail/InvalidGraph errors
            raise ModelError(f"ONNX Runtime cannot load {Path(path).name}: {error}") from error
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.provider = self.session.get_providers()[0]

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in zip(self.input_names, arrays)}
        return self.session.run(None, feeds)[0]


_MODULE_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MODULE_LOCKS_GUARD = threading.Lock()


def module_lock(module) -> threading.RLock:
    """The one lock of a served PyTorch module: every use of the module from a thread must hold it.

    The app serves each model from one cached pipeline to every session, and Streamlit runs each
    session in its own thread. A PyTorch module is shared mutable state: forward hooks (Grad-CAM, the
    mask-attention maps) fire on every thread's forward pass and capture another session's activations,
    parameter gradients are accumulated and zeroed in place by concurrent backward passes (which can
    abort the process), and ``eval()``/``train()`` flip a flag every thread reads. Holding this lock
    around each forward/backward, hook registration or mode switch makes each use see the module alone.
    It is re-entrant, so a caller may hold it across several uses (an explanation that calls the
    model). The lock belongs to the module object (weakly keyed), so every wrapper of one module shares
    it. ONNX Runtime sessions need none (``run`` is thread-safe).
    """
    with _MODULE_LOCKS_GUARD:
        lock = _MODULE_LOCKS.get(module)
        if lock is None:
            lock = _MODULE_LOCKS[module] = threading.RLock()
        return lock


@contextmanager
def exclusive_use(module) -> Iterator:
    """``with exclusive_use(net) as net:``: the module, used by this thread alone meanwhile (``module_lock``)."""
    with module_lock(module):
        yield module


class TorchModel:
    """The same callable contract over a PyTorch module (inference only), safe to share between threads.

    ``model(*arrays)`` holds the module's lock for its forward pass; anything else that runs the module
    (gradients, hooks) takes it too: ``with model.exclusive() as net:`` (``core.explain`` does).
    """

    def __init__(self, module, device: str):
        self._module = module
        self.device = device

    @property
    def lock(self) -> threading.RLock:
        return module_lock(self._module)

    def exclusive(self):
        """``with model.exclusive() as net:``: the ``nn.Module``, used by this thread alone meanwhile."""
        return exclusive_use(self._module)

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        import torch

        tensors = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device) for a in arrays]
        with self.exclusive() as module, torch.no_grad():
            return module(*tensors).float().cpu().numpy()


class InferenceSlots:
    """At most ``count`` analyses run at once in this process; the others wait their turn, first come first served.

    Streamlit runs every session on a thread of one process: eight reviewers pressing "analyse" together would
    otherwise run eight models at once on two cores, every one of them slower than running in turn and the
    process's memory at its peak. A waiting caller learns how many analyses are ahead of it (``on_wait``), so
    a page can say "waiting for a free slot" instead of looking stuck.
    """

    def __init__(self, count: int):
        if count < 1:
            raise ValueError("at least one inference slot")
        self.count = count
        self._changed = threading.Condition()
        self._running = 0
        self._queue: list[object] = []

    @contextmanager
    def slot(self, on_wait=None) -> Iterator[None]:
        """Hold one slot for the block. ``on_wait(ahead)`` is called (outside the lock) whenever the number of
        analyses ahead of this one changes while it waits."""
        ticket, reported = object(), None
        with self._changed:
            self._queue.append(ticket)
        try:
            while True:
                with self._changed:
                    if self._running < self.count and self._queue[0] is ticket:
                        self._queue.pop(0)
                        self._running += 1
                        break
                    ahead = self._running + self._queue.index(ticket)
                if on_wait is not None and ahead != reported:
                    on_wait(ahead)
                    reported = ahead
                with self._changed:
                    self._changed.wait(timeout=0.25)
        except BaseException:  # e.g. Streamlit stopping the session's script while it waits: leave the queue
            with self._changed:
                if ticket in self._queue:
                    self._queue.remove(ticket)
                self._changed.notify_all()
            raise
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def status(self) -> tuple[int, int]:
        """(analyses running, analyses waiting) now."""
        with self._changed:
            return self._running, len(self._queue)


@lru_cache(maxsize=1)
def inference_slots() -> InferenceSlots:
    """The process's slots, ``core.settings.inference_slots()`` of them."""
    from .settings import inference_slots as configured

    return InferenceSlots(configured())
