import os

# W&B offline (headless rendering is set by ``import envs``).
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
