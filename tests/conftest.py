import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

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


@pytest.fixture(scope="session")
def run_script() -> Callable[..., subprocess.CompletedProcess]:
    """Run ``scripts/<script> *args`` as a user would: a fresh Python process in the repository,
    W&B offline; returns the finished process (stdout and stderr as text)."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}

    def run(script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / script), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
