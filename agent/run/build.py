"""Build what an experiment config describes: environments, the SB3 algorithm, the device."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecMonitor,
    VecNormalize,
)

from drive_attention import envs, models
from drive_attention.agent.run.config import ConfigError, EnvConfig, ExperimentConfig, check_env_id
from drive_attention.agent.run.memory import check_run_memory
from drive_attention.envs.batched.env import make_vec_env as make_batched
from drive_attention.envs.configuration import closest
from drive_attention.envs.contract import idle_action

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC}


def resolve_device(requested: str) -> str:
    """``auto``: CUDA when a GPU is visible, else CPU; ``cuda`` without a GPU is an error."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device: cuda was requested but torch sees no CUDA device; use "
            "train.device=cpu (or auto)"
        )
    return requested


@dataclass
class EnvFactory:
    """Picklable recipe for one environment (SubprocVecEnv calls it inside the worker)."""

    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    render_mode: str | None = None
    monitor: bool = True  # SB3's Monitor wrapper: info["episode"] = {"r", "l", "t"}
    parent_pid: int = field(default_factory=os.getpid)

    def __call__(self) -> gym.Env:
        if os.getpid() != self.parent_pid:
            # Ctrl-C reaches the whole process group: workers ignore it so the learner can
            # save a checkpoint while the envs are still alive.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        env = gym.make(self.env_id, render_mode=self.render_mode, **self.kwargs)
        return Monitor(env) if self.monitor else env


@dataclass
class EnvSpec:
    """What a probe environment reveals: spaces, sensor names, the idle action."""

    observation_space: spaces.Dict
    action_space: spaces.Space
    sensor_names: tuple[str, ...]
    idle_action: Any
    action_names: dict[int, str] | None


def _env_kwargs_error(err: ConfigError) -> ConfigError:
    """An env's own configuration error with its key named as spelled in the config."""
    message = str(err)
    if message.startswith("unknown option '"):
        message = message.replace("unknown option '", "unknown option 'env.kwargs.", 1)
    elif not message.startswith("env."):
        message = f"env.kwargs.{message}"
    return ConfigError(message)


def make_env(env_id: str, kwargs: dict[str, Any], monitor: bool = False) -> gym.Env:
    """One environment, with configuration errors re-labelled under ``env.``.

    ``env_id`` must be one of this project's ids (checked before Gymnasium sees it, so the
    ``module:Env-v0`` form imports nothing). ``kwargs`` are checked as the experiment config
    checks them (:class:`agent.run.config.EnvConfig`, against the backend's typed options): an error
    names the key as spelled in the config; any other exception is the env's and keeps its
    traceback.
    """
    check_env_id(env_id)
    try:
        return EnvFactory(env_id, dict(kwargs), monitor=monitor)()
    except ConfigError as err:
        raise _env_kwargs_error(err) from None
    except gym.error.Error as err:
        if env_id in gym.registry:
            raise
        ids = [k for k in gym.registry if k.startswith("DriveAttention/")]
        raise ConfigError(
            f"env.id: {env_id!r} is not a registered environment{closest(env_id, ids)}; "
            f"registered: {', '.join(ids)} ({err.__class__.__name__})"
        ) from None


def describe_env(env: gym.Env) -> EnvSpec:
    """Read the spaces, sensor names, idle action and action names of an environment."""
    base = env.unwrapped
    if set(getattr(env.observation_space, "spaces", {})) != {"camera", "sensors"}:
        raise ConfigError(
            f"env.id: {env.spec.id if env.spec else base}: observation must be "
            f"Dict(camera, sensors), got {env.observation_space}"
        )
    sensor_names = tuple(getattr(base, "sensor_names", ()))
    action_names = None
    if isinstance(env.action_space, spaces.Discrete):
        # the env's own names, else highway-env's meta-action names
        sim = getattr(base, "sim", None)
        names = getattr(base, "action_names", None) or getattr(
            getattr(sim, "action_type", None), "actions", None
        )
        if isinstance(names, (list, tuple)):
            names = dict(enumerate(names))
        if isinstance(names, dict):
            action_names = {int(k): str(v) for k, v in names.items()}
    idle = getattr(base, "idle_action", None)
    if idle is None:  # an env outside this project: the contract's idle action for its space
        discrete = isinstance(env.action_space, spaces.Discrete)
        idle = idle_action("discrete") if discrete else np.zeros(env.action_space.shape)
    return EnvSpec(env.observation_space, env.action_space, sensor_names, idle, action_names)


def probe_env(env_config: EnvConfig) -> EnvSpec:
    """Make one env (``env.kwargs`` were checked when the config was built), read its spec,
    close it.

    Envs whose simulator runs in this process are also reset once, so that an env that cannot
    start fails here rather than once training has started. An env whose simulator runs
    elsewhere (CARLA) is asked whether it answers (``check_available()``), so that a stopped
    server is reported before a run folder exists."""
    env = make_env(env_config.id, env_config.kwargs)
    try:
        check_available = getattr(env.unwrapped, "check_available", None)
        if check_available is not None:
            check_available()
        else:
            try:
                env.reset(seed=0)
            except ConfigError as err:
                raise _env_kwargs_error(err) from None
        return describe_env(env)
    finally:
        env.close()


def make_vec_env(env_config: EnvConfig, seed: int) -> VecEnv:
    """``env.n_envs`` monitored environments, seeded ``seed + i``.

    Batched ids (:data:`envs.BATCHED_IDS`) step all of them in one process with the backend's
    SB3 VecEnv (an adapter of the same simulator ``gymnasium.make_vec`` returns); any other id
    gets one copy per subprocess (in-process when ``n_envs`` is 1).
    """
    if env_config.id in envs.BATCHED_IDS:
        check_env_id(env_config.id)
        try:
            venv = make_batched(env_config.id, env_config.n_envs, seed=seed, **env_config.kwargs)
        except ConfigError as err:
            raise _env_kwargs_error(err) from None
        return VecMonitor(venv)
    factories = [
        EnvFactory(env_config.id, dict(env_config.kwargs)) for _ in range(env_config.n_envs)
    ]
    if env_config.n_envs > 1:
        venv: VecEnv = SubprocVecEnv(factories, start_method=env_config.start_method)
    else:
        venv = DummyVecEnv(factories)
    venv.seed(seed)
    return venv


def wrap_normalize(venv: VecEnv, env_config: EnvConfig, gamma: float) -> VecEnv:
    """VecNormalize over the sensor vector and/or the reward, as the config asks."""
    if not (env_config.normalize_sensors or env_config.normalize_reward):
        return venv
    return VecNormalize(
        venv,
        norm_obs=env_config.normalize_sensors,
        norm_reward=env_config.normalize_reward,
        norm_obs_keys=["sensors"] if env_config.normalize_sensors else None,
        gamma=gamma,
    )


def policy_kwargs(config: ExperimentConfig, spec: EnvSpec) -> dict[str, Any]:
    """Policy keyword arguments: the features extractor from ``models`` plus the heads."""
    kwargs = dict(models.policy_kwargs(config.model, spec.sensor_names))
    kwargs.setdefault("net_arch", list(config.algo.net_arch))
    return kwargs


def make_algo(
    config: ExperimentConfig,
    venv: VecEnv,
    spec: EnvSpec,
    device: str,
    seed: int | None = None,
    inference_only: bool = False,
) -> BaseAlgorithm:
    """The SB3 algorithm of ``config.algo`` with the policy of ``config.model``.

    ``seed`` defaults to ``train.seed``; ``inference_only`` shrinks SAC's replay buffer to one
    transition (for evaluation).
    """
    # what SB3 is about to allocate, against this machine's memory (the envs are made already)
    check_run_memory(
        config, spec.observation_space, venv.num_envs, envs_too=False, replay=not inference_only
    )
    algo = config.algo
    common: dict[str, Any] = {
        "policy": "MultiInputPolicy",
        "env": venv,
        "learning_rate": (
            LinearSchedule(algo.learning_rate, 0.0, 1.0)
            if algo.lr_schedule == "linear"
            else algo.learning_rate
        ),
        "gamma": algo.gamma,
        "policy_kwargs": policy_kwargs(config, spec),
        "seed": config.train.seed if seed is None else seed,
        "device": device,
        "verbose": 0,
    }
    if algo.name == "ppo":
        return PPO(
            n_steps=algo.n_steps,
            batch_size=algo.batch_size,
            n_epochs=algo.n_epochs,
            gae_lambda=algo.gae_lambda,
            clip_range=algo.clip_range,
            ent_coef=algo.ent_coef,
            vf_coef=algo.vf_coef,
            max_grad_norm=algo.max_grad_norm,
            target_kl=algo.target_kl,
            **common,
        )
    if not isinstance(spec.action_space, spaces.Box):
        raise ConfigError(
            "algo.name: sac needs continuous actions; set env.kwargs.action=continuous"
        )
    return SAC(
        buffer_size=1 if inference_only else algo.buffer_size,
        learning_starts=algo.learning_starts,
        batch_size=algo.batch_size,
        tau=algo.tau,
        train_freq=algo.train_freq,
        gradient_steps=algo.gradient_steps,
        ent_coef=algo.ent_coef,
        optimize_memory_usage=False,
        **common,
    )
