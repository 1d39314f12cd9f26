"""Experiment configuration: the typed schema of ``configs/*.yaml``.

An experiment has five sections, each one dataclass validated at construction::

    env:     EnvConfig        which scenario, how many parallel copies, the env's own kwargs
    model:   ExtractorConfig  the features extractor (schema owned by ``models``)
    algo:    PPOConfig | SACConfig, picked by ``algo.name``
    train:   TrainConfig      steps, seed, device, evaluation and checkpoint periods
    logging: LoggingConfig    run name, W&B mode and naming, videos

Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the key (and
the closest valid one) before any work starts: so do non-finite numbers (``.nan``, ``.inf``) in
any option, an ``env.id`` that is not one of this project's environments, a run name that
cannot be a folder name, and a size above its upper bound (:mod:`agent.run.limits`). ``env.kwargs``
is checked against the backend's typed options (:func:`envs.options`) when the config is built,
without making an env.

Reading experiment files, overrides and diffs live in :mod:`agent.run.config_files`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from drive_attention import envs
from drive_attention.agent.run import limits
from drive_attention.agent.run.engines import check_engine
from drive_attention.envs.configuration import ConfigError, build, check, closest
from drive_attention.envs.observation import ObservationOptions
from drive_attention.models import ExtractorConfig

__all__ = [
    "SECTIONS",
    "AlgoConfig",
    "ConfigError",
    "EnvConfig",
    "ExperimentConfig",
    "LoggingConfig",
    "PPOConfig",
    "SACConfig",
    "TrainConfig",
    "check_env_id",
    "check_folder_name",
    "resolve_config",
]

SECTIONS: tuple[str, ...] = ("env", "model", "algo", "train", "logging")
NAME_MAX = 100  # characters of a run name (a folder name; file systems allow 255 bytes)
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_INT64_MAX = 2**63 - 1
SEED_MAX = 2**31 - 1  # numpy seeds are 32-bit; the margin leaves room for seed + env index
# keyword arguments of gymnasium.make itself: in env.kwargs they would never reach the env
_GYM_MAKE_KWARGS = {
    "render_mode": "the training and evaluation code set the render mode; remove it",
    "max_episode_steps": "an option of gymnasium.make, not of this project's envs; set the "
    "episode length with env.kwargs.duration (seconds)",
    "disable_env_checker": "an option of gymnasium.make, not of this project's envs; remove it",
}


def _check_finite(config: Any) -> None:
    """Refuse ``.nan`` and ``.inf`` in every float option of the dataclass ``config``: none of
    this schema's numbers means anything when not finite (call first in ``__post_init__``)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            default = f.default
            hint = (
                f" (the default is {default})"
                if isinstance(default, (int, float)) and not isinstance(default, bool)
                else ""
            )
            raise ConfigError(
                f"{f.name}: must be a finite number, got {value}; give a number{hint}"
            )


def project_env_ids() -> list[str]:
    """The Gymnasium ids this project registers (``import envs``), in a fixed order."""
    return [*envs.HIGHWAY_IDS, *envs.BATCHED_IDS, envs.CARLA_ID]


def check_folder_name(name: Any, key: str, folder: str, example: str) -> None:
    """A name that becomes one folder (a run's, a study's, a sweep's): at most :data:`NAME_MAX`
    characters of letters, digits, '-', '_' or '.', starting with a letter or digit, so that it
    never reaches outside its parent (``..``, ``/``) or hides (``.name``)."""
    text = str(name)
    shown = repr(name) if len(text) <= 40 else f"{text[:40]!r}... ({len(text)} characters)"
    check(
        isinstance(name, str) and len(name) <= NAME_MAX and bool(_NAME_PATTERN.fullmatch(name)),
        f"{key}: {shown} must be at most {NAME_MAX} characters of letters, digits, '-', '_' or "
        f"'.', starting with a letter or digit (it names the folder {folder}); e.g. {example}",
    )


def check_env_id(env_id: Any, key: str = "env.id") -> None:
    """Refuse an id that is not one of this project's environments (:func:`project_env_ids`).

    Any other registered id lacks the camera + sensors observation the agent needs, and the
    ``module:Env-v0`` form would make Gymnasium import ``module`` (running its code) before it
    even looks the id up; this check runs first, so nothing is imported.
    """
    ids = project_env_ids()
    if env_id in ids:
        return
    text = str(env_id)
    hint = _closest_env_id(text, ids)
    allowed = ", ".join(ids)
    if ":" in text:
        module = text.rsplit(":", 1)[0]
        raise ConfigError(
            f"{key}: {text!r} asks Gymnasium to import the module {module!r} first, which this "
            f"project never does; give the id alone{hint}, one of: {allowed}"
        )
    raise ConfigError(
        f"{key}: {text!r} is not an environment of this project{hint}; give one of: {allowed}"
    )


def _closest_env_id(text: str, ids: list[str]) -> str:
    """' (did you mean X?)': by the whole id, else by the name after '/' and ':' in any case
    (``highway-v0``, ``merge``, ``envs:DriveAttention/Highway-v0``)."""
    hint = closest(text, ids)
    if hint:
        return hint
    short = {i.rsplit("/", 1)[-1].lower(): i for i in ids}
    name = text.rsplit(":", 1)[-1].rsplit("/", 1)[-1].lower()
    match = difflib.get_close_matches(name, list(short), n=1, cutoff=0.5)
    return f" (did you mean '{short[match[0]]}'?)" if match else ""


@dataclass
class EnvConfig:
    """The training environment: a registered Gymnasium id and its keyword arguments."""

    id: str = "DriveAttention/Highway-v0"
    n_envs: int = 2  # parallel copies; > 1 runs them in subprocesses
    kwargs: dict[str, Any] = field(default_factory=dict)  # the backend's typed options
    start_method: Literal["forkserver", "fork", "spawn"] = "forkserver"
    normalize_sensors: bool = False  # running mean/std of the sensor vector (VecNormalize)
    normalize_reward: bool = False  # running return scaling (VecNormalize)

    def __post_init__(self) -> None:
        _check_finite(self)
        check(self.n_envs >= 1, f"n_envs: must be at least 1, got {self.n_envs}")
        check_env_id(self.id)
        limits.check_n_envs("n_envs", self.n_envs, batched=self.id in envs.BATCHED_IDS)
        self._check_kwargs_keys()

    @property
    def options(self) -> ObservationOptions:
        """The backend's typed options these ``kwargs`` give (defaults filled in)."""
        return envs.options(self.id, self.kwargs, prefix="env.kwargs.")

    def _check_kwargs_keys(self) -> None:
        """Keys of ``kwargs`` that would not reach the env, or contradict ``id``/``n_envs``; then
        every option, against the backend's typed options (:func:`envs.options`)."""
        for key, why in _GYM_MAKE_KWARGS.items():
            check(key not in self.kwargs, f"env.kwargs.{key}: {why}")
        scenarios = {**envs.HIGHWAY_IDS, **envs.BATCHED_IDS}
        if self.id in scenarios and "scenario" in self.kwargs:
            same = envs.BATCHED_IDS if self.id in envs.BATCHED_IDS else envs.HIGHWAY_IDS
            wanted = [i for i, s in same.items() if s == self.kwargs["scenario"]]
            hint = f"use env.id={wanted[0]}" if wanted else f"use one of {', '.join(same)}"
            raise ConfigError(
                f"env.kwargs.scenario: the scenario comes from env.id ({self.id}); remove it and "
                f"{hint}"
            )
        if self.id in envs.BATCHED_IDS and "num_envs" in self.kwargs:
            raise ConfigError(
                "env.kwargs.num_envs: the number of environments is env.n_envs; remove it and set "
                f"env.n_envs={self.kwargs['num_envs']}"
            )
        # checked against the backend's typed options without making an env: a bad key is
        # named with the closest valid one, a bad value with its range or the backend's reason
        self.options  # noqa: B018  (built to be checked)


@dataclass
class PPOConfig:
    """Proximal Policy Optimisation (stable-baselines3 ``PPO``); discrete or continuous actions."""

    name: Literal["ppo"] = "ppo"
    learning_rate: float = 3.0e-4
    lr_schedule: Literal["constant", "linear"] = "constant"  # linear: decays to 0 at train.steps
    n_steps: int = 128  # rollout length per env
    batch_size: int = 64
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    net_arch: list[int] = field(default_factory=lambda: [64, 64])  # policy and value heads

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_common(self.learning_rate, self.gamma, self.net_arch)
        check(self.n_steps >= 1, f"n_steps: must be at least 1, got {self.n_steps}")
        check(self.batch_size >= 2, f"batch_size: must be at least 2, got {self.batch_size}")
        limits.check_ppo_sizes(self.n_steps, self.batch_size)
        check(self.n_epochs >= 1, f"n_epochs: must be at least 1, got {self.n_epochs}")
        check(
            0.0 <= self.gae_lambda <= 1.0, f"gae_lambda: must be in [0, 1], got {self.gae_lambda}"
        )
        check(self.clip_range > 0.0, f"clip_range: must be positive, got {self.clip_range}")
        check(self.ent_coef >= 0.0, f"ent_coef: must be >= 0, got {self.ent_coef}")
        check(self.vf_coef >= 0.0, f"vf_coef: must be >= 0, got {self.vf_coef}")
        check(
            self.max_grad_norm > 0.0, f"max_grad_norm: must be positive, got {self.max_grad_norm}"
        )
        check(
            self.target_kl is None or self.target_kl > 0.0,
            f"target_kl: must be positive or null, got {self.target_kl}",
        )


@dataclass
class SACConfig:
    """Soft Actor-Critic (stable-baselines3 ``SAC``); needs ``env.kwargs.action: continuous``."""

    name: Literal["sac"] = "sac"
    learning_rate: float = 3.0e-4
    lr_schedule: Literal["constant", "linear"] = "constant"  # linear: decays to 0 at train.steps
    buffer_size: int = 50_000  # transitions kept (camera frames are stored as uint8)
    learning_starts: int = 1_000
    batch_size: int = 128
    tau: float = 0.005
    gamma: float = 0.99
    train_freq: int = 1  # env steps (per env) between updates
    gradient_steps: int = 1
    # "auto", "auto_<initial>" or a fixed number (float first: a bad number is named as one)
    ent_coef: float | str = "auto"
    net_arch: list[int] = field(default_factory=lambda: [256, 256])

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_common(self.learning_rate, self.gamma, self.net_arch)
        check(self.buffer_size >= 1, f"buffer_size: must be at least 1, got {self.buffer_size}")
        check(
            self.learning_starts >= 0, f"learning_starts: must be >= 0, got {self.learning_starts}"
        )
        check(self.batch_size >= 1, f"batch_size: must be at least 1, got {self.batch_size}")
        limits.check_sac_sizes(self.buffer_size, self.batch_size)
        check(0.0 < self.tau <= 1.0, f"tau: must be in (0, 1], got {self.tau}")
        check(self.train_freq >= 1, f"train_freq: must be at least 1, got {self.train_freq}")
        check(self.gradient_steps >= 1, f"gradient_steps: must be >= 1, got {self.gradient_steps}")
        if isinstance(self.ent_coef, str):
            check(
                self.ent_coef == "auto" or self.ent_coef.startswith("auto_"),
                f"ent_coef: expected 'auto', 'auto_<initial>' or a number, got {self.ent_coef!r}",
            )
        else:
            check(self.ent_coef > 0.0, f"ent_coef: must be positive, got {self.ent_coef}")


AlgoConfig = PPOConfig | SACConfig
ALGO_CONFIGS: dict[str, type[PPOConfig] | type[SACConfig]] = {"ppo": PPOConfig, "sac": SACConfig}


def _check_common(learning_rate: float, gamma: float, net_arch: Sequence[int]) -> None:
    check(learning_rate > 0.0, f"learning_rate: must be positive, got {learning_rate}")
    check(0.0 < gamma <= 1.0, f"gamma: must be in (0, 1], got {gamma}")
    check(all(n >= 1 for n in net_arch), f"net_arch: layer sizes must be >= 1, got {net_arch}")
    limits.check_net_arch(list(net_arch))


@dataclass
class TrainConfig:
    """How long to train, on what device, and how often to evaluate and checkpoint."""

    steps: int = 50_000  # total environment steps (summed over parallel envs)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available, else CPU
    torch_threads: int = 0  # intra-op threads of the learner; 0 keeps torch's default
    eval_every: int = 10_000  # [env steps]; 0 turns periodic evaluation off
    eval_episodes: int = 5
    eval_seed: int = 1_000  # evaluation episodes use seeds eval_seed, eval_seed + 1, ...
    checkpoint_every: int = 10_000  # [env steps]; 0 keeps only the final checkpoint
    final_eval_episodes: int = 20  # trained vs random vs idle at the end; 0 skips it
    # env id of the periodic and final evaluations (same env.kwargs); None: env.id. A run on the
    # batched simulator is judged on the highway-env reference with DriveAttention/Highway-v0.
    eval_env: str | None = None
    engine: Literal["sb3", "device"] = "sb3"  # the training loop: agent.run.engines

    def __post_init__(self) -> None:
        _check_finite(self)
        check(self.steps >= 1, f"steps: must be at least 1, got {self.steps}")
        for name in ("seed", "eval_seed"):
            value = getattr(self, name)
            check(
                0 <= value <= SEED_MAX,
                f"{name}: must be in [0, {SEED_MAX}] (numpy takes non-negative 32-bit seeds), "
                f"got {value}",
            )
        check(self.torch_threads >= 0, f"torch_threads: must be >= 0, got {self.torch_threads}")
        check(self.eval_every >= 0, f"eval_every: must be >= 0 (0 = off), got {self.eval_every}")
        check(
            self.eval_episodes >= 1, f"eval_episodes: must be at least 1, got {self.eval_episodes}"
        )
        for key in ("eval_episodes", "final_eval_episodes"):
            limits.check_episodes(key, getattr(self, key))
        check(
            self.checkpoint_every >= 0,
            f"checkpoint_every: must be >= 0 (0 = only at the end), got {self.checkpoint_every}",
        )
        check(
            self.final_eval_episodes >= 0,
            f"final_eval_episodes: must be >= 0 (0 = skip), got {self.final_eval_episodes}",
        )
        if self.eval_env is not None:
            check_env_id(self.eval_env, key="train.eval_env")


@dataclass
class LoggingConfig:
    """Where the run lives and how it reports: ``<root>/<name>/`` and Weights & Biases."""

    name: str | None = None  # run name; default: <config file stem>-<date>-<time>
    root: str = "runs"
    wandb: Literal["online", "offline", "disabled"] = "online"  # online falls back to offline
    project: str = "drive-attention"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    system_metrics: bool = True  # W&B samples CPU, memory and GPU use alongside the run
    video: bool = True  # an attention video at every evaluation
    video_fps: int = 15
    video_scale: int = 8  # the scene is drawn at video_scale x the camera size (at least 256 px)

    def __post_init__(self) -> None:
        _check_finite(self)
        if self.name is not None:
            check_folder_name(self.name, "name", f"{self.root}/NAME", "--name highway-ppo-1")
        check(self.video_fps >= 1, f"video_fps: must be at least 1, got {self.video_fps}")
        check(
            1 <= self.video_scale <= 16, f"video_scale: must be in [1, 16], got {self.video_scale}"
        )


@dataclass
class ExperimentConfig:
    """One experiment: every section resolved and validated."""

    env: EnvConfig
    model: Any  # models.ExtractorConfig
    algo: AlgoConfig
    train: TrainConfig
    logging: LoggingConfig

    def __post_init__(self) -> None:
        check_engine(self.train.engine, self.env.id, self.algo.name)
        if self.algo.name == "sac":
            check(
                self.env.options.action == "continuous",
                "algo.name: sac needs continuous actions; set env.kwargs.action=continuous "
                "or use algo.name=ppo",
            )
        if self.algo.name == "ppo":
            limits.check_rollout(self.algo.n_steps, self.env.n_envs)
            rollout = self.algo.n_steps * self.env.n_envs
            check(
                self.algo.batch_size <= rollout,
                f"algo.batch_size: {self.algo.batch_size} is larger than one rollout "
                f"(algo.n_steps * env.n_envs = {rollout}); lower algo.batch_size or raise "
                "algo.n_steps",
            )


def resolve_config(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a plain nested mapping (a parsed YAML file)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"a config must be a mapping of sections {SECTIONS}, got {type(raw).__name__}"
        )
    for key in raw:
        if key not in SECTIONS:
            hint = closest(str(key), SECTIONS)
            raise ConfigError(f"unknown section '{key}'{hint}; allowed: {', '.join(SECTIONS)}")
    raw = _read_exponent_floats(raw)
    _check_integer_sizes(raw)
    sections = {name: raw.get(name) or {} for name in SECTIONS}
    for name, value in sections.items():
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping of options, got {value!r}")

    algo_raw = dict(sections["algo"])
    algo_name = algo_raw.get("name", "ppo")
    if algo_name not in ALGO_CONFIGS:
        hint = closest(str(algo_name), list(ALGO_CONFIGS))
        raise ConfigError(
            f"algo.name: {algo_name!r} is not allowed{hint}; use one of {', '.join(ALGO_CONFIGS)}"
        )
    try:
        algo = build(ALGO_CONFIGS[algo_name], algo_raw, prefix="algo.")
    except ConfigError as err:
        if "unknown option" in str(err):
            raise ConfigError(f"{err} (options of algo.name={algo_name})") from None
        raise

    return ExperimentConfig(
        env=build(EnvConfig, sections["env"], prefix="env."),
        model=build(ExtractorConfig, sections["model"], prefix="model."),
        algo=algo,
        train=build(TrainConfig, sections["train"], prefix="train."),
        logging=build(LoggingConfig, sections["logging"], prefix="logging."),
    )


def _read_exponent_floats(value: Any) -> Any:
    """YAML 1.1 reads ``5e-4`` (no dot) as a string; read such strings as numbers."""
    if isinstance(value, Mapping):
        return {k: _read_exponent_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_read_exponent_floats(v) for v in value]
    if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
        return float(value)
    return value


def _check_integer_sizes(value: Any, key: str = "") -> None:
    """Refuse integers beyond 64 bits anywhere (``env.kwargs`` too): no option means them, and
    they overflow when read as a float or handed to numpy and torch."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_integer_sizes(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_integer_sizes(v, f"{key}[{i}]")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > _INT64_MAX:
        digits = len(str(abs(value)))
        raise ConfigError(
            f"{key}: a {digits}-digit number is too large; numbers must fit in 64 bits "
            f"(at most {_INT64_MAX})"
        )
