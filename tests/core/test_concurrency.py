"""Served models under concurrent use: Streamlit runs each session in its own thread, and the pages share
one cached pipeline per model (``st.cache_resource``). Every analysis must equal the one computed alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from core.ct_phantoms import make_ct_phantom
from core.phantoms import make_phantom
from core.pipelines.ct_slice import CtSlicePipeline
from core.pipelines.cxr import CxrPipeline
from core.registry import Registry
from core.runtime import TorchModel, module_lock

THREADS = 4
CASES = [("normal", 1), ("covid", 2), ("tb", 3), ("viral", 4)]
CXR_OUTPUTS = ("probabilities", "lung_mask", "lung_probability", "gradcam", "attention_map")
CT_CASES = [("covid", 1), ("non-covid", 2)]
CT_OUTPUTS = ("lung_mask", "infection_probability", "infection_labels", "probabilities", "branch_probabilities",
              "heatmap", "heatmap_box", "infected_boxes")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread per analysis: the test's threads are the parallelism (and 2 cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-6)
    if isinstance(a, float):
        return isinstance(b, float) and abs(a - b) <= 1e-6
    return a == b  # None, boxes (tuples of slices)


def concurrent_mismatches(analyse, studies: list, outputs: tuple[str, ...], threads: int = THREADS) -> tuple[int, list]:
    """Every thread analyses every study once, each starting at a different one, all at the same time.

    Returns (number of analyses, [(study index, names of the outputs that differ from the sequential
    analysis, or the exception raised)]).
    """
    def outputs_of(result) -> dict:
        return {name: getattr(result, name) for name in outputs}

    expected = [outputs_of(analyse(study)) for study in studies]
    start = threading.Barrier(threads)

    def analysed(i: int) -> list[str]:
        try:
            got = outputs_of(analyse(studies[i]))
        except Exception as error:  # noqa: BLE001  (counted with the wrong maps: one report of everything)
            return [f"raised {type(error).__name__}: {error}"]
        return [name for name in outputs if not _same(got[name], expected[i][name])]

    def reviewer(offset: int) -> list[tuple[int, list[str]]]:
        start.wait()  # every thread starts at once, to overlap as much as possible
        return [(i, analysed(i)) for i in ((offset + k) % len(studies) for k in range(len(studies)))]

    with ThreadPoolExecutor(threads) as pool:
        runs = [outcome for outcomes in pool.map(reviewer, range(threads)) for outcome in outcomes]
    return len(runs), [(i, wrong) for i, wrong in runs if wrong]


def _report(n_runs: int, mismatches: list, outputs: tuple[str, ...]) -> str:
    counts = {name: sum(name in wrong for _, wrong in mismatches) for name in outputs}
    counts["raised"] = sum(wrong[0].startswith("raised") for _, wrong in mismatches)
    return (f"{len(mismatches)} of {n_runs} concurrent analyses differ from the sequential ones "
            f"(per output: {counts}); first: {mismatches[:3]}")


# tiny-cls: MANet's image + mask network (mask-attention maps and Grad-CAM); tiny-cxnet-three: COVID-CXNet's
# cropped input. With the torch backend the plain inference runs through the very modules the explanations hook.
@pytest.mark.parametrize(("classifier", "backend"), [
    ("tiny-cls", "onnx"), ("tiny-cls", "torch"), ("tiny-cxnet-three", "torch"),
])
def test_concurrent_cxr_analyses_equal_the_sequential_ones(tiny_registry_dir, classifier, backend):
    pipeline = CxrPipeline(Registry.open(tiny_registry_dir), backend=backend, classifier=classifier)
    studies = [make_phantom(label, seed=seed, size=160).to_study() for label, seed in CASES]
    n_runs, mismatches = concurrent_mismatches(pipeline.analyse, studies, CXR_OUTPUTS)
    assert n_runs == THREADS * len(studies)
    assert not mismatches, _report(n_runs, mismatches, CXR_OUTPUTS)


def test_concurrent_ct_slice_analyses_equal_the_sequential_ones(tiny_ct_registry_dir):
    """The CT slice pipeline: ONNX segmenters and the PyTorch fusion classifier (Eq. 1 reads its features)."""
    pipeline = CtSlicePipeline(Registry.open(tiny_ct_registry_dir))
    studies = [make_ct_phantom(label, seed=seed, size=96).to_study() for label, seed in CT_CASES]
    n_runs, mismatches = concurrent_mismatches(pipeline.analyse, studies, CT_OUTPUTS, threads=3)
    assert n_runs == 3 * len(studies)
    assert not mismatches, _report(n_runs, mismatches, CT_OUTPUTS)


def test_one_lock_per_module_held_by_every_use():
    """Two wrappers of one module share its lock; another module has its own; the lock is re-entrant."""
    net, other = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    first, second = TorchModel(net, "cpu"), TorchModel(net, "cpu")
    assert module_lock(net) is module_lock(net) is first.lock is second.lock
    assert module_lock(other) is not module_lock(net)
    with first.exclusive() as module:  # a caller may hold it across several uses (explanations) ...
        assert module is net
        assert first(np.ones((1, 2), np.float32)).shape == (1, 1)  # ... and call the model inside
        held_elsewhere = []
        thread = threading.Thread(target=lambda: held_elsewhere.append(module_lock(net).acquire(timeout=0.05)))
        thread.start()
        thread.join()
        assert held_elsewhere == [False]  # no other thread can use the module meanwhile
