"""The schema of ``configs/benchmark/*.yaml``: scenarios, arms, budgets, evaluation; what each
run of the study is; and the check of every run before any work."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from drive_attention.agent.run.admission import check_model
from drive_attention.agent.run.build import probe_env
from drive_attention.agent.run.config import ConfigError, ExperimentConfig, check_folder_name
from drive_attention.agent.run.config_files import load_config, read_yaml
from drive_attention.agent.run.limits import check_episodes
from drive_attention.agent.run.loading import check_same_observation
from drive_attention.envs.configuration import build, check, closest

METRICS = ("mean_return", "success_rate", "collision_rate")  # per backend and condition
EVAL_METRICS = (*METRICS, "mean_speed")  # of the intact evaluations


@dataclass
class ScenarioSpec:
    """A scenario: the batched id it trains on and the highway-env id it is checked on."""

    train: str  # e.g. DriveAttention/BatchedHighway-v0
    reference: str  # e.g. DriveAttention/Highway-v0

    def __post_init__(self) -> None:
        check("Batched" in self.train, f"train: {self.train!r} is not a batched-simulator id")


@dataclass
class EvalSpec:
    """How every trained policy is evaluated (the same seeded episodes for every arm)."""

    episodes: int = 20  # per backend and condition
    seed: int = 10_000  # episode k uses seed + k; disjoint from training seeds
    noise_std: float = 0.3  # sensor-noise ablation
    attribution_arms: list[str] = field(default_factory=list)  # arms with attention maps
    # frames of the attribution arms whose relevance the teacher computes (batched versions of
    # the scenarios, meta-actions): attention-relevance agreement; 0: none
    relevance_frames: int = 256

    def __post_init__(self) -> None:
        check(self.episodes >= 1, f"episodes: must be at least 1, got {self.episodes}")
        check_episodes("episodes", self.episodes)
        check(
            self.relevance_frames >= 0,
            f"relevance_frames: must be 0 (none) or more, got {self.relevance_frames}",
        )
        check_episodes("relevance_frames", self.relevance_frames)
        check(self.noise_std > 0, f"noise_std: must be positive, got {self.noise_std}")


@dataclass
class BenchmarkConfig:
    """``configs/benchmark/*.yaml``."""

    name: str  # results go to docs/results/<name>/, runs to runs/benchmark/<name>/
    scenarios: dict[str, ScenarioSpec]
    arms: dict[str, dict[str, Any]]  # arm name -> config overrides (key.sub: value)
    base: str = "configs/batched.yaml"  # the experiment every arm starts from
    steps: int = 40_960  # environment steps per run, equal for every arm
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    overrides: dict[str, Any] = field(default_factory=dict)  # applied to every run, before arms
    evaluation: EvalSpec = field(default_factory=EvalSpec)
    throughput_seconds: float = 5.0  # raw env stepping measured after each run
    jobs: int = 2  # runs at a time (one torch thread each)
    wandb: Literal["online", "offline", "disabled"] = "disabled"  # every run, grouped by study
    # what the base file held when this config was loaded: every run, check and reference row
    # starts from it (editing the file while the study runs changes none of them)
    base_config: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        check(bool(self.scenarios), "scenarios: give at least one")
        check(bool(self.arms), "arms: give at least one")
        check(len(self.seeds) >= 1, "seeds: give at least one")
        check(len(set(self.seeds)) == len(self.seeds), f"seeds: repeated in {self.seeds}")
        check(self.steps >= 1, f"steps: must be at least 1, got {self.steps}")
        check(self.jobs >= 1, f"jobs: must be at least 1, got {self.jobs}")
        for arm in self.evaluation.attribution_arms:
            check(
                arm in self.arms,
                f"evaluation.attribution_arms: unknown arm {arm!r}{closest(arm, list(self.arms))}",
            )
        check_folder_name(self.name, "name", "runs/benchmark/NAME and docs/results/NAME", "highway")
        for name in [*self.scenarios, *self.arms]:
            check(
                name[:1].isalpha() and name.replace("_", "").isalnum(),
                f"{name!r}: scenario and arm names are letters, digits and '_', starting with a "
                "letter",
            )
        self.overrides = flatten(self.overrides)
        self.arms = {arm: flatten(values) for arm, values in self.arms.items()}

    def run_name(self, scenario: str, arm: str, seed: int) -> str:
        """The run directory's name, ``<scenario>-<arm>-s<seed>``."""
        return f"{scenario}-{arm}-s{seed}"

    def run_overrides(self, scenario: str, arm: str, seed: int, runs_root: Path) -> dict[str, Any]:
        """The overrides of ``base`` that make one run: quiet logging, then the study's
        overrides, then the arm's, then what every run must share or owns (env id, budget, seed,
        run directory); later keys win."""
        return {
            "logging.wandb": self.wandb,
            "logging.tags": [scenario, arm, f"seed-{seed}"],
            "logging.video": False,
            "train.eval_every": 0,
            "train.final_eval_episodes": 0,
            "train.torch_threads": 1,
            **self.overrides,
            **self.arms[arm],
            "env.id": self.scenarios[scenario].train,
            "train.steps": self.steps,
            "train.seed": seed,
            "logging.root": str(runs_root),
            "logging.name": self.run_name(scenario, arm, seed),
            "logging.group": f"benchmark-{self.name}",  # W&B: the study's seeds and arms together
        }


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{algo: {n_epochs: 2}}`` -> ``{"algo.n_epochs": 2}``: an override sets one key, never a
    whole section."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    for key in out:
        check("." in key, f"override {key!r}: give section.key (e.g. model.name), not a section")
    return out


def arm_experiment(
    base: str | Path | Mapping[str, Any], overrides: Mapping[str, Any], arm: str
) -> ExperimentConfig:
    """One run's validated experiment (``base``: a YAML file, or one already read); errors name
    the arm."""
    try:
        return load_config(base, overrides)
    except ConfigError as err:
        raise ConfigError(f"arm {arm!r}: {err}") from None


def load_benchmark_config(
    path: str | Path,
    steps: int | None = None,
    seeds: Sequence[int] | None = None,
    wandb: str | None = None,
) -> BenchmarkConfig:
    """Read and validate a benchmark YAML and every run it implies (configs, env ids, models,
    attribution arms), before any work."""
    path = Path(path)
    raw = read_yaml(path, missing=f"--config {path}: no such file; see configs/benchmark/")
    if steps is not None:
        raw["steps"] = steps
    if seeds is not None:
        raw["seeds"] = list(seeds)
    if wandb is not None:
        raw["wandb"] = wandb
    raw.setdefault("name", path.stem)
    try:
        config = build(BenchmarkConfig, raw)
        config.base_config = read_yaml(
            config.base, missing=f"base: {config.base}: no such file; see configs/"
        )
        check_runs(config)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return config


def check_runs(config: BenchmarkConfig) -> None:
    """Every run's config, both env ids of every scenario, and every model, on the real spaces."""
    experiments = {
        (scenario, arm): arm_experiment(
            config.base_config,
            config.run_overrides(scenario, arm, seed, Path("runs")),
            arm,
        )
        for seed in config.seeds
        for scenario in config.scenarios
        for arm in config.arms
    }
    for scenario, spec in config.scenarios.items():
        first = experiments[(scenario, next(iter(config.arms)))]
        probes = {}
        for role, env_id in (("train", spec.train), ("reference", spec.reference)):
            try:
                probes[role] = probe_env(replace(first.env, id=env_id))
            except ConfigError as err:
                raise ConfigError(f"scenarios.{scenario}.{role}: {err}") from None
        check_same_observation(probes["train"], probes["reference"], spec.train, spec.reference)
        for arm in config.arms:
            experiment = experiments[(scenario, arm)]
            try:
                check_model(experiment, probes["train"])
            except ConfigError as err:
                raise ConfigError(f"arm {arm!r}: {err}") from None
            if arm in config.evaluation.attribution_arms:
                check(
                    experiment.model.has_attention,
                    f"evaluation.attribution_arms: arm {arm!r} uses model "
                    f"'{experiment.model.name}', which has no attention maps",
                )


def default_paths(config: BenchmarkConfig) -> tuple[Path, Path]:
    """(runs root, results folder) of a benchmark config."""
    return Path("runs") / "benchmark" / config.name, Path("docs") / "results" / config.name
