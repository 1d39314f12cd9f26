"""A sweep's config (``configs/sweep/*.yaml``): the base experiment, the searched keys and their
distributions, the metric, the budget and the scheduler, validated before any trial starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from drive_attention.agent.benchmark.config import flatten
from drive_attention.agent.run.config import ConfigError, ExperimentConfig, check_folder_name
from drive_attention.agent.run.config_files import load_config, read_yaml, to_dict
from drive_attention.agent.run.limits import check_episodes
from drive_attention.envs.configuration import build, check

METRICS = ("mean_return", "success_rate", "collision_rate", "mean_speed")  # periodic eval
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")


@dataclass
class SchedulerSpec:
    """ASHA: trials are compared at rungs of ``grace_steps * reduction_factor**k`` steps."""

    grace_steps: int = 8192  # no trial is stopped before this many steps
    reduction_factor: float = 3.0  # one in this many trials goes on at each rung

    def __post_init__(self) -> None:
        check(self.grace_steps >= 1, f"grace_steps: must be at least 1, got {self.grace_steps}")
        check(
            self.reduction_factor > 1,
            f"reduction_factor: must be above 1, got {self.reduction_factor}",
        )


@dataclass
class SweepConfig:
    """``configs/sweep/*.yaml``."""

    name: str
    space: dict[str, dict[str, Any]]  # config key -> {loguniform|uniform|randint|choice: ...}
    base: str = "configs/batched.yaml"
    overrides: dict[str, Any] = field(default_factory=dict)  # applied to every trial
    scenario: str = ""  # tags only (e.g. highway)
    arm: str = ""  # tags only (e.g. attention)
    steps: int = 49_152  # per trial
    trials: int = 16  # the same for every arm, so that tuned arms compare fairly
    concurrent: int = 2  # trials at a time
    eval_every: int = 8192  # [steps] each evaluation is a report to Tune
    eval_episodes: int = 5
    eval_seed: int = 1000  # disjoint from the benchmark's (10000+) and the default's final eval
    metric: Literal["mean_return", "success_rate", "collision_rate", "mean_speed"] = "mean_return"
    mode: Literal["max", "min"] = "max"
    seed: int = 0  # the searcher's; trial k trains with train.seed = seed
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    wandb: Literal["online", "offline", "disabled"] = "disabled"  # every trial, grouped by sweep
    # the first trial trains the experiment's own values (the current default), so that the
    # table compares every tuned trial with it under the same budget and evaluation
    include_base: bool = True

    def __post_init__(self) -> None:
        check_folder_name(
            self.name, "name", "runs/sweep/NAME and docs/sweeps/NAME", "highway-attention"
        )
        check(bool(self.space), "space: give at least one key to search")
        check(self.trials >= 1, f"trials: must be at least 1, got {self.trials}")
        check(self.concurrent >= 1, f"concurrent: must be at least 1, got {self.concurrent}")
        check(self.steps >= 1, f"steps: must be at least 1, got {self.steps}")
        check(
            1 <= self.eval_every <= self.steps,
            f"eval_every: must be in [1, steps={self.steps}], got {self.eval_every}",
        )
        check(self.eval_episodes >= 1, f"eval_episodes: must be >= 1, got {self.eval_episodes}")
        check_episodes("eval_episodes", self.eval_episodes)
        check(
            self.steps % self.eval_every == 0,
            f"steps: {self.steps} must be a multiple of eval_every={self.eval_every} (the last "
            "evaluation is the trial's score)",
        )
        check(
            self.scheduler.grace_steps <= self.steps,
            f"scheduler.grace_steps: {self.scheduler.grace_steps} is above steps={self.steps}",
        )
        self.overrides = flatten(self.overrides)
        for key, spec in self.space.items():
            check("." in key, f"space: {key!r}: give section.key (e.g. algo.learning_rate)")
            check(
                isinstance(spec, Mapping) and len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS,
                f"space.{key}: give one of {', '.join(DISTRIBUTIONS)}, e.g. "
                "{loguniform: [1.0e-4, 1.0e-3]} or {choice: [64, 128]}",
            )
            kind, values = next(iter(spec.items()))
            wanted = "values" if kind == "choice" else "[low, high]"
            check(
                isinstance(values, list) and len(values) >= (1 if kind == "choice" else 2),
                f"space.{key}.{kind}: give a list ({wanted})",
            )
            if kind != "choice":
                check(
                    len(values) == 2 and values[0] < values[1],
                    f"space.{key}.{kind}: [low, high] with low < high, got {values}",
                )
            if kind == "loguniform":
                check(values[0] > 0, f"space.{key}.loguniform: low must be positive, got {values}")

    def corners(self) -> list[dict[str, Any]]:
        """Samples that reach every end of every distribution (checked before any work)."""
        out = []
        for key, spec in self.space.items():
            kind, values = next(iter(spec.items()))
            ends = values if kind == "choice" else [values[0], values[1] - (kind == "randint")]
            out += [{key: value} for value in ends]
        return out

    def base_point(self) -> dict[str, Any]:
        """The experiment's own value of every searched key (must lie inside the space)."""
        plain = to_dict(self.experiment({}))
        point = {}
        for key, spec in self.space.items():
            node: Any = plain
            for part in key.split("."):
                node = node[part]
            kind, values = next(iter(spec.items()))
            inside = node in values if kind == "choice" else values[0] <= node <= values[1]
            check(
                inside,
                f"space.{key}: the experiment's own value {node!r} lies outside {values}; widen "
                "the space or set include_base: false",
            )
            point[key] = node
        return point

    def trial_overrides(self, params: Mapping[str, Any], trial: str, root: Path) -> dict[str, Any]:
        """One trial's overrides of ``base``: the sweep's, the sampled values, then what the sweep
        owns (budget, evaluation, run directory, W&B group)."""
        return {
            "train.final_eval_episodes": 0,
            "train.torch_threads": 1,
            "logging.video": False,
            "train.seed": self.seed,  # the space may search seeds too
            **self.overrides,
            **params,
            "train.steps": self.steps,
            "train.eval_every": self.eval_every,
            "train.eval_episodes": self.eval_episodes,
            "train.eval_seed": self.eval_seed,
            "train.checkpoint_every": self.eval_every,
            "logging.wandb": self.wandb,
            "logging.group": f"sweep-{self.name}",
            "logging.tags": [t for t in (self.scenario, self.arm, f"seed-{self.seed}") if t]
            + ["sweep"],
            "logging.root": str(root),
            "logging.name": trial,
        }

    def experiment(self, params: Mapping[str, Any], trial: str = "check") -> ExperimentConfig:
        try:
            return load_config(self.base, self.trial_overrides(params, trial, Path("runs")))
        except ConfigError as err:
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
            raise ConfigError(f"{shown or 'the sweep'}: {err}") from None


def load_sweep_config(path: str | Path, trials: int | None = None) -> SweepConfig:
    """Read and validate a sweep YAML, and the experiment at every end of its space, before any
    work."""
    path = Path(path)
    raw = read_yaml(path, missing=f"--config {path}: no such file; see configs/sweep/")
    raw.setdefault("name", path.stem)
    if trials is not None:
        raw["trials"] = trials
    try:
        config = build(SweepConfig, raw)
        config.experiment({})
        for params in config.corners():
            config.experiment(params)
        if config.include_base:
            config.base_point()
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return config


def default_paths(config: SweepConfig) -> tuple[Path, Path]:
    """(runs root, results folder) of a sweep."""
    return Path("runs") / "sweep" / config.name, Path("docs") / "sweeps" / config.name
