"""The teacher's validation against the lookahead (scripts/validate_teacher.py): resumable rows
and the summary's agreement rules (no simulation here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drive_attention.agent.evaluate import teacher_check
from drive_attention.agent.policies.teacher import TeacherConfig


def _row(scenario: str, seed: int, looked: bool, taught: bool, same: int) -> dict:
    def outcome(success: bool) -> dict:
        return {"success": success, "collision": not success, "mean_speed": 5.0, "length": 9}

    return {
        "scenario": scenario,
        "seed": seed,
        "lookahead": outcome(looked),
        "teacher": outcome(taught),
        "shared_states": 10,
        "same_first_action": same,
        "actions": [],
    }


def test_validation_resumes_and_summarises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = []

    def fake(scenario: str, seed: int, config: TeacherConfig) -> dict:
        ran.append(seed)
        # the lookahead succeeds in every episode, the teacher in all but seed 1
        return _row(scenario, seed, True, seed != 1, same=9 if seed < 3 else 8)

    monkeypatch.setattr(teacher_check, "run_episode", fake)
    (tmp_path / "intersection").mkdir()
    done = _row("intersection", 0, True, True, same=10)
    (tmp_path / "intersection" / "seed0.json").write_text(json.dumps(done))
    summary = teacher_check.validate(tmp_path, ("intersection",), 4, 0, TeacherConfig())
    assert ran == [1, 2, 3]  # seed 0 was there: not run again
    e = summary["intersection"]
    assert e["episodes"] == 4 and e["lookahead_success"] == 1.0 and e["teacher_success"] == 0.75
    assert e["success_agrees"]  # 0.25 apart, 3 standard errors = 3 * 0.25
    assert e["same_first_action"] == pytest.approx((10 + 9 + 9 + 8) / 40)
    assert e["actions_agree"]  # 90% asked: 36 of 40 is exactly that
    (tmp_path / "intersection" / "seed0.json").write_text(json.dumps(_row("x", 0, True, True, 9)))
    e = teacher_check.summarise(tmp_path, ("intersection",), 0, 4)["intersection"]
    assert e["same_first_action"] == pytest.approx(35 / 40) and not e["actions_agree"]
