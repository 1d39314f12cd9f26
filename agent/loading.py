"""Load a trained agent from a run directory or checkpoint, for evaluation (no training state).

A config read from a checkpoint or a run folder is data someone else may have written: it is
validated like a user's config (:func:`agent.config.resolve_config`), and its ``env.id`` must be
one of this project's registered ids (:func:`check_env_id`) before any environment is made, so
that a crafted ``module:Env-v0`` id never makes Gymnasium import a module.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from agent.build import EnvFactory, EnvSpec, make_algo, probe_env, resolve_device, wrap_normalize
from agent.checkpoint import Checkpoint, CheckpointError, load_checkpoint, restore_algo_state
from agent.config import ConfigError, ExperimentConfig, check_env_id, read_yaml, resolve_config
from agent.evaluation import TrainedPolicy
from agent.rundir import RunDir


@dataclass
class LoadedAgent:
    """A trained policy ready to act, with the config and checkpoint it came from."""

    config: ExperimentConfig
    checkpoint: Checkpoint
    spec: EnvSpec  # of the env it will be evaluated on
    model: Any
    policy: TrainedPolicy


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


def load_agent(
    run_dir: str | Path | None,
    checkpoint: str | Path | None = None,
    env_id: str | None = None,
    device: str = "auto",
) -> LoadedAgent:
    """Build the policy of a checkpoint (default: the run's latest) and load its weights.

    The model is built from the config stored *in the checkpoint*, so the weights always fit;
    ``env_id`` evaluates it on another scenario, which must give the same observation layout.
    """
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
    try:
        trained_config = resolve_config(ckpt.config)
        check_env_id(trained_config.env.id, key="checkpoint env.id")
    except ConfigError as err:
        raise CheckpointError(
            f"{ckpt.path}: the config stored in the checkpoint is invalid here: {err}"
        ) from None
    config = with_env(trained_config, env_id)
    spec = probe_env(config.env)
    if config is not trained_config:
        check_same_observation(
            probe_env(trained_config.env), spec, trained_config.env.id, config.env.id
        )

    venv = wrap_normalize(
        DummyVecEnv([EnvFactory(config.env.id, dict(config.env.kwargs))]),
        config.env,
        config.algo.gamma,
    )
    vec_normalize = venv if isinstance(venv, VecNormalize) else None
    if vec_normalize is not None:
        vec_normalize.training = False
    model = make_algo(config, venv, spec, resolve_device(device), inference_only=True)
    restore_algo_state(model, ckpt.state, vec_normalize)
    venv.close()
    normalize = (
        vec_normalize.normalize_obs
        if vec_normalize is not None and vec_normalize.norm_obs
        else None
    )
    return LoadedAgent(config, ckpt, spec, model, TrainedPolicy(model, normalize))


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
