"""Test-session settings: the tests run tiny tensors, for which one torch thread is faster than
several (thread start-up dominates) and is immune to a busy machine."""

import dataclasses
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


@pytest.fixture(autouse=True)
def eager_fp32_training(monkeypatch):
    """The tests' tiny networks train eagerly in float32: torch.compile's ~20 s per network and
    bfloat16 (the quick profile's chapter settings, profiles.part_two_settings) would only slow
    them down. A test of those settings asks for them explicitly."""
    from lemmse_lite import profiles

    for name, settings in list(profiles.PART_TWO.items()):
        monkeypatch.setitem(profiles.PART_TWO, name,
                            dataclasses.replace(settings, train_compile=False, train_amp=False))
