"""The batched backend: B driving environments stepped at once with torch, on CPU or GPU.

- :mod:`envs.batched.env`: the core (:class:`BatchedDrive`) and its SB3 VecEnv and Gymnasium views;
- :mod:`envs.batched.sim`: traffic (highway-env's IDM, MOBIL, controllers, bicycle model);
- :mod:`envs.batched.road`: the lane table read from highway-env's road network;
- :mod:`envs.batched.render`: camera raster, road labels and lidar in torch;
- :mod:`envs.batched.scenarios`: each scenario's road, initial traffic and route sensors.
"""

from envs.batched.env import BatchedDrive, BatchedDriveEnv, BatchedDriveVecEnv, make_vec_env

__all__ = ["BatchedDrive", "BatchedDriveEnv", "BatchedDriveVecEnv", "make_vec_env"]
