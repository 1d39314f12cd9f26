"""One run's parts: config schema and files, the upper bounds on its sizes and its memory
estimate, env and algorithm building, callbacks, checkpoints, the run folder, W&B, admission
checks, loading a trained agent and exporting it, and the code version a run was trained with."""
