import os

# W&B offline (headless rendering is set by ``import envs``).
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Ray (tests/test_ray.py) on the loopback address only: read when ray is imported, it stops Ray
# resolving "this node" to the machine's outward address
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
