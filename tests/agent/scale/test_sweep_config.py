"""Sweep configs (configs/sweep/, agent/scale/sweep.py): checked before any work, and the same
budget for every arm. No Ray needed (the sweep itself runs in tests/agent/scale/test_ray.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drive_attention.agent.benchmark import load_benchmark_config
from drive_attention.agent.scale.sweep_config import load_sweep_config
from drive_attention.envs.configuration import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


SWEEPS = ROOT / "configs" / "sweep"
SWEEP_GROUPS = [SWEEPS, *sorted(path for path in SWEEPS.iterdir() if path.is_dir())]


@pytest.mark.parametrize("folder", SWEEP_GROUPS, ids=lambda p: p.name)
def test_every_arm_gets_the_same_sweep_budget(folder):
    """The sweeps of one folder are one comparison: the same budget for every arm."""
    paths = sorted(folder.glob("*.yaml"))
    configs = [load_sweep_config(path) for path in paths]
    assert {c.arm for c in configs} >= {"attention", "combined", "late_fusion"}
    shared = (
        *("base", "scenario", "trials", "steps", "eval_every", "eval_episodes", "eval_seed"),
        *("metric", "mode", "seed"),
    )
    for key in shared:
        assert len({getattr(c, key) for c in configs}) == 1, key
    assert len({(c.scheduler.grace_steps, c.scheduler.reduction_factor) for c in configs}) == 1
    algo = [{k: v for k, v in c.space.items() if k.startswith("algo.")} for c in configs]
    assert all(a == algo[0] for a in algo) and algo[0]
    for c in configs:  # the arm is the only model difference, and every sweep starts at base
        assert c.overrides == {"model.name": c.arm} and c.include_base
        assert c.experiment({}).model.name == c.arm


def test_bad_sweep_configs_are_refused_before_any_work(tmp_path):
    good = {
        "name": "bad",
        "base": str(ROOT / "configs" / "batched.yaml"),
        "steps": 256,
        "eval_every": 128,
        "scheduler": {"grace_steps": 128},
        "space": {"algo.learning_rate": {"loguniform": [1.0e-4, 1.0e-3]}},
    }
    load_sweep_config(write(tmp_path, good))
    cases = [
        ({"space": {"algo.nope": {"choice": [1, 2]}}}, "nope"),
        ({"space": {"algo.learning_rate": {"gaussian": [0, 1]}}}, "loguniform, uniform"),
        ({"space": {"algo.learning_rate": {"uniform": [1.0e-3, 1.0e-4]}}}, "low < high"),
        ({"space": {"algo.n_epochs": {"choice": [0, 2]}}}, "n_epochs"),
        ({"space": {"algo.learning_rate": {"loguniform": [1.0e-2, 1.0e-1]}}}, "include_base"),
        ({"steps": 300}, "multiple of eval_every"),
        ({"space": {}}, "at least one key"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_sweep_config(write(tmp_path, {**good, **change}))


@pytest.mark.parametrize("name", ["../../..", "/tmp/elsewhere", ".hidden", "a/b"])
def test_a_sweep_or_study_name_cannot_leave_its_folder(tmp_path, name):
    """A sweep's and a study's name become folders under runs/ and docs/: named like a run, so
    that ``..`` or a path never writes outside them."""
    raw = yaml.safe_load((SWEEPS / "highway-attention.yaml").read_text())
    with pytest.raises(ConfigError, match=r"name: .* must be at most 100 characters"):
        load_sweep_config(write(tmp_path, {**raw, "name": name}))
    study = yaml.safe_load((ROOT / "configs" / "benchmark" / "quick.yaml").read_text())
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**study, "name": name}))
    with pytest.raises(ConfigError, match=r"name: .* must be at most 100 characters"):
        load_benchmark_config(path)
