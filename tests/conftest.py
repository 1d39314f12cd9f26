import os

# Headless rendering for highway-env's pygame ("dummy" would draw black frames), W&B offline.
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
