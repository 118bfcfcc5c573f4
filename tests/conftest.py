"""Test-session settings: the tests run tiny tensors, for which one torch thread is faster than
several (thread start-up dominates) and is immune to a busy machine."""

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("LEMMSE_TEST_THREADS", "1")))


@pytest.fixture
def one_thread():
    """Run a test with one torch thread and restore the previous setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
