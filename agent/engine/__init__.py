"""The training loops behind ``train.engine`` (:mod:`agent.run.engines`): SB3's own ``learn``,
or the on-device PPO (:class:`agent.engine.ppo.DevicePPO`) over the same SB3 model."""

from __future__ import annotations

from typing import Any

from drive_attention.agent.engine.ppo import DevicePPO, fuse_adam
from drive_attention.agent.engine.rollout import Rollout, gae
from drive_attention.agent.engine.tensors import TensorEnv
from drive_attention.agent.run.config import ExperimentConfig

__all__ = ["DevicePPO", "Rollout", "TensorEnv", "fuse_adam", "gae", "learner"]


def learner(model: Any, config: ExperimentConfig) -> Any:
    """What trains ``model`` (``learn(total_timesteps, callback, ...)``): the SB3 algorithm
    itself for ``train.engine: sb3``, the device loop over it for ``device``."""
    if config.train.engine == "device":
        return DevicePPO(model)
    return model
