"""The policy interface every evaluation drives (:class:`Policy`), and the policies that need no
planner: random, idle and trained (an SB3 model, with the attention it exposes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from gymnasium import spaces

from drive_attention.models import attention_from_policy, policy_extractor

POLICIES: tuple[str, ...] = ("trained", "random", "idle", "rule", "lookahead", "teacher")
"""rule: :mod:`agent.policies.rule`; lookahead: :mod:`agent.policies.lookahead` (plans in copies
of the simulator: a bound, not a driver); teacher: :mod:`agent.policies.teacher` (the same
planner on the batched simulator, every environment at once: privileged, not deployable)."""


@dataclass
class AttentionView:
    """What one video frame shows of the policy's attention (last layer, heads averaged)."""

    camera: np.ndarray | None  # (gh, gw) query weights over camera patches
    sensors: np.ndarray | None  # (S,) query weights over sensor tokens
    sensor_labels: tuple[str, ...]
    camera_share: float | None  # fraction of the query's attention on the camera


class Policy(Protocol):
    """An evaluated policy: one action per observation, optionally its attention."""

    name: str

    def reset(self, seed: int) -> None: ...

    def act(self, obs: dict[str, np.ndarray]) -> Any: ...

    def attention(self, obs: dict[str, np.ndarray]) -> AttentionView | None: ...


class RandomPolicy:
    """Uniformly random actions from the action space, seeded per episode."""

    name = "random"

    def __init__(self, action_space: spaces.Space) -> None:
        self.action_space = action_space

    def reset(self, seed: int) -> None:
        self.action_space.seed(seed)

    def act(self, obs: dict[str, np.ndarray]) -> Any:
        return self.action_space.sample()

    def attention(self, obs: dict[str, np.ndarray]) -> AttentionView | None:
        return None


class IdlePolicy:
    """The env's idle action every step (keep lane and speed; no steering, no throttle)."""

    name = "idle"

    def __init__(self, idle_action: Any) -> None:
        self.idle_action = idle_action

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> Any:
        return self.idle_action

    def attention(self, obs: dict[str, np.ndarray]) -> AttentionView | None:
        return None


class TrainedPolicy:
    """An SB3 algorithm's deterministic action, with the observation normalisation it learnt."""

    name = "trained"

    def __init__(self, model: Any, normalize_obs: Callable[[Any], Any] | None = None) -> None:
        self.model = model
        self.normalize_obs = normalize_obs

        self.has_attention = bool(getattr(policy_extractor(model.policy), "has_attention", False))

    def prepare(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The observation as the policy sees it (normalised when training normalised it)."""
        return self.normalize_obs(obs) if self.normalize_obs is not None else obs

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> Any:
        action, _ = self.model.predict(self.prepare(obs), deterministic=True)
        return action

    def attention(self, obs: dict[str, np.ndarray]) -> AttentionView | None:
        if not self.has_attention:
            return None

        maps = attention_from_policy(self.model.policy, self.prepare(obs)).to("cpu")
        has_camera = maps.grid[0] * maps.grid[1] > 0
        has_sensors = len(maps.sensor_token_names) > 0
        camera = maps.camera_map()[0].numpy() if has_camera else None  # (gh, gw)
        sensors = maps.sensor_map()[0].numpy() if has_sensors else None  # (S,)
        return AttentionView(
            camera=camera,
            sensors=sensors,
            sensor_labels=tuple(maps.sensor_token_names),
            camera_share=float(maps.camera_mass()[0]),  # the query's row sums to 1
        )
