"""Which trial a sweep calls best (agent/scale/sweep.py): hand-made trial rows, shaped as
:func:`trial_rows` makes them, through the selection, the table and ``best.yaml``: only a trial
that trained its whole budget can be best (never a pruned, errored or unfinished one, however
high its score), the metric's direction is followed, and tied scores go to the earlier trial
whatever order the rows come in."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from drive_attention.agent.scale.sweep import best_row, markdown, trial_rows, write_results
from drive_attention.agent.scale.sweep_config import SchedulerSpec, SweepConfig

ROOT = Path(__file__).resolve().parents[3]
STEPS = 384  # per trial


def sweep(**changes: Any) -> SweepConfig:
    raw: dict[str, Any] = {
        "name": "tiny",
        "base": str(ROOT / "configs" / "batched.yaml"),
        "space": {"algo.learning_rate": {"loguniform": [1.0e-4, 1.0e-3]}},
        "steps": STEPS,
        "eval_every": 128,
        "eval_episodes": 1,
        "trials": 6,
        "scheduler": SchedulerSpec(grace_steps=128, reduction_factor=2),
    }
    return SweepConfig(**{**raw, **changes})


def row(
    name: str,
    number: int | None,
    status: str,
    mean_return: float | None,
    collision_rate: float | None = 0.5,
    steps: int = STEPS,
) -> dict[str, Any]:
    """One trial's row as trial_rows makes it."""
    return {
        "trial": f"tiny-{name}",
        "number": number,
        "status": status,
        "steps": steps,
        "reports": steps // 128,
        "params": {"algo.learning_rate": 1.0e-4 * (number or 9)},
        "base": number == 1,
        "mean_return": mean_return,
        "success_rate": 0.25,
        "collision_rate": collision_rate,
        "mean_speed": 20.0,
        "error": "RuntimeError: the node died" if status == "error" else None,
    }


# the completed trial t4 scores 31; a pruned, an errored and an unfinished trial score more
# (from fewer steps), and a completed trial has no score
TRIALS = [
    row("t1", 1, "completed", 20.0),
    row("t2", 2, "pruned", 50.0, steps=128),
    row("t3", 3, "error", 45.0, steps=256),
    row("t4", 4, "completed", 31.0),
    row("t5", 5, "completed", None),
    row("t6", 6, "unfinished", 60.0, steps=256),
]


def best_in_every_order(rows: list[dict[str, Any]], config: SweepConfig) -> str | None:
    """The best trial's name, the same whatever order the rows come in."""
    names = set()
    for order in itertools.permutations(rows):
        best = best_row(list(order), config)
        names.add(None if best is None else best["trial"])
    assert len(names) == 1, names
    return names.pop()


def test_the_best_trial_is_the_top_completed_one_never_a_pruned_errored_or_unfinished_one():
    assert best_in_every_order(TRIALS, sweep()) == "tiny-t4"
    only_stopped = [r for r in TRIALS if r["status"] != "completed" or r["mean_return"] is None]
    assert best_row(only_stopped, sweep()) is None  # no trial trained its budget with a score


def test_with_mode_min_the_lowest_score_of_a_completed_trial_is_best():
    rows = [
        row("t1", 1, "completed", 10.0, collision_rate=0.4),
        row("t2", 2, "completed", 30.0, collision_rate=0.1),
        row("t3", 3, "completed", 20.0, collision_rate=0.3),
        row("t4", 4, "pruned", 0.0, collision_rate=0.0, steps=128),
    ]
    assert best_in_every_order(rows, sweep(metric="collision_rate", mode="min")) == "tiny-t2"
    assert best_in_every_order(rows, sweep(metric="collision_rate", mode="max")) == "tiny-t1"
    assert best_in_every_order(rows, sweep(metric="mean_return", mode="min")) == "tiny-t1"
    assert best_in_every_order(rows, sweep()) == "tiny-t2"  # mean_return, max


@pytest.mark.parametrize("mode", ["max", "min"])
def test_tied_scores_go_to_the_earlier_trial_number_then_the_name(mode):
    """The earlier trial wins a tie even where its name sorts later; a trial whose number is
    unknown comes after the numbered ones; two of those go by name. A better score still beats
    an earlier trial."""
    score = 31.0 if mode == "max" else -31.0
    config = sweep(mode=mode)
    earlier_wins = [
        row("aaaa0001", 1, "completed", score / 2),  # earliest, but a worse score
        row("ffff0002", 2, "completed", score),
        row("0000beef", 3, "completed", score),
    ]
    assert best_in_every_order(earlier_wins, config) == "tiny-ffff0002"
    numbered_first = [row("bbbb", None, "completed", score), row("cccc", 5, "completed", score)]
    assert best_in_every_order(numbered_first, config) == "tiny-cccc"
    by_name = [row("dddd", None, "completed", score), row("bbbb", None, "completed", score)]
    assert best_in_every_order(by_name, config) == "tiny-bbbb"


def test_the_sweep_table_lists_completed_trials_best_first_and_marks_only_the_best():
    config = sweep()
    best = best_row(TRIALS, config)
    lines = markdown(config, TRIALS, best).splitlines()
    assert "6 trials of up to 384 steps; mean_return (max) over 1 evaluation episodes" in lines[2]
    assert lines[2].endswith("; 1 pruned by ASHA.")
    assert lines[4] == (
        "| trial | status | steps | algo.learning_rate | mean_return | success_rate "
        "| collision_rate | mean_speed |"
    )
    assert lines[6:] == [
        "| tiny-t4 **best** | completed | 384 | 0.0004 | 31 | 0.25 | 0.5 | 20 |",
        "| tiny-t1 (the experiment's own values) | completed | 384 | 0.0001 | 20 | 0.25 | 0.5 "
        "| 20 |",
        "| tiny-t5 | completed | 384 | 0.0005 | – | 0.25 | 0.5 | 20 |",
        "| tiny-t6 | unfinished | 256 | 0.0006 | 60 | 0.25 | 0.5 | 20 |",
        "| tiny-t2 | pruned | 128 | 0.0002 | 50 | 0.25 | 0.5 | 20 |",
        "| tiny-t3 | error | 256 | 0.0003 | 45 | 0.25 | 0.5 | 20 |",
    ]


def test_best_yaml_holds_the_best_trial_s_values_and_score(tmp_path):
    config = sweep()
    summary = write_results(config, TRIALS, tmp_path, tmp_path / "runs")
    assert summary["best"]["trial"] == "tiny-t4" and summary["pruned"] == 1
    assert json.loads((tmp_path / "trials.json").read_text())["best"]["trial"] == "tiny-t4"
    text = (tmp_path / "best.yaml").read_text()
    assert text.startswith("# The best of sweep tiny (tiny-t4: mean_return 31.000 after 384 steps)")
    experiment = yaml.safe_load(text)
    assert experiment["algo"]["learning_rate"] == pytest.approx(4.0e-4)  # t4's, not t1's
    assert experiment["train"]["steps"] == STEPS


def test_tune_results_become_completed_pruned_errored_and_unfinished_rows(tmp_path):
    """What decides a trial's status from Tune's record: the whole budget (completed, even where
    the trial errored after its last evaluation), stopped early by ASHA (pruned), an error before
    the budget (error), neither (unfinished); only completed trials can then be best."""
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    from ray.tune import Result

    config = sweep()

    def result(number: int, trial_id: str, steps: int, score: float, **more: Any) -> Result:
        metrics = {"trial_id": trial_id, "env_steps": steps, "mean_return": score}
        metrics.update(success_rate=0.5, collision_rate=0.5, mean_speed=20.0)
        metrics["config"] = {"algo.learning_rate": 1.0e-4 * number}
        metrics.update(more.pop("metrics", {}))
        folder = f"run_trial_{trial_id}_{number}_lr={number}_2026-01-01_00-00-00"
        return Result(metrics=metrics, checkpoint=None, path=str(tmp_path / folder), **more)

    grid = [
        result(1, "c0000001", STEPS, 20.0, error=None, metrics={"done": True}),
        result(2, "p0000002", 128, 90.0, error=None, metrics={"done": True}),
        result(3, "e0000003", 256, 80.0, error=RuntimeError("boom\nRuntimeError: node died")),
        result(4, "u0000004", 256, 70.0, error=None),
        result(5, "l0000005", STEPS, 25.0, error=RuntimeError("after the last evaluation")),
    ]
    rows = trial_rows(grid, config, tmp_path / "runs")
    status = {r["trial"]: (r["status"], r["number"], r["steps"]) for r in rows}
    assert status == {
        "tiny-c0000001": ("completed", 1, STEPS),
        "tiny-p0000002": ("pruned", 2, 128),
        "tiny-e0000003": ("error", 3, 256),
        "tiny-u0000004": ("unfinished", 4, 256),
        "tiny-l0000005": ("completed", 5, STEPS),
    }
    errors = {r["trial"]: r["error"] for r in rows if r["error"]}
    assert errors["tiny-e0000003"] == "RuntimeError: node died"
    assert best_row(rows, config)["trial"] == "tiny-l0000005"
