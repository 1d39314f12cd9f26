"""Experiment configuration: the typed schema of ``configs/*.yaml`` and its overrides.

An experiment has five sections, each one dataclass validated at construction::

    env:     EnvConfig        which scenario, how many parallel copies, the env's own kwargs
    model:   ExtractorConfig  the features extractor (schema owned by ``models``)
    algo:    PPOConfig | SACConfig, picked by ``algo.name``
    train:   TrainConfig      steps, seed, device, evaluation and checkpoint periods
    logging: LoggingConfig    run name, W&B mode and naming, videos

Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the key (and
the closest valid one) before any work starts: so do non-finite numbers (``.nan``, ``.inf``) in
any option, an ``env.id`` that is not one of this project's environments, and a run name that
cannot be a folder name. ``env.kwargs`` is checked by the environment itself (see
:func:`agent.build.probe_env`).

Overrides set one dotted key each, given either as data (``{"algo.n_epochs": 2}``: values kept as
they are) or as command-line items (``["algo.n_epochs=2"]``: values read as YAML).
:func:`read_yaml` is the one reader of YAML files (experiments, run directories, benchmarks); it
refuses binary files and a key given twice in one mapping (plain YAML keeps the last silently).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from agent.files import write_text
from envs.configuration import ConfigError, build, check, closest

__all__ = [
    "SECTIONS",
    "AlgoConfig",
    "ConfigError",
    "EnvConfig",
    "ExperimentConfig",
    "LoggingConfig",
    "Overrides",
    "PPOConfig",
    "SACConfig",
    "TrainConfig",
    "apply_overrides",
    "check_env_id",
    "config_diff",
    "load_config",
    "parse_overrides",
    "read_yaml",
    "resolve_config",
    "save_config",
    "to_dict",
]

SECTIONS: tuple[str, ...] = ("env", "model", "algo", "train", "logging")
NAME_MAX = 100  # characters of a run name (a folder name; file systems allow 255 bytes)
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_INT64_MAX = 2**63 - 1
SEED_MAX = 2**31 - 1  # numpy seeds are 32-bit; the margin leaves room for seed + env index
MAX_CONFIG_BYTES = 16 * 2**20  # a YAML experiment is a few kB; anything this large is not one
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
    import envs

    return [*envs.HIGHWAY_IDS, *envs.BATCHED_IDS, envs.CARLA_ID]


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
        self._check_kwargs_keys()

    def _check_kwargs_keys(self) -> None:
        """Keys of ``kwargs`` that would not reach the env, or contradict ``id``/``n_envs``."""
        import envs

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
        envs.options(self.id, self.kwargs, prefix="env.kwargs.")


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
    video_fps: int = 8
    video_scale: int = 4  # the scene is drawn at video_scale x the camera size (at least 256 px)

    def __post_init__(self) -> None:
        _check_finite(self)
        if self.name is not None:
            shown = repr(self.name)
            if len(self.name) > 40:
                shown = f"{self.name[:40]!r}... ({len(self.name)} characters)"
            check(
                len(self.name) <= NAME_MAX and bool(_NAME_PATTERN.fullmatch(self.name)),
                f"name: {shown} must be at most {NAME_MAX} characters of letters, digits, '-', "
                f"'_' or '.', starting with a letter or digit (it names the folder "
                f"{self.root}/NAME); e.g. --name highway-ppo-1",
            )
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
        action = self.env.kwargs.get("action", "discrete")
        if self.algo.name == "sac":
            check(
                action == "continuous",
                "algo.name: sac needs continuous actions; set env.kwargs.action=continuous "
                "or use algo.name=ppo",
            )
        if self.algo.name == "ppo":
            rollout = self.algo.n_steps * self.env.n_envs
            check(
                self.algo.batch_size <= rollout,
                f"algo.batch_size: {self.algo.batch_size} is larger than one rollout "
                f"(algo.n_steps * env.n_envs = {rollout}); lower algo.batch_size or raise "
                "algo.n_steps",
            )


def _extractor_config_class() -> type:
    from models import ExtractorConfig

    return ExtractorConfig


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
        model=build(_extractor_config_class(), sections["model"], prefix="model."),
        algo=algo,
        train=build(TrainConfig, sections["train"], prefix="train."),
        logging=build(LoggingConfig, sections["logging"], prefix="logging."),
    )


Overrides = Mapping[str, Any] | Sequence[str]
"""``{"section.key": value}`` (data, values kept as they are) or ``["section.key=value", ...]``
(command-line items, values read as YAML); later keys win."""


def parse_overrides(overrides: Overrides) -> list[tuple[list[str], Any]]:
    """``(key path, value)`` of each override. Command-line items ``key.sub=value`` have their
    values read as YAML (``3``, ``true``, ``[64, 64]``); a mapping's values are taken as given."""
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    elif isinstance(overrides, str):
        raise ConfigError(
            f"overrides: expected a list of section.key=value items, got {overrides!r}"
        )
    else:
        items = [_parse_item(item) for item in overrides]
    parsed = []
    for key, value in items:
        path = str(key).split(".")
        if not key or any(not part for part in path):
            raise ConfigError(f"override {key!r}: give section.key (e.g. model.layers)")
        parsed.append((path, value))
    return parsed


def _parse_item(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"override {item!r} must look like section.key=value, e.g. model.layers=3"
        )
    try:
        value = _load_yaml(text) if text.strip() else None
    except _DuplicateKey as err:
        raise ConfigError(f"{key}: in {text!r}, {err.describe()}") from None
    except (yaml.YAMLError, RecursionError) as err:
        raise ConfigError(f"{key}: cannot read value {text!r} ({err.__class__.__name__})") from None
    return key, value


def apply_overrides(raw: Mapping[str, Any], overrides: Overrides) -> dict[str, Any]:
    """A deep copy of ``raw`` with each override set (see :data:`Overrides`)."""
    out: dict[str, Any] = _deep_copy(raw)
    for path, value in parse_overrides(overrides):
        node = out
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(
                    f"{'.'.join(path)}: cannot set a sub-key of {where}, which is {child!r}"
                )
            node = child
        node[path[-1]] = _deep_copy(value)
    return out


class _DuplicateKey(yaml.YAMLError):
    """A key given twice in one YAML mapping."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(f"key {key!r} appears twice")
        self.key, self.first, self.again = key, first, again

    def describe(self) -> str:
        return (
            f"line {self.again.line + 1}: key {self.key!r} appears twice in the same mapping "
            f"(first at line {self.first.line + 1}); keep one of them"
        )


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain YAML loading
    keeps the last one silently). Merge keys (``<<: *base``) still override what they merge."""

    def construct_document(self, node: yaml.Node) -> Any:
        self._check_duplicate_keys(node)
        return super().construct_document(node)

    def _check_duplicate_keys(self, root: yaml.Node) -> None:
        # on the composed nodes, before merge keys are flattened into their mappings
        stack, visited = [root], set()
        while stack:
            node = stack.pop()
            if id(node) in visited:  # an alias: already checked (or a cycle)
                continue
            visited.add(id(node))
            if isinstance(node, yaml.SequenceNode):
                stack.extend(reversed(node.value))
            elif isinstance(node, yaml.MappingNode):
                seen: dict[Any, yaml.Node] = {}
                for key_node, value_node in node.value:
                    stack.append(value_node)
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                        continue
                    key = self.construct_object(key_node)
                    if key in seen:
                        raise _DuplicateKey(key, seen[key].start_mark, key_node.start_mark)
                    seen[key] = key_node


def _load_yaml(source: str | bytes) -> Any:
    return yaml.load(source, Loader=_StrictLoader)  # a SafeLoader: plain data only


def _check_acyclic(value: Any, where: str, active: frozenset[int] = frozenset()) -> None:
    """Refuse a YAML alias that contains itself (``a: &x [*x]``), which has no end."""
    if isinstance(value, (Mapping, list)):
        if id(value) in active:
            raise ConfigError(
                f"{where}: a YAML alias (*name) refers to the anchor (&name) it is inside of; "
                "copy the values out instead"
            )
        inner = active | {id(value)}
        for item in value.values() if isinstance(value, Mapping) else value:
            _check_acyclic(item, where, inner)


def read_yaml(path: str | Path, missing: str | None = None) -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file holds an empty one).

    Raises :class:`ConfigError` when the file does not exist (with the message ``missing``, which
    should say what to do, or a generic one), is a folder, cannot be read, is not text (a binary
    file), is not valid YAML, gives a key twice in one mapping, or holds no mapping.
    """
    path = Path(path)
    example = "a YAML experiment such as configs/default.yaml"
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.yaml"))[:5]
        inside = f" (it holds {', '.join(found)})" if found else ""
        raise ConfigError(f"{path}: is a folder, not a YAML file{inside}; give {example}")
    if not path.is_file():
        if path.exists():
            raise ConfigError(f"{path}: not a regular file; give {example}")
        raise ConfigError(missing or f"{path}: no such file")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: {size / 2**20:.0f} MiB is far too large for a YAML settings file; "
                f"give {example}"
            )
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"{path}: cannot be read ({err.strerror or err}); check that it is a file you may read"
        ) from None
    try:
        raw = _load_yaml(data)  # bytes: PyYAML reads UTF-8, or UTF-16/32 with a byte-order mark
    except yaml.reader.ReaderError as err:
        what = (
            f"byte {err.character:#04x} at position {err.position} is not {err.encoding} text"
            if isinstance(err.character, int)
            else f"it holds the control character #x{ord(err.character):04x} at position "
            f"{err.position}"
        )
        raise ConfigError(
            f"{path}: not a YAML text file ({what}; is it a binary file?); give {example}"
        ) from None
    except _DuplicateKey as err:
        raise ConfigError(f"{path}: {err.describe()}") from None
    except yaml.YAMLError as err:
        raise ConfigError(
            f"{path}: not valid YAML; fix it at the line and column named here: {err}"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{path}: nested too deeply to be a settings file; give {example}"
        ) from None
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping of settings (key: value lines, e.g. 'train:' then "
            f"'  steps: 1000'), got a {type(raw).__name__}; see {example}"
        )
    _check_acyclic(raw, str(path))
    return dict(raw)


def load_config(
    path: str | Path | Mapping[str, Any], overrides: Overrides = ()
) -> ExperimentConfig:
    """Read a YAML experiment (or take one already read: a study reads its base once), apply
    overrides and validate everything."""
    if isinstance(path, Mapping):
        raw = dict(path)  # apply_overrides copies it before changing anything
    else:
        raw = read_yaml(
            path, missing=f"config file {path} does not exist; see configs/ for the experiments"
        )
    return resolve_config(apply_overrides(raw, overrides))


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain YAML/JSON data (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config, every option spelled out, as YAML (atomically, never through
    a symbolic link)."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None)
    write_text(path, "# Resolved configuration of this run (written by scripts/train.py)\n" + text)


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs, as ``key: a -> b`` lines."""
    lines = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            lines += config_diff(va, vb, f"{prefix}{key}.")
        elif _plain(va) != _plain(vb):
            lines.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return lines


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


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
