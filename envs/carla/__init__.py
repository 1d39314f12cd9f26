"""CARLA through its official client: a pure core behind a thin client shell.

- :mod:`envs.carla.config`: the options (:class:`CarlaEnvConfig`), importable without carla;
- :mod:`envs.carla.core`: pure logic (sensors, rays, route, labels), no carla import;
- :mod:`envs.carla.runtime`: server probing, reconnects, the actor registry, settings restore;
- :mod:`envs.carla.env`: :class:`CarlaDriveEnv` (``DriveAttention/Carla-v0``), which imports carla.

Importing this package does not import the carla client.
"""
