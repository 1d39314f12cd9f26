import os

import pytest
import torch

# W&B offline (headless rendering is set by ``import envs``).
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Ray (tests/agent/scale/test_ray.py) on the loopback address only: read when ray is imported, it
# stops Ray resolving "this node" to the machine's outward address
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture
def one_thread():
    """One torch thread for the test, restored after: small tensors run fastest on one thread, a
    busy machine slows them less, and runs stay identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
