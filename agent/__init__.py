"""Learning and evaluating driving agents (stable-baselines3) from typed experiment configs.

Rooms by job, each importing only the rooms listed before it (tests/agent/test_layout.py):

- :mod:`agent.policies`: the policy interface and the policies that are not learned (random,
  idle, the hand-written rule, the lookahead planner), and the trained policy's wrapper;
- :mod:`agent.run`: one run's parts: the config schema and files, building envs and the
  algorithm, callbacks, safetensors checkpoints, the run folder and its lock, W&B, admission
  checks, loading a trained agent and exporting it;
- :mod:`agent.evaluate`: seeded rollouts, episode reports, attention videos, attribution and the
  attention report, and what ``scripts/evaluate.py`` does;
- :mod:`agent.engine`: the on-device PPO loop (``train.engine: device``) over the SB3 model
  that :mod:`agent.run` builds, and the engines' throughput benchmark;
- :mod:`agent.training`: the one trainer on top (SB3's ``learn`` or the device loop);
- :mod:`agent.benchmark`, then :mod:`agent.scale`: the study, and its scale-out on Ray.

Submodules are imported on use; ``import agent`` itself loads nothing heavy.
"""
