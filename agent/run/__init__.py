"""One run's parts: config schema and files, env and algorithm building, callbacks, checkpoints,
the run folder, W&B, admission checks, loading a trained agent and exporting it."""
