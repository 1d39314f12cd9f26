"""Build what an experiment config describes: environments, the SB3 algorithm, the device."""

from __future__ import annotations

import copy
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

import envs
import models
from agent.run.config import ConfigError, EnvConfig, ExperimentConfig, check_env_id
from envs.batched.env import make_vec_env as make_batched
from envs.configuration import closest
from envs.contract import idle_action

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
    ``module:Env-v0`` form imports nothing). Any other exception the env raises while being made
    from ``kwargs`` becomes a :class:`ConfigError` naming the options it cannot be made with
    (see :func:`_blame_kwargs`); an env that fails without any options is a bug and keeps its
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
    except Exception as err:
        blamed = _blame_kwargs(env_id, kwargs)
        if blamed is None:
            raise
        raise _cannot_make(env_id, kwargs, blamed, err) from None


_BLAME_MAX_OPTIONS = 16  # options tried one at a time when an env cannot be made


def _leaves(kwargs: dict[str, Any], prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Key paths of the options in ``kwargs``: ``sim.lanes_count`` is ``("sim", "lanes_count")``."""
    out = []
    for key, value in kwargs.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            out += _leaves(value, path)
        else:
            out.append(path)
    return out


def _get(kwargs: dict[str, Any], path: tuple[Any, ...]) -> Any:
    for key in path:
        kwargs = kwargs[key]
    return kwargs


def _without(kwargs: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    out = copy.deepcopy(kwargs)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def _can_make(env_id: str, kwargs: dict[str, Any], reset: bool = False) -> bool:
    try:
        env = gym.make(env_id, **kwargs)
        try:
            if reset:
                env.reset(seed=0)
        finally:
            env.close()
    except Exception:
        return False
    return True


def _cheap_to_try(env_id: str) -> bool:
    """Whether ``env_id`` is made and reset in a fraction of a second (not CARLA, which
    connects to a server and spawns actors there)."""

    return env_id in envs.HIGHWAY_IDS or env_id in envs.BATCHED_IDS


def _blame_kwargs(
    env_id: str, kwargs: dict[str, Any], reset: bool = False
) -> list[tuple[Any, ...]] | None:
    """Which options of ``kwargs`` keep ``env_id`` from being made (and reset, with ``reset``):
    those whose removal alone lets it be, else all of them; ``None`` when it fails without
    options too or works with them as a single env (not the options' fault), or when trying
    again is not cheap (:func:`_cheap_to_try`)."""
    if not kwargs or not _cheap_to_try(env_id):
        return None
    if not _can_make(env_id, {}, reset) or _can_make(env_id, kwargs, reset):
        return None
    leaves = _leaves(kwargs)
    if len(leaves) > _BLAME_MAX_OPTIONS:
        return leaves
    blamed = [path for path in leaves if _can_make(env_id, _without(kwargs, path), reset)]
    return blamed or leaves


def _cannot_make(
    env_id: str,
    kwargs: dict[str, Any],
    blamed: list[tuple[Any, ...]],
    err: Exception,
    what: str = "made",
) -> ConfigError:
    reason = str(err).split(" was raised from the environment creator")[0]  # gymnasium's suffix
    reason = " ".join(reason.split())[:200]
    names = [".".join(map(str, path)) for path in blamed]
    given = ", ".join(f"{name}={_get(kwargs, path)!r}" for name, path in zip(names, blamed))
    key = f"env.kwargs.{names[0]}" if len(blamed) == 1 else "env.kwargs"
    fix = "this value" if len(blamed) == 1 else "these values"
    return ConfigError(
        f"{key}: {env_id} cannot be {what} with {given} ({err.__class__.__name__}: {reason}); "
        f"change {fix} or remove {'it' if len(blamed) == 1 else 'them'}"
    )


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
    """Make one env (validating ``env.id`` and ``env.kwargs``), read its spec, close it.

    Envs that are cheap to make are also reset once: some options (e.g. the batched backend's
    traffic) are only used at the first reset, and must fail here rather than once training
    has started. An env whose simulator runs elsewhere (CARLA) is asked whether it answers
    (``check_available()``), so that a stopped server is reported before a run folder exists."""
    env = make_env(env_config.id, env_config.kwargs)
    try:
        check_available = getattr(env.unwrapped, "check_available", None)
        if check_available is not None:
            check_available()
        if _cheap_to_try(env_config.id):
            try:
                env.reset(seed=0)
            except ConfigError as err:
                raise _env_kwargs_error(err) from None
            except Exception as err:
                blamed = _blame_kwargs(env_config.id, env_config.kwargs, reset=True)
                if blamed is None:
                    raise
                raise _cannot_make(
                    env_config.id, env_config.kwargs, blamed, err, what="reset"
                ) from None
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
        except Exception as err:
            blamed = _blame_kwargs(env_config.id, env_config.kwargs)
            if blamed is None:
                raise
            raise _cannot_make(env_config.id, env_config.kwargs, blamed, err) from None
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
