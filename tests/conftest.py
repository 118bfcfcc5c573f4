"""Test-session settings: the tests run tiny tensors, for which one torch thread is faster than
several (thread start-up dominates) and is immune to a busy machine."""

import os

import torch

torch.set_num_threads(int(os.environ.get("LEMMSE_TEST_THREADS", "1")))
