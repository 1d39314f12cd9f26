"""The study's jobs: what each one is, where it lives and what it left on disk.

A job is one training run and its evaluation, in ``<runs>/<scenario>-<arm>-s<seed>/`` (an
ordinary run directory) with its outcome in ``benchmark.json`` and its output in
``benchmark.log``. A run directory made with other settings than the config asks now is refused
(:func:`ensure_fresh`) rather than mixed in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from drive_attention import envs
from drive_attention.agent.benchmark.config import BenchmarkConfig, arm_experiment
from drive_attention.agent.run.config import ConfigError, ExperimentConfig
from drive_attention.agent.run.config_files import config_diff, read_yaml, to_dict
from drive_attention.agent.run.files import write_text
from drive_attention.agent.run.rundir import RunDir

RESULT_FILE = "benchmark.json"
LOG_FILE = "benchmark.log"


@dataclass
class Job:
    """One training run and its evaluation (plain data: it is sent to a worker process)."""

    scenario: str
    arm: str
    seed: int
    train_id: str
    reference_id: str
    base: str  # the study's base experiment file (its name)
    base_config: dict[str, Any]  # what that file held when the study was planned
    overrides: dict[str, Any]  # section.key -> value, applied to base_config
    run_dir: str
    evaluation: dict[str, Any]
    attribution: bool
    throughput_seconds: float

    @property
    def name(self) -> str:
        return Path(self.run_dir).name

    def experiment(self) -> ExperimentConfig:
        """The run's validated experiment: the base as read when the study was planned (a base
        file edited while the study runs does not change its later runs), then the overrides."""
        return arm_experiment(self.base_config, self.overrides, self.arm)

    def identity(self) -> dict[str, Any]:
        """Which run a result belongs to: the first keys of its ``benchmark.json``."""
        return {"scenario": self.scenario, "arm": self.arm, "seed": self.seed, "run": self.run_dir}


def plan(config: BenchmarkConfig, runs_root: Path) -> list[Job]:
    """Every job, seeds outermost so that a partial benchmark covers all arms evenly. Every job
    starts from the base experiment as it was when the config was loaded."""
    jobs = []
    for seed in config.seeds:
        for scenario, spec in config.scenarios.items():
            for arm in config.arms:
                jobs.append(
                    Job(
                        scenario=scenario,
                        arm=arm,
                        seed=seed,
                        train_id=spec.train,
                        reference_id=spec.reference,
                        base=config.base,
                        base_config=config.base_config,
                        overrides=config.run_overrides(scenario, arm, seed, runs_root),
                        run_dir=str(runs_root / config.run_name(scenario, arm, seed)),
                        evaluation=asdict(config.evaluation),
                        attribution=arm in config.evaluation.attribution_arms,
                        throughput_seconds=config.throughput_seconds,
                    )
                )
    return jobs


def read_result(job: Job) -> dict[str, Any] | None:
    """The job's recorded outcome (finished, interrupted or failed), if any."""
    path = Path(job.run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def outstanding(
    config: BenchmarkConfig, runs_root: Path
) -> tuple[list[Job], dict[str, dict[str, Any]], list[Job]]:
    """``(every job, the finished ones' results by run name, the jobs still to run)``, after
    refusing runs made with other settings."""
    todo = plan(config, runs_root)
    ensure_fresh(todo, runs_root)
    results: dict[str, dict[str, Any]] = {}
    pending = []
    for job in todo:
        done = read_result(job)
        if done is not None and done.get("status") == "finished":
            results[job.name] = done
        else:
            pending.append(job)
    return todo, results, pending


def write_json(path: Path, data: Any) -> None:
    """Write one of the study's JSON files atomically, never through a link; NaN and infinities
    become null."""
    write_text(path, json.dumps(_finite(data), indent=1) + "\n")


def _finite(value: Any) -> Any:
    """NaN and infinities as null: strict JSON readers refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def stale(job: Job) -> list[str]:
    """How the job's existing run directory differs from what the config asks now."""
    run = RunDir(Path(job.run_dir))
    changes = []
    if run.config.is_file():
        saved = read_yaml(run.config)
        wanted = to_dict(job.experiment())
        changes += [line for line in config_diff(saved, wanted) if not line.startswith("logging.")]
    recorded = run.read_info().get("reward_weights")  # None: a run from before they were kept
    if recorded is not None and run.config.is_file():
        env = job.experiment().env
        current = envs.reward_weights(env.id, **env.kwargs)
        # a term the record lacks did not exist when the run was trained: it weighed 0
        changes += [
            f"reward weight {k}: {recorded.get(k, 0.0)} -> {current[k]:g}"
            for k in current
            if float(recorded.get(k, 0.0)) != current[k]
        ]
    done = read_result(job)
    if done is not None and "evaluation_spec" in done:
        changes += [
            f"evaluation.{line}" for line in config_diff(done["evaluation_spec"], job.evaluation)
        ]
    return changes


def ensure_fresh(jobs: Sequence[Job], runs_root: Path) -> None:
    """Refuse (before any work) to mix in runs made with other settings."""
    changed = {job.name: stale(job) for job in jobs}
    changed = {name: lines for name, lines in changed.items() if lines}
    if changed:
        name, lines = next(iter(changed.items()))
        raise ConfigError(
            f"{len(changed)} run(s) in {runs_root} were made with other settings (e.g. {name}: "
            f"{'; '.join(lines[:3])}); delete them, or give --runs a new folder"
        )
