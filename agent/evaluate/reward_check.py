"""Does the reward rank drives the way a user ranks them? (docs/reward.md)

Policies of known character drive the same seeded episodes: random, idle, the cautious rule, a
reckless variant of the rule (short gaps, top speed), one that only ever speeds up, and any
trained runs given. A user ranks two episodes by success first (arriving, or lasting, without a
crash), then by speed. For every pair of episodes that the user's order tells apart (one
succeeded and the other not, or both succeeded at different speeds), the check asks whether the
return puts them in the same order, under the current reward and under the previous reward
(:data:`PREVIOUS_WEIGHTS`, recomputed from the episodes' terms); and whether the policies'
mean returns rank the policies as their success and speed do.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from drive_attention import envs
from drive_attention.agent.evaluate.episodes import EpisodeResult, EvalReport
from drive_attention.agent.evaluate.rollout import evaluate
from drive_attention.agent.policies.base import IdlePolicy, Policy, RandomPolicy
from drive_attention.agent.policies.rule import CAUTION, RulePolicy
from drive_attention.envs.contract import DISCRETE_ACTIONS

FASTER = DISCRETE_ACTIONS.index("faster")
SPEED_TIE = 0.5  # [m/s] closer mean speeds than this do not order two episodes


class AlwaysFaster:
    """``faster`` at every step: the drive a speed-only reward would ask for."""

    name = "always_faster"

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> Any:
        return FASTER

    def attention(self, obs: dict[str, np.ndarray]) -> None:
        return None


def reference_policies(scenario: str, env: Any) -> list[Policy]:
    """The policies of known character for ``scenario`` (meta-actions)."""
    names, space = env.unwrapped.sensor_names, env.action_space
    reckless = RulePolicy(scenario, names, space)
    cautious = CAUTION[scenario]
    reckless.caution = type(cautious)(
        cruise=30.0, min_gap=4.0, ttc=1.0, headway=0.3, road_frame=cautious.road_frame
    )
    reckless.name = "rule_reckless"
    return [
        RandomPolicy(space),
        IdlePolicy(env.unwrapped.idle_action),
        RulePolicy(scenario, names, space),
        reckless,
        AlwaysFaster(),
    ]


PREVIOUS_WEIGHTS: dict[str, float] = {
    "alive": 0.0,
    "progress": 0.5,
    "collision": 1.0,
    "off_road": 1.0,
    "lane_keeping": 0.05,
    "comfort": 0.02,
    "goal": 1.0,
}
"""The embedded backends' reward weights before the ``alive`` term was added."""


def previous_return(e: EpisodeResult, weights: dict[str, float]) -> float:
    """The episode's return under :data:`PREVIOUS_WEIGHTS`, from its summed weighted terms
    (``weights``: the ones they were weighed with)."""
    return float(
        sum(
            value * PREVIOUS_WEIGHTS.get(name, 0.0) / weights[name]
            for name, value in e.reward_terms.items()
            if weights.get(name, 0.0) != 0.0
        )
    )


def user_order(a: EpisodeResult, b: EpisodeResult) -> int:
    """+1 if a user prefers ``a``, -1 if ``b``, 0 if they cannot tell (success, then speed)."""
    if a.success != b.success:
        return 1 if a.success else -1
    if abs(a.mean_speed - b.mean_speed) < SPEED_TIE:
        return 0
    return 1 if a.mean_speed > b.mean_speed else -1


@dataclass
class Agreement:
    """Of the pairs of episodes a user orders, the share the return orders the same way."""

    success_pairs: int  # pairs that differ in success
    success_agree: float  # ... ordered the same by the return
    speed_pairs: int  # pairs of successful episodes with different speeds
    speed_agree: float


def agreement(episodes: list[EpisodeResult], returns: list[float]) -> Agreement:
    counts = {"success": [0, 0], "speed": [0, 0]}
    for (a, ra), (b, rb) in itertools.combinations(zip(episodes, returns, strict=True), 2):
        want = user_order(a, b)
        if want == 0 or not (a.success or b.success):  # two failures: no clear order
            continue
        kind = "success" if a.success != b.success else "speed"
        counts[kind][0] += 1
        counts[kind][1] += int(np.sign(ra - rb) == want)
    return Agreement(
        success_pairs=counts["success"][0],
        success_agree=counts["success"][1] / max(1, counts["success"][0]),
        speed_pairs=counts["speed"][0],
        speed_agree=counts["speed"][1] / max(1, counts["speed"][0]),
    )


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-a of two rankings of the same items (ties count as discordant halves)."""
    pairs = list(itertools.combinations(range(len(x)), 2))
    if not pairs:
        return float("nan")
    score = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
    return float(score / len(pairs))


def check_reward(reports: list[EvalReport], weights: dict[str, float]) -> dict[str, Any]:
    """The agreement of both rewards with the user's order, over episodes and over policies
    (``weights``: the current reward's, which the episodes' terms were weighed with)."""

    def previous(e: EpisodeResult) -> float:
        return previous_return(e, weights)

    rewards: dict[str, Any] = {"current": lambda e: e.episode_return, "previous": previous}
    episodes = [e for r in reports for e in r.episodes]
    summaries = [r.summary() for r in reports]
    user_key = [s["success_rate"] * 1000 + s["mean_speed"] for s in summaries]  # success first
    out: dict[str, Any] = {
        "policies": {
            r.policy: {
                **s,
                "mean_previous_return": float(
                    np.mean([rewards["previous"](e) for e in r.episodes])
                ),
            }
            for r, s in zip(reports, summaries, strict=True)
        }
    }
    for reward, of in rewards.items():
        a = agreement(episodes, [of(e) for e in episodes])
        means = [float(np.mean([of(e) for e in r.episodes])) for r in reports]
        out[reward] = {
            "success_pairs": a.success_pairs,
            "success_agree": a.success_agree,
            "speed_pairs": a.speed_pairs,
            "speed_agree": a.speed_agree,
            "policy_tau": kendall_tau(user_key, means),
        }
    return out


def run_check(
    env_id: str,
    episodes: int,
    seed: int,
    extra: list[tuple[Policy, dict[str, Any]]] | None = None,
) -> tuple[dict[str, Any], list[EvalReport]]:
    """Every reference policy, and each ``(policy, env kwargs)`` of ``extra`` (trained runs, on
    their own env options), on ``episodes`` seeded episodes of ``env_id``. Every episode is
    weighed with the env's default reward weights, whatever a run trained with."""
    scenario = envs.HIGHWAY_IDS.get(env_id) or envs.BATCHED_IDS.get(env_id)
    if scenario is None or scenario not in CAUTION:
        raise ValueError(f"{env_id}: the reward check runs on the highway-env and batched ids")
    env = gym.make(env_id)
    weights = dict(env.unwrapped.config.weights)
    try:
        reports = [
            evaluate(env, p, episodes, seed, env_id=env_id)
            for p in reference_policies(scenario, env)
        ]
    finally:
        env.close()
    for policy, kwargs in extra or []:
        options = {k: v for k, v in kwargs.items() if k != "reward_weights"}
        own = gym.make(env_id, **options)
        try:
            reports.append(evaluate(own, policy, episodes, seed, env_id=env_id))
        finally:
            own.close()
    return check_reward(reports, weights), reports


__all__ = ["AlwaysFaster", "agreement", "check_reward", "kendall_tau", "run_check", "user_order"]
