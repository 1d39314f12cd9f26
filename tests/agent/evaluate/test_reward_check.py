"""The reward check (agent/evaluate/reward_check.py): its pair counting, and the current
reward's order on real highway-env episodes."""

from __future__ import annotations

import pytest

from drive_attention.agent.evaluate.episodes import EpisodeResult
from drive_attention.agent.evaluate.reward_check import (
    agreement,
    kendall_tau,
    run_check,
    user_order,
)


def episode(success: bool, speed: float, ret: float, alive: float = 0.0) -> EpisodeResult:
    return EpisodeResult(
        episode=0, seed=0, episode_return=ret, length=1, success=success, collision=not success,
        off_road=False, mean_speed=speed, distance=0.0, reward_terms={"alive": alive},
    )  # fmt: skip


def test_user_order_and_agreement_count_only_ordered_pairs() -> None:
    slow_ok, fast_ok = episode(True, 20.0, 30.0), episode(True, 25.0, 33.0)
    crash_fast, crash_slow = episode(False, 29.0, 12.0), episode(False, 21.0, 5.0)
    assert user_order(slow_ok, crash_fast) == 1 and user_order(crash_fast, fast_ok) == -1
    assert user_order(slow_ok, episode(True, 20.2, 0.0)) == 0  # within the speed tie
    a = agreement([slow_ok, fast_ok, crash_fast, crash_slow], [30.0, 33.0, 12.0, 5.0])
    # 4 success pairs, all agreeing; 1 speed pair (the two successes); the two crashes skipped
    assert (a.success_pairs, a.success_agree, a.speed_pairs, a.speed_agree) == (4, 1.0, 1, 1.0)
    b = agreement([slow_ok, fast_ok, crash_fast], [30.0, 29.0, 40.0])
    assert b.success_agree == 0.0 and b.speed_agree == 0.0


def test_kendall_tau() -> None:
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert kendall_tau([1, 2, 3], [30, 20, 10]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)


def test_current_reward_puts_careful_arrivals_above_crashes_on_highway_env() -> None:
    result, reports = run_check("DriveAttention/Highway-v0", episodes=3, seed=3000)
    assert {r.policy for r in reports} >= {"rule", "always_faster", "random", "idle"}
    current, before = result["current"], result["previous"]
    assert current["success_pairs"] > 0
    # the check's point: with alive pay, a survived episode outranks a crash far more often
    assert current["success_agree"] > before["success_agree"]
    assert current["success_agree"] >= 0.9
    rule = result["policies"]["rule"]
    fast = result["policies"]["always_faster"]
    assert rule["success_rate"] > fast["success_rate"]
    assert rule["mean_return"] > fast["mean_return"]
