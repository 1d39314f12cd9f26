"""Copies of the batched core's environments that a planner steps: its privileged view.

A :class:`PlanningBatch` holds K copies (rows) of some of the core's environments as they stand
(traffic, lights and pedestrians, routes, the episode's statistics and clock, and each episode's
random stream, so arrivals and pedestrians appear in a copy as they will in the original:
:mod:`envs.batched.streams`) and steps them all at once with the core's own step
(:meth:`envs.batched.core.BatchedDrive.advance` and ``judge``), less what a plan's outcome does
not need: no camera frame, sensors or rewards. Stepping a copy never touches the original.

It sees exact state (positions, intentions, light phases, future arrivals): it is for a teacher
or a bound (``--policy teacher``), not for an agent a user deploys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from drive_attention.envs.batched.contract import EpisodeStats
from drive_attention.envs.batched.sim import Traffic


@dataclass
class PlanStep:
    """How each row stands after a :meth:`PlanningBatch.step`; (K,) tensors."""

    done: torch.Tensor  # bool, the episode ended (terminated or truncated)
    arrived: torch.Tensor  # bool, at the goal
    failed: torch.Tensor  # bool, crashed, off the road now, or (the signalised intersection) ran
    # a red light or hit a pedestrian since the copy was made
    distance: torch.Tensor  # [m] the ego's distance over the episode so far


class PlanningBatch:
    """K copies of a core's environments (``rows[i]``: the environment row ``i`` copies)."""

    def __init__(self, core: Any, rows: torch.Tensor) -> None:
        # core: envs.batched.core.BatchedDrive (not imported: it imports this module)
        self.core = core
        self.rows = rows  # (K,) long
        self.traffic: Traffic = core.traffic.select(rows)
        self.stats: EpisodeStats = core.stats.select(rows)
        self.turn = core.turn[rows]  # (K, 3)
        self._runs = self.traffic.red_runs.clone()  # red-light runs before the copy
        self._hit = self.traffic.pedestrian_hit.clone()

    def __len__(self) -> int:
        return len(self.rows)

    def step(self, action: torch.Tensor) -> PlanStep:
        """Every row one policy period on: (K,) long meta-actions, or (K, 2) [steer, accel]."""
        core, t = self.core, self.traffic
        action = action.to(core.device)
        red_light = core.advance(t, action if core.discrete else action.float().clamp(-1, 1))
        j = core.judge(t, self.stats, self.turn, red_light)
        failed = j.collision | j.off_road
        if core.signals is not None:
            failed = failed | (t.red_runs > self._runs) | (t.pedestrian_hit & ~self._hit)
        return PlanStep(
            done=j.terminated | j.truncated,
            arrived=j.arrived,
            failed=failed,
            distance=self.stats.distance.clone(),
        )

    def select(self, index: torch.Tensor) -> PlanningBatch:
        """A batch of the rows ``index`` ((J,) long, repeats allowed), copied: to keep only some
        rows, or to branch one row into several that go on with different actions."""
        out = PlanningBatch.__new__(PlanningBatch)
        out.core = self.core
        out.rows = self.rows[index]
        out.traffic = self.traffic.select(index)
        out.stats = self.stats.select(index)
        out.turn = self.turn[index]
        out._runs = self._runs[index]
        out._hit = self._hit[index]
        return out
