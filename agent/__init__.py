"""Learning and evaluating driving agents (stable-baselines3) from typed experiment configs.

- :mod:`agent.config`: the schema of ``configs/*.yaml`` and ``key.sub=value`` overrides;
- :mod:`agent.build`: environments (subprocess VecEnv), the SB3 algorithm, the device;
- :mod:`agent.callbacks`: progress bar, episode metrics, periodic work, graceful stop;
- :mod:`agent.checkpoint`: safetensors checkpoints (no pickle), atomic writes;
- :mod:`agent.evaluation`: seeded deterministic rollouts of trained / random / idle policies;
- :mod:`agent.video`: attention videos (heat-map over the camera, sensor-attention bars);
- :mod:`agent.wandb_logger`: one metrics sink (local JSON lines + W&B when on);
- :mod:`agent.rundir`, :mod:`agent.training`, :mod:`agent.loading`, :mod:`agent.evaluate_run`:
  the run directory, a training run, loading a trained agent, what ``scripts/evaluate.py`` does.

Submodules are imported on use; ``import agent`` itself loads nothing heavy.
"""
