"""Which loop trains a run (``train.engine``), and what each one accepts.

- ``sb3``: stable-baselines3's own ``learn`` (every env id; PPO and SAC);
- ``device``: the on-device PPO of :mod:`agent.engine` (batched ids only: it steps the batched
  simulator as tensors and keeps the rollout on the training device).
"""

from __future__ import annotations

from drive_attention import envs
from drive_attention.envs.configuration import ConfigError

ENGINES = ("sb3", "device")


def check_engine(engine: str, env_id: str, algo: str) -> None:
    """Refuse, in one line naming the fix, an engine that cannot train this env or algorithm."""
    if engine != "device":
        return
    if env_id not in envs.BATCHED_IDS:
        raise ConfigError(
            f"train.engine: device trains on the batched simulator only, and {env_id} is not "
            f"batched; use one of {', '.join(envs.BATCHED_IDS)} or train.engine=sb3"
        )
    if algo != "ppo":
        raise ConfigError(
            f"train.engine: device trains PPO only, not {algo}; set algo.name=ppo or "
            "train.engine=sb3"
        )
