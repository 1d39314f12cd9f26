"""The batched teacher (`evaluate.py --policy teacher`): the lookahead's choice, for every
environment of a batch at once."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from test_rule_policy import evaluate_main

from drive_attention.agent.evaluate.rollout import evaluate
from drive_attention.agent.policies.base import IdlePolicy
from drive_attention.agent.policies.lookahead import FASTER, IDLE, SLOWER
from drive_attention.agent.policies.teacher import (
    TIE,
    Teacher,
    TeacherConfig,
    TeacherPolicy,
    parse_plans,
)
from drive_attention.agent.run.config import ConfigError
from drive_attention.envs.batched.core import BatchedDrive

INTERSECTION = "DriveAttention/BatchedIntersection-v0"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _every_plan_in_full(teacher: Teacher) -> tuple[torch.Tensor, torch.Tensor]:
    """The lookahead's outcome written out: every candidate in a copy of its own, stepped to its
    end or the horizon and ranked as ``LookaheadPolicy.outcome`` ranks it. (B, C) rank and
    tie-break value."""
    core, plans = teacher.core, teacher.config.plans
    cands = [(first, plan) for first in teacher.first_actions for plan in plans]
    c = len(cands)
    copies = core.planning_batch(c)
    outcome: list[tuple | None] = [None] * len(copies)
    for k in range(teacher.steps):
        actions = [first if k == 0 else plan[min(k - 1, len(plan) - 1)] for first, plan in cands]
        out = copies.step(torch.tensor(actions * core.num_envs))
        for row in range(len(copies)):
            if outcome[row] is None and (bool(out.done[row]) or k == teacher.steps - 1):
                if out.failed[row]:
                    outcome[row] = (0, float(k))
                elif out.arrived[row]:
                    outcome[row] = (2, -float(k))
                else:
                    outcome[row] = (1, float(out.distance[row]))
    rank = torch.tensor([o[0] for o in outcome]).reshape(core.num_envs, c)
    value = torch.tensor([o[1] for o in outcome], dtype=torch.float64).reshape(core.num_envs, c)
    return rank, value


@pytest.mark.parametrize(
    ("scenario", "horizon"), [("intersection", 6.0), ("signalized", 6.0), ("merge", 4.0)]
)
def test_the_teacher_chooses_what_trying_every_plan_in_full_chooses(
    scenario: str, horizon: float
) -> None:
    """Shared copies (for candidates whose actions so far acted alike) and stopping once a plan
    arrives change no outcome and no decision: the outcomes of every plan run on its own to its
    end, and the first action of the first best one (tie-breaks within float32 noise of each
    other are ties: copies in other rows of a batch may differ in their last bits)."""
    core = BatchedDrive(scenario=scenario, num_envs=6)
    core.seed(11)
    core.reset()
    core.step(torch.full((6,), IDLE))
    teacher = Teacher(core, TeacherConfig(horizon=horizon))
    decision = teacher.decide()
    assert decision.rows_stepped < teacher.candidates * teacher.steps * core.num_envs
    rank, value = _every_plan_in_full(teacher)
    tried = decision.rank >= 0  # the candidates the teacher needed
    assert torch.equal(decision.rank[tried], rank[tried])
    torch.testing.assert_close(decision.value[tried], value[tried], atol=1e-3, rtol=0)
    best_rank = rank.max(1, keepdim=True).values
    best = torch.where(rank == best_rank, value, -torch.inf).max(1, keepdim=True).values
    first_best = ((rank == best_rank) & (value >= best - TIE)).int().argmax(1)
    firsts = torch.tensor(teacher.first_actions)
    expected = firsts[first_best // len(teacher.config.plans)]
    assert torch.equal(decision.action, expected)


def test_the_teacher_arrives_where_idle_crashes() -> None:
    """Seed 2 is the first batched intersection episode (seeds 0..) where keeping the speed
    crashes (found by evaluating idle on seeds 0, 1, 2); the teacher goes through it."""
    env = gym.make(INTERSECTION)
    (idle,) = evaluate(env, IdlePolicy(IDLE), episodes=1, seed=2).episodes
    assert idle.collision
    (taught,) = evaluate(env, TeacherPolicy(env), episodes=1, seed=2).episodes
    assert taught.success and not taught.collision
    env.close()


def test_teacher_through_the_evaluate_script_and_its_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "teacher.json"
    config = tmp_path / "short.yaml"  # 6 s episodes keep it quick
    config.write_text(f"env:\n  id: {INTERSECTION}\n  kwargs: {{duration: 6}}\n")
    code = evaluate_main(
        "--policy", "teacher", "--config", config, "--episodes", 2, "--seed", 3, "--json", out
    )
    written = json.loads(out.read_text())
    assert code == 0 and written["policy"] == "teacher" and len(written["episodes"]) == 2
    out.unlink()
    capsys.readouterr()  # the episodes' progress lines
    for env_id in ("DriveAttention/Intersection-v0", "DriveAttention/Carla-v0"):
        code = evaluate_main("--policy", "teacher", "--env", env_id, "--json", out)
        err = capsys.readouterr().err
        assert code == 2 and "not a batched id" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    with pytest.raises(ConfigError, match="discrete"):
        TeacherPolicy(gym.make(INTERSECTION, action="continuous"))
    with pytest.raises(ConfigError, match="horizon"):
        TeacherConfig(horizon=0)
    assert parse_plans("faster; slower,faster") == ((FASTER,), (SLOWER, FASTER))
    with pytest.raises(ConfigError, match="did you mean 'slower'"):
        parse_plans("slowr")
