"""The embedded highway-env backend: highway-env's scenarios behind the camera + sensors contract.

- :mod:`envs.highway.env`: :class:`DriveEnv`, the Gymnasium env;
- :mod:`envs.camera` (shared with the batched backend): the top-down camera and its road
  labels, drawn with OpenCV.
"""

from drive_attention.envs.highway.env import DriveEnv

__all__ = ["DriveEnv"]
