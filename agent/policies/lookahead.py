"""A planner that sees the future (``--policy lookahead``): what the action space allows at best.

Not a driver anyone could deploy: at every decision it copies the highway-env simulator
(:meth:`envs.highway.env.DriveEnv.planning_copy`, traffic's random draws included) and tries
each first meta-action followed by each of a few fixed plans (:data:`PLANS`) to the end of the
episode or :attr:`LookaheadPolicy.horizon` seconds, and takes the first action of the best
outcome: arriving (scenarios with a goal) before surviving before crashing or leaving the road;
among arrivals the earliest, among survivals the longest distance. Its success rate is an
estimate from below of what a policy on the same meta-actions and decision rate can reach in
that traffic: where it is far above the learned agents, the scenario leaves them room, and
their failures are not the action space's.

Discrete meta-actions on the highway-env backend only (the batched simulator and CARLA cannot
be copied mid-episode). Slow: 21 to 35 plans of up to 15 decisions each per decision, about 25 s
per intersection episode on one core and over a minute per highway episode. Ties go to the
first action of :attr:`LookaheadPolicy.first_actions` (idle first) and the first plan listed.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from drive_attention import envs
from drive_attention.agent.policies.base import AttentionView
from drive_attention.envs.configuration import ConfigError
from drive_attention.envs.contract import DISCRETE_ACTIONS

LEFT, IDLE, RIGHT, FASTER, SLOWER = range(len(DISCRETE_ACTIONS))  # highway-env's order
PLANS: tuple[tuple[int, ...], ...] = (
    (FASTER,),
    (IDLE,),
    (SLOWER,),
    (SLOWER, FASTER),
    (SLOWER, SLOWER, FASTER),
    (SLOWER, SLOWER, SLOWER, FASTER),
    (SLOWER, SLOWER, SLOWER, SLOWER, SLOWER, FASTER),
)
"""What follows the first action: each plan's last action repeats to the end."""


def check_can_look_ahead(env_id: str) -> None:
    """:class:`ConfigError` unless ``env_id`` is a highway-env id (asked before the env is made)."""
    if env_id not in envs.HIGHWAY_IDS:
        raise ConfigError(
            f"--policy lookahead: {env_id} cannot be copied mid-episode; it plans on the "
            f"highway-env ids ({', '.join(envs.HIGHWAY_IDS)})"
        )


class LookaheadPolicy:
    """The best first meta-action by trying it in copies of the simulator (see the module)."""

    name = "lookahead"

    def __init__(self, env: gym.Env, horizon: float = 15.0) -> None:
        base = env.unwrapped
        if not hasattr(base, "planning_copy"):
            check_can_look_ahead(env.spec.id if env.spec else type(base).__name__)
        if base.config.action != "discrete":
            raise ConfigError(
                "--policy lookahead plans over the discrete meta-actions; the env has "
                f"action={base.config.action!r} (evaluate with action: discrete)"
            )
        if horizon <= 0:
            raise ConfigError(f"lookahead horizon: must be positive [s], got {horizon}")
        self.env = base
        self.horizon = horizon
        # on the roundabout and intersection the lane controller follows the route: lane changes
        # would be the same as idle, so they are not tried
        self.first_actions = (
            (IDLE, FASTER, SLOWER)
            if base.scenario.destinations
            else (IDLE, FASTER, SLOWER, LEFT, RIGHT)
        )

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> Any:
        tried = [
            (self.outcome(first, plan), first) for first in self.first_actions for plan in PLANS
        ]
        return max(tried, key=lambda t: t[0])[1]  # ties: the first listed (max keeps the first)

    def outcome(self, first: int, plan: tuple[int, ...]) -> tuple[int, float]:
        """(rank, tie-break) of ``first`` then ``plan`` from the env's current state: rank 2 when
        it arrives (tie-break: minus the steps taken), 1 when it is on the road without a crash
        at the end or the horizon (tie-break: distance [m]), 0 otherwise (tie-break: the steps
        before the crash or the end off the road)."""
        twin = self.env.planning_copy()
        steps = max(1, round(self.horizon * twin.config.policy_frequency))
        info: dict[str, Any] = {}
        for k in range(steps):
            action = first if k == 0 else plan[min(k - 1, len(plan) - 1)]
            _, _, terminated, truncated, info = twin.step(action)
            if terminated or truncated:
                break
        if info["collision"] or not twin.ego.on_road:  # off_road in info is "at any step"
            return 0, float(k)
        if info["arrived"]:
            return 2, -float(k)
        return 1, float(info["distance"])

    def attention(self, obs: dict[str, np.ndarray]) -> AttentionView | None:
        return None
