"""Load a trained agent from a run directory or checkpoint, for evaluation (no training state).

A config read from a checkpoint or a run folder is data someone else may have written: it is
validated like a user's config (:func:`agent.run.config.resolve_config`), and its ``env.id`` must be
one of this project's registered ids (:func:`check_env_id`) before any environment is made, so
that a crafted ``module:Env-v0`` id never makes Gymnasium import a module.

An SB3 model zip (``model.save``, or ``scripts/export.py --format sb3``) is loaded only with
``allow_pickle=True`` (``evaluate.py --allow-pickle``): SB3 unpickles it, which can execute code
from the file. Its env comes from, in order: the drive-attention config a zip exported here
carries (plain JSON, read before anything is unpickled), the ``--run`` folder's config, or
``--env ID`` with default options; ``--env`` always picks the id. The zip's observation space
must match that env's (:func:`load_sb3_zip`).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import sys
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gymnasium import spaces
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import drive_attention
from drive_attention import models
from drive_attention.agent.policies.base import TrainedPolicy
from drive_attention.agent.run.algo_state import restore_algo_state, restore_vec_normalize
from drive_attention.agent.run.build import (
    EnvFactory,
    EnvSpec,
    make_algo,
    probe_env,
    resolve_device,
    wrap_normalize,
)
from drive_attention.agent.run.checkpoint import (
    Checkpoint,
    CheckpointError,
    is_sb3_zip,
    load_checkpoint,
)
from drive_attention.agent.run.config import (
    ConfigError,
    ExperimentConfig,
    check_env_id,
    resolve_config,
)
from drive_attention.agent.run.config_files import read_yaml, to_dict
from drive_attention.agent.run.rundir import RunDir
from drive_attention.envs import EXPORT_KEY
from drive_attention.models.extractors import EXTRACTOR_CLASSES, as_config

ZIP_KEY = EXPORT_KEY  # the attribute saved in an exported zip's data: JSON of config, step, stats


@dataclass
class LoadedAgent:
    """A trained policy ready to act, with the config and checkpoint it came from."""

    config: ExperimentConfig
    checkpoint: Checkpoint
    spec: EnvSpec  # of the env it will be evaluated on
    model: Any
    policy: TrainedPolicy
    source: str = "the run's model"  # what the policy is, for messages ("--attention: ...")


def run_config(run: RunDir) -> ExperimentConfig:
    """The resolved config saved in a run directory, validated (env id included)."""
    missing = f"{run.path} has no config.yaml; is it a run directory (runs/<name>)?"
    try:
        config = resolve_config(read_yaml(run.config, missing=missing))
    except ConfigError as err:
        raise ConfigError(
            f"{run.config}: invalid run config ({err}); fix the file or use the run's "
            "checkpoint with --checkpoint"
        ) from None
    check_env_id(config.env.id, key=f"{run.config}: env.id")
    return config


def with_env(config: ExperimentConfig, env_id: str | None) -> ExperimentConfig:
    """``config`` evaluated on another registered env id (same env kwargs)."""
    if env_id is None or env_id == config.env.id:
        return config
    check_env_id(env_id, key="--env")
    return replace(config, env=replace(config.env, id=env_id))


def checkpoint_config(ckpt: Checkpoint) -> ExperimentConfig:
    """The config saved in ``ckpt``, validated; one that is invalid here is a CheckpointError."""
    try:
        config = resolve_config(ckpt.config)
        check_env_id(config.env.id, key="checkpoint env.id")
    except ConfigError as err:
        raise CheckpointError(
            f"{ckpt.path}: the config stored in the checkpoint is invalid here: {err}"
        ) from None
    return config


def restore_model(
    config: ExperimentConfig, spec: EnvSpec, ckpt: Checkpoint, device: str = "cpu"
) -> tuple[Any, VecNormalize | None]:
    """The SB3 algorithm ``config`` builds, holding ``ckpt``'s state (weights, optimizers,
    counters; no replay buffer), and its observation statistics (``training`` off); the env it
    was built on is closed."""
    venv = wrap_normalize(
        DummyVecEnv([EnvFactory(config.env.id, dict(config.env.kwargs))]),
        config.env,
        config.algo.gamma,
    )
    vec_normalize = venv if isinstance(venv, VecNormalize) else None
    if vec_normalize is not None:
        vec_normalize.training = False  # evaluation: the statistics stay as trained
    try:
        with warnings.catch_warnings():  # n_steps x 1 env here is not the training's batch
            warnings.filterwarnings("ignore", message="You have specified a mini-batch size")
            model = make_algo(config, venv, spec, resolve_device(device), inference_only=True)
        restore_algo_state(model, ckpt.state, vec_normalize)
    finally:
        venv.close()
    return model, vec_normalize


def load_agent(
    run_dir: str | Path | None,
    checkpoint: str | Path | None = None,
    env_id: str | None = None,
    device: str = "auto",
    allow_pickle: bool = False,
) -> LoadedAgent:
    """Build the policy of a checkpoint (default: the run's latest) and load its weights.

    The model is built from the config stored *in the checkpoint*, so the weights always fit;
    ``env_id`` evaluates it on another scenario, which must give the same observation layout.
    ``allow_pickle``: also accept an SB3 model zip (:func:`load_sb3_zip`); without it a zip is
    refused, saying so.
    """
    if allow_pickle and checkpoint is not None and is_sb3_zip(checkpoint):
        return load_sb3_zip(Path(checkpoint), run_dir, env_id, device)
    if checkpoint is None:
        if run_dir is None:
            raise CheckpointError("give --run runs/<name> or --checkpoint PATH")
        run = RunDir(Path(run_dir))
        checkpoint = run.latest_checkpoint()
        if checkpoint is None:
            raise CheckpointError(
                f"no checkpoint in {run.checkpoints}; train first or pass --checkpoint"
            )
    ckpt = load_checkpoint(checkpoint)
    trained_config = checkpoint_config(ckpt)
    config = with_env(trained_config, env_id)
    spec = probe_env(config.env)
    if config is not trained_config:
        check_same_observation(
            probe_env(trained_config.env), spec, trained_config.env.id, config.env.id
        )

    model, vec_normalize = restore_model(config, spec, ckpt, device)
    normalize = (
        vec_normalize.normalize_obs
        if vec_normalize is not None and vec_normalize.norm_obs
        else None
    )
    source = f"the run's model '{config.model.name}'"
    return LoadedAgent(config, ckpt, spec, model, TrainedPolicy(model, normalize), source)


def _zip_config(
    path: Path, embedded: dict[str, Any] | None, run_dir: str | Path | None, env_id: str | None
) -> ExperimentConfig:
    """The experiment config an SB3 zip is evaluated with (see the module docstring)."""
    if embedded is not None:
        try:
            config = resolve_config(embedded["config"])
            check_env_id(config.env.id, key=f"{path}: env.id")
        except (ConfigError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"{path}: the drive-attention config stored in the zip is invalid here: {err}"
            ) from None
    elif run_dir is not None:
        config = run_config(RunDir(Path(run_dir)))
    elif env_id is not None:
        check_env_id(env_id, key="--env")
        config = resolve_config({"env": {"id": env_id}})
    else:
        raise ConfigError(
            f"{path} is an SB3 zip that names no env (it was not exported by scripts/export.py): "
            "give --env ID (evaluated with that env's default options) or --run runs/<name> "
            "(that run's env config)"
        )
    return with_env(config, env_id)


def _check_zip_spaces(path: Path, model: Any, spec: EnvSpec, env_id: str) -> None:
    """The zip's policy must take the env's observation and give its kind of action."""
    space = model.observation_space
    problems = []
    if not isinstance(space, spaces.Dict) or set(space.spaces) != {"camera", "sensors"}:
        problems.append(f"observation {space} is not Dict(camera, sensors)")
    else:
        h, w, c = spec.observation_space["camera"].shape
        if tuple(space["camera"].shape) not in ((h, w, c), (c, h, w)):
            problems.append(f"camera {tuple(space['camera'].shape)} vs {(h, w, c)}")
        if space["sensors"].shape != spec.observation_space["sensors"].shape:
            problems.append(
                f"sensors {space['sensors'].shape} vs {spec.observation_space['sensors'].shape}"
            )
    action = model.action_space
    if type(action) is not type(spec.action_space) or getattr(action, "shape", None) != getattr(
        spec.action_space, "shape", None
    ):
        problems.append(f"action space {action} vs {spec.action_space}")
    if problems:
        raise ConfigError(
            f"{path}: the zip's policy does not fit {env_id} ({'; '.join(problems)}); evaluate it "
            "on the env it was trained on (--env ID, or --run with that run's config)"
        )


def read_zip_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON ``data`` entry of an SB3 zip, read without unpickling anything.

    Serialised (pickled) entries stay base64 text inside it: only plain keys (``n_epochs``,
    ``tau``, :data:`ZIP_KEY`, ...) are meaningful here.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("data").decode())
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as err:
        raise CheckpointError(
            f"{path} is not an SB3 zip (no readable 'data' entry: {err})"
        ) from None


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``envs.x`` (an old top-level name) as the module ``drive_attention.envs.x``
    itself: the same module object, never a second copy of it."""

    def __init__(self, roots: set[str]) -> None:
        self.roots = roots
        self.specs: dict[str, Any] = {}  # each module's own spec, by its real name

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.split(".")[0] not in self.roots:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: Any) -> Any:
        module = importlib.import_module(f"drive_attention.{spec.name}")
        self.specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: Any) -> None:
        # the import system gave the module this finder's spec: give it back its own
        module.__spec__ = self.specs[module.__name__]


@contextmanager
def old_module_names() -> Iterator[None]:
    """While a zip is unpickled, the package's old top-level names (``models.extractors``, as
    zips exported before the package was imported as ``drive_attention`` name its classes)
    stand for its modules; a name the process already has (a user's own ``models``) is left
    alone, and nothing stays claimed afterwards."""
    roots = {part for part in drive_attention.PARTS if part not in sys.modules}
    finder = _OldNames(roots)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.split(".")[0] in roots]:
            del sys.modules[name]


def load_sb3_zip(
    path: Path,
    run_dir: str | Path | None = None,
    env_id: str | None = None,
    device: str = "auto",
) -> LoadedAgent:
    """Load an SB3 model zip (PPO or SAC with ``MultiInputPolicy``). Unpickles it: only for
    files the user trusts (``--allow-pickle``).

    Before anything is unpickled: the algorithm is read from the zip's JSON (``n_epochs``: PPO,
    ``tau``: SAC), the env config is chosen and the env probed. After: the policy's spaces must
    fit the env; a policy with one of our features extractors takes its model config (so its
    attention maps and patch grid are known) and must name the env's sensors. Observation
    normalisation statistics come from the zip's drive-attention entry (an export of a run that
    normalised sensors); a config that normalises sensors without them is refused.
    """
    meta = read_zip_metadata(path)
    algo = SAC if "tau" in meta else PPO if "n_epochs" in meta else None
    if algo is None:
        raise CheckpointError(f"{path}: an SB3 zip of an algorithm other than PPO or SAC")
    embedded = None
    if isinstance(meta.get(ZIP_KEY), str):
        try:
            embedded = json.loads(meta[ZIP_KEY])
        except ValueError:
            raise CheckpointError(f"{path}: damaged {ZIP_KEY} entry in the zip's data") from None
    config = _zip_config(path, embedded, run_dir, env_id)
    spec = probe_env(config.env)
    try:
        with old_module_names():
            model = algo.load(path, device=resolve_device(device))  # unpickles: --allow-pickle
    except (ValueError, KeyError, RuntimeError, AttributeError, ImportError) as err:
        raise CheckpointError(f"{path}: SB3 cannot load it ({type(err).__name__}: {err})") from None
    _check_zip_spaces(path, model, spec, config.env.id)

    extractor = models.policy_extractor(model.policy)
    if isinstance(extractor, tuple(EXTRACTOR_CLASSES.values())):
        kwargs = model.policy_kwargs.get("features_extractor_kwargs", {})
        names = tuple(kwargs.get("sensor_names", ()))
        if names != spec.sensor_names:
            raise ConfigError(
                f"{path}: the policy reads sensors {names[:3]}... ({len(names)}) but "
                f"{config.env.id} gives {spec.sensor_names[:3]}... ({len(spec.sensor_names)}); "
                "evaluate it on the env it was trained on"
            )
        config = replace(config, model=as_config(kwargs.get("config")))
        source = f"the zip's model '{config.model.name}'"
    else:
        source = f"the zip's policy (features extractor {type(extractor).__name__}, not ours)"

    normalize = None
    stats = (embedded or {}).get("vec_normalize")
    # a run that normalised only its rewards (env.normalize_reward) carries reward statistics:
    # nothing to apply to observations
    if config.env.normalize_sensors and not (stats or {}).get("obs"):
        raise CheckpointError(
            f"{path}: the config normalises sensors (env.normalize_sensors) but the zip "
            "carries no normalisation statistics; export the run with scripts/export.py"
        )
    if stats and stats.get("obs"):
        venv = DummyVecEnv([EnvFactory(config.env.id, dict(config.env.kwargs))])
        vec_normalize = VecNormalize(
            venv, norm_obs=True, norm_reward=False, norm_obs_keys=list(stats["obs"]), training=False
        )
        restore_vec_normalize(vec_normalize, stats)
        venv.close()
        normalize = vec_normalize.normalize_obs
    step = int((embedded or {}).get("step", model.num_timesteps))
    ckpt = Checkpoint(step=step, config=to_dict(config), state={}, path=path)
    return LoadedAgent(config, ckpt, spec, model, TrainedPolicy(model, normalize), source)


def check_same_observation(
    trained: EnvSpec, target: EnvSpec, trained_id: str, target_id: str
) -> None:
    """Refuse to run a policy trained on ``trained_id`` on ``target_id`` unless both give the
    same camera and sensor layout and the same kind of action space."""
    problems = []
    for key in ("camera", "sensors"):
        a, b = trained.observation_space[key].shape, target.observation_space[key].shape
        if a != b:
            problems.append(f"{key} {a} vs {b}")
    if trained.sensor_names != target.sensor_names:
        extra = sorted(set(target.sensor_names) - set(trained.sensor_names))
        missing = sorted(set(trained.sensor_names) - set(target.sensor_names))
        problems.append(
            f"sensors only in {target_id}: {extra or 'none'}; missing: {missing or 'none'}"
        )
    if type(trained.action_space) is not type(target.action_space) or getattr(
        trained.action_space, "shape", None
    ) != getattr(target.action_space, "shape", None):
        problems.append(f"action space {trained.action_space} vs {target.action_space}")
    if problems:
        raise ConfigError(
            f"--env {target_id}: its observation does not match {trained_id}, which the policy was "
            f"trained on ({'; '.join(problems)}); evaluate on a scenario with the same sensors"
        )
