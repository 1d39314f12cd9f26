"""Learning and evaluating driving agents (stable-baselines3) from typed experiment configs.

Rooms by job, each importing only the ones above it in this list:

- :mod:`agent.run`: one run's parts: the config schema and files, building envs and the
  algorithm, callbacks, safetensors checkpoints, the run folder and its lock, W&B, admission
  checks, loading a trained agent and exporting it;
- :mod:`agent.policies`: the policy interface and the policies that are not learned (random,
  idle, the hand-written rule, the lookahead planner);
- :mod:`agent.evaluate`: seeded rollouts, episode reports, attention videos, attribution and the
  attention report, and what ``scripts/evaluate.py`` does;
- :mod:`agent.training`: the one trainer on top;
- :mod:`agent.benchmark` and :mod:`agent.scale`: the study and its scale-out on Ray.

Submodules are imported on use; ``import agent`` itself loads nothing heavy.
"""
