"""Model tests run small convolutions: one thread and a fixed seed for each."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _small_cpu():
    # One thread: on a busy two-core machine, two threads make these small convolutions ~50x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
