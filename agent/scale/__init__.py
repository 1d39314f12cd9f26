"""Past one machine: the study and hyperparameter sweeps on Ray (the optional ``ray`` extra).

- :mod:`~agent.scale.cluster`: connecting to Ray (a local instance on the loopback address, or
  an existing cluster) and checking that a job's resources exist;
- :mod:`~agent.scale.store`: run directories kept on the driver while runs train on other nodes
  (no shared filesystem), copied at every checkpoint and copied back to resume;
- :mod:`~agent.scale.study`: the benchmark study's jobs as Ray tasks, each refusing to train on
  code other than the driver's (:mod:`agent.run.version`);
- :mod:`~agent.scale.sweep_config` and :mod:`~agent.scale.sweep`: Ray Tune with Optuna and ASHA
  over any config keys.

Nothing here imports Ray at module level: the package imports without the extra, and the
scripts say how to install it when ``--ray`` asks for it.
"""
