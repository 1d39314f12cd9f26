"""The batched backend: B driving environments stepped at once with torch, on CPU or GPU.

- :mod:`envs.batched.core`: the core (:class:`BatchedDrive`), tensors in and out;
- :mod:`envs.batched.env`: its Gymnasium vector env (``gymnasium.make_vec``), single Gymnasium
  env and SB3 VecEnv views;
- :mod:`envs.batched.contract`: torch twins of :mod:`envs.contract`;
- :mod:`envs.batched.sim`: traffic (highway-env's IDM, MOBIL, controllers, bicycle model);
- :mod:`envs.batched.road`: the lane table read from highway-env's road network;
- :mod:`envs.batched.render`: camera raster, road labels and lidar in torch;
- :mod:`envs.batched.scenarios`: each scenario's settings, road and initial traffic;
- :mod:`envs.batched.streams`: random draws (the batch's generator, each episode's own stream);
- :mod:`envs.batched.planning`: copies of environments a planner steps (the teacher's).
"""

from drive_attention.envs.batched.core import BatchedDrive
from drive_attention.envs.batched.env import (
    BatchedDriveEnv,
    BatchedDriveVecEnv,
    BatchedDriveVectorEnv,
    make_vec_env,
)

__all__ = [
    "BatchedDrive",
    "BatchedDriveEnv",
    "BatchedDriveVecEnv",
    "BatchedDriveVectorEnv",
    "make_vec_env",
]
