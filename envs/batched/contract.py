"""Torch twins of :mod:`envs.contract` for B environments at once.

Each function here computes what its numpy namesake computes, elementwise over a (B,) batch;
``tests/envs/batched/test_batched.py`` holds them to each other (the parity test).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drive_attention.envs.contract import (
    DISCRETE_ACTIONS,
    EPISODE_KEYS,
    IDLE,
    REWARD_TERMS,
    ActionError,
    describe_actions,
)


def check_actions(action: torch.Tensor, discrete: bool, num_envs: int, env: str) -> torch.Tensor:
    """(B,) long meta-actions or (B, 2) ``[steer, accel]`` clipped to [-1, 1]: the batched
    :func:`envs.contract.check_action`. A bad row raises :class:`ActionError` naming the rows
    before any environment is stepped, so every environment's state is kept and the next call
    with valid actions goes on (no row is silently replaced)."""
    kind = "discrete" if discrete else "continuous"
    shape = (num_envs,) if discrete else (num_envs, 2)
    if (
        action.is_complex()
        or action.dtype == torch.bool
        or action.numel() != num_envs * (1 if discrete else 2)
    ):
        raise ActionError(
            f"{env}: actions of shape {tuple(action.shape)} for {num_envs} envs; give {shape}, "
            f"each {describe_actions(kind)}"
        )
    action = action.reshape(shape)
    values = action.double()
    bad = ~torch.isfinite(values)
    if discrete:
        bad |= (values % 1 != 0) | (values < 0) | (values >= len(DISCRETE_ACTIONS))
    rows = bad.reshape(num_envs, -1).any(1).nonzero()[:, 0].tolist()
    if rows:
        shown = ", ".join(f"{i}: {action[i].tolist()}" for i in rows[:5])
        raise ActionError(
            f"{env}: the actions of env(s) {shown}{' ...' if len(rows) > 5 else ''} are not "
            f"{describe_actions(kind)}; no env was stepped, all can go on with valid actions"
        )
    return action.long() if discrete else action.float().clamp(-1.0, 1.0)


def action_change(action: torch.Tensor, previous: torch.Tensor, discrete: bool) -> torch.Tensor:
    """(B,) :func:`envs.contract.action_change` of (B, A) action vectors (one-hot if discrete)."""
    if discrete:
        differs = (action != previous).any(1)
        return (differs & (action.argmax(1) != IDLE)).float()
    return ((action - previous).abs().mean(1) / 2.0).clamp(max=1.0)


def reward_terms(
    *,
    forward_speed: torch.Tensor,  # (B,) [m/s]
    speed_range: tuple[float, float],  # [m/s]
    collision: torch.Tensor,  # (B,) bool
    off_road: torch.Tensor,  # (B,) bool
    lateral: torch.Tensor,  # (B,) [m]
    lane_width: torch.Tensor,  # (B,) [m]
    change: torch.Tensor,  # (B,) in [0, 1]
    goal: torch.Tensor,  # (B,) bool
    red_light: torch.Tensor | None = None,  # (B,) bool, a stop line crossed on red
) -> torch.Tensor:
    """(B, len(REWARD_TERMS)) unweighted terms, columns in :data:`REWARD_TERMS` order."""
    lo, hi = speed_range
    terms = {
        "alive": (~(collision | off_road)).float(),
        "progress": ((forward_speed - lo) / (hi - lo)).clamp(0.0, 1.0),
        "collision": -collision.float(),
        "off_road": -off_road.float(),
        "lane_keeping": -(lateral.abs() / (lane_width / 2.0).clamp(min=1e-3)).clamp(max=1.0),
        "comfort": -change,
        "goal": goal.float(),
        "red_light": -red_light.float() if red_light is not None else torch.zeros_like(change),
    }
    return torch.stack([terms[name] for name in REWARD_TERMS], 1)


@dataclass
class EpisodeStats:
    """(B,) :class:`envs.contract.EpisodeStats`: the same definitions, one row per environment."""

    dt: float  # [s] per policy step
    position: torch.Tensor  # (B, 2) [m] at the last step
    steps: torch.Tensor  # (B,) long
    distance: torch.Tensor  # (B,) [m]
    collision: torch.Tensor  # (B,) bool
    off_road: torch.Tensor  # (B,) bool

    @classmethod
    def zeros(cls, dt: float, b: int, device: torch.device) -> EpisodeStats:
        return cls(
            dt=dt,
            position=torch.zeros(b, 2, device=device),
            steps=torch.zeros(b, dtype=torch.long, device=device),
            distance=torch.zeros(b, device=device),
            collision=torch.zeros(b, dtype=torch.bool, device=device),
            off_road=torch.zeros(b, dtype=torch.bool, device=device),
        )

    def select(self, rows: torch.Tensor) -> EpisodeStats:
        """The statistics of the environments ``rows`` ((K,) indices or a (B,) mask), copied."""
        return EpisodeStats(
            dt=self.dt,
            position=self.position[rows],
            steps=self.steps[rows],
            distance=self.distance[rows],
            collision=self.collision[rows],
            off_road=self.off_road[rows],
        )

    def start(self, position: torch.Tensor, which: torch.Tensor | None = None) -> None:
        """New episodes with the ego at ``position`` (K, 2) [m], in the rows ``which`` (all if
        None; a (K,) index tensor otherwise)."""
        rows = slice(None) if which is None else which
        self.position[rows] = position
        self.steps[rows] = 0
        self.distance[rows] = 0.0
        self.collision[rows] = False
        self.off_road[rows] = False

    def record(
        self, position: torch.Tensor, collision: torch.Tensor, off_road: torch.Tensor
    ) -> None:
        """One policy step of every environment, ending at ``position`` (B, 2) [m]."""
        self.distance += torch.linalg.vector_norm(position - self.position, dim=1)
        self.position = position.clone()
        self.steps += 1
        self.collision |= collision
        self.off_road |= off_road

    @property
    def mean_speed(self) -> torch.Tensor:
        duration = self.steps.float() * self.dt  # [s]
        return torch.where(duration > 0, self.distance / duration.clamp(min=1e-9), 0.0)

    def summary(self, success: torch.Tensor) -> dict[str, torch.Tensor]:
        """EPISODE_KEYS -> (B,), meaningful in the rows whose episode just ended."""
        out = {
            "collision": self.collision.clone(),
            "off_road": self.off_road.clone(),
            "success": success,
            "distance": self.distance.clone(),
            "mean_speed": self.mean_speed,
        }
        assert tuple(out) == EPISODE_KEYS
        return out
