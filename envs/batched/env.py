"""The batched backend's views of its core (:class:`envs.batched.core.BatchedDrive`):

- :class:`BatchedDriveVectorEnv`: a ``gymnasium.vector.VectorEnv`` (batched spaces, same-step
  autoreset, dict-of-arrays infos), what ``gymnasium.make_vec(batched_id, num_envs=N)`` returns;
- :class:`BatchedDriveVecEnv`: an SB3 ``VecEnv`` adapter (batched step, automatic reset, numpy
  observations, ``terminal_observation`` in the infos) for training with SB3;
- :class:`BatchedDriveEnv`: a single Gymnasium env (B = 1) for ``gymnasium.make`` and
  ``check_env``;
- :class:`BatchedDrive` itself (tensors in and out), for benchmarks and GPU pipelines that keep
  frames on device.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from stable_baselines3.common.vec_env import VecEnv

from drive_attention.envs.batched.core import BatchedDrive
from drive_attention.envs.configuration import ConfigError
from drive_attention.envs.contract import (
    DISCRETE_ACTIONS,
    EPISODE_KEYS,
    RENDER_MODES,
    REWARD_TERMS,
    check_action,
    check_render_mode,
    idle_action,
    simulator_seed,
)


def _episode_info(cpu: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    """The :data:`EPISODE_KEYS` of environment ``i`` as plain Python values (and the
    signalised scenario's ``red_light_runs`` and ``pedestrian_collision``)."""
    return {key: value[i].item() for key, value in cpu.items()}


def _situation(core: BatchedDrive, info: dict[str, Any], i: int) -> None:
    """Put the ego's ``light_state`` and ``pedestrian_ahead`` of environment ``i`` into
    ``info`` where the scenario has lights (see ``BatchedDrive.situation``)."""
    now = core.situation(torch.tensor([i], device=core.device))
    if now is not None:
        for key, values in now.items():
            info[key] = values[0]


def _labels_info(core: BatchedDrive, labels: torch.Tensor) -> dict[str, np.ndarray]:
    """The one environment's ``road_labels`` (H, W) from its latest label map (H, W), and what
    ties the frame to the simulator's objects: ``object_ids`` (H, W) int16, the traffic slot
    drawn at each pixel (-1: none), and ``object_slots`` (n_objects,) the slot behind each
    ``objects.<k>`` sensor token (-1: an empty row)."""
    ids = core.object_ids(labels[None])
    return {
        "road_labels": core.road_labels(labels).cpu().numpy(),
        "object_ids": ids["object_ids"][0].cpu().numpy(),
        "object_slots": ids["object_slots"][0].cpu().numpy(),
    }


class BatchedDriveVecEnv(VecEnv):
    """SB3 VecEnv over :class:`BatchedDrive`: one call steps all ``num_envs`` environments.

    Observations are numpy (camera uint8 (B, H, W, 3 S), sensors float32 (B, D)); a finished
    environment is reset at once and its last observation is in ``info["terminal_observation"]``
    (truncation flagged by ``info["TimeLimit.truncated"]``), as SB3's own VecEnvs do.
    """

    def __init__(self, num_envs: int = 1, **options: Any) -> None:
        self.core = BatchedDrive(num_envs=num_envs, **options)
        self.render_mode = "rgb_array"
        super().__init__(num_envs, self.core.observation_space(), self.core.action_space())
        self.config = self.core.config
        self.sensor_names = self.core.sensor_names
        self.camera_geometry = self.core.camera_geometry  # scale, ego pixel, patch grid
        self.sensor_groups = self.core.sensor_groups
        self.idle_action = idle_action(self.config.action)
        # the meta-actions' names (videos, tables), as highway-env's envs give theirs
        self.action_names = DISCRETE_ACTIONS if self.config.action == "discrete" else None
        self._actions: np.ndarray | None = None

    def _obs(self, labels: torch.Tensor, sensors: torch.Tensor) -> dict[str, np.ndarray]:
        return {
            "camera": self.core.camera(labels).cpu().numpy(),
            "sensors": sensors.cpu().numpy().astype(np.float32, copy=False),
        }

    def reset(self) -> dict[str, np.ndarray]:
        if self._seeds[0] is not None:
            self.core.seed(self._seeds[0])
        self._reset_seeds()
        self._reset_options()
        out = self.core.reset()
        return self._obs(out.labels, out.sensors)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict]]:
        core = self.core
        out = core.step(torch.as_tensor(self._actions, device=core.device))
        done = out.terminated | out.truncated
        obs = self._obs(out.labels, out.sensors)
        terms = out.terms.cpu().numpy()
        speeds = out.speed.cpu().numpy()
        labels_np = (
            core.road_labels(out.labels[:, -1]).cpu().numpy() if self.config.road_labels else None
        )
        # what the ego faces (lights, pedestrians): with the road labels, for attribution
        situation = core.situation() if self.config.road_labels else None
        infos: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            info: dict[str, Any] = {
                "reward_terms": dict(zip(REWARD_TERMS, terms[i].tolist())),
                "speed": float(speeds[i]),
            }
            if labels_np is not None:
                info["road_labels"] = labels_np[i].copy()
            if situation is not None:
                info.update({key: values[i] for key, values in situation.items()})
            infos.append(info)
        done_np = done.cpu().numpy()
        if done_np.any():
            cpu = {k: v.cpu().numpy() for k, v in out.episode.items()}
            truncated = out.truncated.cpu().numpy()
            for i in np.flatnonzero(done_np):
                infos[i].update(_episode_info(cpu, i))
                infos[i]["terminal_observation"] = {k: v[i].copy() for k, v in obs.items()}
                infos[i]["TimeLimit.truncated"] = bool(truncated[i])
                assert all(k in infos[i] for k in EPISODE_KEYS)
            core.reset_envs(done)
            labels, sensors = core.observe(done)
            fresh = self._obs(labels, sensors)
            for key in obs:
                obs[key][done_np] = fresh[key]
            if labels_np is not None:
                fresh_labels = core.road_labels(labels[:, -1]).cpu().numpy()
                for j, i in enumerate(np.flatnonzero(done_np)):
                    infos[i]["reset_road_labels"] = fresh_labels[j]
        return obs, out.reward.cpu().numpy().astype(np.float32), done_np, infos

    def close(self) -> None:
        pass

    def get_images(self) -> list[np.ndarray]:
        frames = self.core.camera(self.core.labels[:, -1:]).cpu().numpy()
        return list(frames)

    # VecEnv's attribute plumbing: every environment shares this object's attributes
    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
    ) -> list[Any]:
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


class BatchedDriveEnv(gym.Env):
    """One batched environment (B = 1) behind the Gymnasium API, for ``gymnasium.make``."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": list(RENDER_MODES), "render_fps": 5}

    def __init__(self, render_mode: str | None = None, **options: Any) -> None:
        check_render_mode(render_mode)
        if options.get("num_envs", 1) != 1:
            raise ConfigError("num_envs: the Gymnasium view has one env; use BatchedDriveVecEnv")
        self.core = BatchedDrive(**options)
        self.config = self.core.config
        self.render_mode = render_mode
        self.observation_space = self.core.observation_space()
        self.action_space = self.core.action_space()
        self.sensor_names = self.core.sensor_names
        self.camera_geometry = self.core.camera_geometry  # scale, ego pixel, patch grid
        self.sensor_groups = self.core.sensor_groups
        self.idle_action: Any = idle_action(self.config.action)
        # the meta-actions' names (videos, tables), as highway-env's envs give theirs
        self.action_names = DISCRETE_ACTIONS if self.config.action == "discrete" else None

    def _obs(self, labels: torch.Tensor, sensors: torch.Tensor) -> dict[str, np.ndarray]:
        return {
            "camera": self.core.camera(labels)[0].cpu().numpy(),
            "sensors": sensors[0].cpu().numpy().astype(np.float32, copy=False),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self.core.seed(simulator_seed(self.np_random, seed))
        out = self.core.reset()
        info: dict[str, Any] = {"speed": float(out.speed[0])}
        if self.config.road_labels:
            info.update(_labels_info(self.core, out.labels[0, -1]))
        _situation(self.core, info, 0)
        return self._obs(out.labels, out.sensors), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        checked = check_action(action, self.config.action, self.core.name)
        out = self.core.step(torch.as_tensor(np.asarray(checked)).reshape(1, -1))
        terms = out.terms[0].cpu().numpy()
        info: dict[str, Any] = {
            "reward_terms": dict(zip(REWARD_TERMS, terms.tolist())),
            "speed": float(out.speed[0]),
        }
        if self.config.road_labels:
            info.update(_labels_info(self.core, out.labels[0, -1]))
        _situation(self.core, info, 0)
        terminated, truncated = bool(out.terminated[0]), bool(out.truncated[0])
        if terminated or truncated:
            cpu = {k: v.cpu().numpy() for k, v in out.episode.items()}
            info.update(_episode_info(cpu, 0))
        reward = float(sum(info["reward_terms"].values()))
        return self._obs(out.labels, out.sensors), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self.core.camera(self.core.labels[:, -1:])[0].cpu().numpy()
        return None


class BatchedDriveVectorEnv(VectorEnv):
    """The batched simulator as a ``gymnasium.vector.VectorEnv`` (Gymnasium 1.x API).

    ``gymnasium.make_vec("DriveAttention/BatchedHighway-v0", num_envs=256)`` returns it (the
    ids' ``vector_entry_point``): one :class:`BatchedDrive` steps all ``num_envs`` envs at once.

    - spaces: ``single_observation_space`` is the contract's ``Dict(camera, sensors)``;
      ``observation_space`` batches it (camera ``(N, H, W, 3 S)`` uint8, sensors ``(N, D)``
      float32); ``action_space`` is ``MultiDiscrete([5] * N)`` or ``Box(-1, 1, (N, 2))``.
    - autoreset: **same step** (``metadata["autoreset_mode"] == AutoresetMode.SAME_STEP``), as
      the core resets finished envs inside the step: a step in which env ``i`` terminates or
      truncates returns that step's reward and flags, but env ``i``'s *new* first observation;
      the ended episode's last observation is ``info["final_obs"][i]`` and its last info
      (``reward_terms``, ``speed``, the :data:`EPISODE_KEYS`, ``road_labels``) is
      ``info["final_info"]``, each key with its ``_key`` mask (Gymnasium's convention, as
      ``SyncVectorEnv(autoreset_mode=SAME_STEP)``). The top-level ``reward_terms`` of a reset
      env are masked out (``info["_reward_terms"][i]`` is False); ``speed`` (and
      ``road_labels``) are the new episode's.
    - ``reset(seed=S)`` seeds the batch's one random stream (one int, not one per env);
      ``reset(options={"reset_mask": mask})`` restarts only the envs of the (N,) bool mask.
    - ``render()``: a tuple of N ``(H, W, 3)`` frames with ``render_mode="rgb_array"``.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": list(RENDER_MODES),
        "render_fps": 5,
        "autoreset_mode": AutoresetMode.SAME_STEP,
    }

    def __init__(self, num_envs: int = 1, render_mode: str | None = None, **options: Any) -> None:
        self.render_mode = check_render_mode(render_mode)
        self.core = BatchedDrive(num_envs=num_envs, **options)
        self.config = self.core.config
        self.num_envs = self.core.num_envs
        self.single_observation_space = self.core.observation_space()
        self.single_action_space = self.core.action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.sensor_names = self.core.sensor_names
        self.camera_geometry = self.core.camera_geometry  # scale, ego pixel, patch grid
        self.sensor_groups = self.core.sensor_groups
        self.idle_action: Any = idle_action(self.config.action)
        # the meta-actions' names (videos, tables), as highway-env's envs give theirs
        self.action_names = DISCRETE_ACTIONS if self.config.action == "discrete" else None
        self._started = False

    def _obs(self, labels: torch.Tensor, sensors: torch.Tensor) -> dict[str, np.ndarray]:
        return {
            "camera": self.core.camera(labels).cpu().numpy(),  # (N, H, W, 3 S)
            "sensors": sensors.cpu().numpy().astype(np.float32, copy=False),  # (N, D)
        }

    def _mask(self, value: bool = True) -> np.ndarray:
        return np.full(self.num_envs, value, dtype=bool)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise ConfigError(
                f"seed: the batched simulator has one random stream for all its envs; give one "
                f"int, got {seed!r}"
            )
        super().reset(seed=seed)
        if seed is not None:
            self.core.seed(simulator_seed(self.np_random, seed))
        mask = (options or {}).get("reset_mask")
        if mask is not None and self._started:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ConfigError(
                    f"options['reset_mask']: must be a ({self.num_envs},) bool array, got "
                    f"{mask.dtype} {mask.shape}"
                )
            self.core.reset_envs(torch.as_tensor(mask, device=self.core.device))
            labels, sensors = self.core.observe()
        else:
            out = self.core.reset()
            labels, sensors = out.labels, out.sensors
            self._started = True
        info: dict[str, Any] = {
            "speed": self.core.traffic.speed[:, 0].cpu().numpy().astype(np.float64),
            "_speed": self._mask(),
        }
        if self.config.road_labels:
            info["road_labels"] = self.core.road_labels(labels[:, -1]).cpu().numpy()
            info["_road_labels"] = self._mask()
        return self._obs(labels, sensors), info

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        core = self.core
        if not self._started:
            raise RuntimeError("call reset() before step()")
        out = core.step(torch.as_tensor(np.asarray(actions), device=core.device))
        done_t = out.terminated | out.truncated
        done = done_t.cpu().numpy()
        obs = self._obs(out.labels, out.sensors)
        terms = out.terms.cpu().numpy().astype(np.float64)
        reward_terms: dict[str, Any] = {}
        for k, name in enumerate(REWARD_TERMS):
            reward_terms[name], reward_terms[f"_{name}"] = terms[:, k], self._mask()
        speed = out.speed.cpu().numpy().astype(np.float64)
        labels = (
            core.road_labels(out.labels[:, -1]).cpu().numpy() if self.config.road_labels else None
        )
        infos: dict[str, Any] = {}
        if done.any():
            final: dict[str, Any] = {"reward_terms": reward_terms, "_reward_terms": done.copy()}
            final["speed"], final["_speed"] = speed.copy(), done.copy()
            for key, value in out.episode.items():
                final[key], final[f"_{key}"] = value.cpu().numpy(), done.copy()
            if labels is not None:
                final["road_labels"], final["_road_labels"] = labels.copy(), done.copy()
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = {key: value[i].copy() for key, value in obs.items()}
            infos["final_obs"], infos["_final_obs"] = final_obs, done.copy()
            infos["final_info"], infos["_final_info"] = final, done.copy()
            core.reset_envs(done_t)
            fresh_labels, fresh_sensors = core.observe(done_t)
            fresh = self._obs(fresh_labels, fresh_sensors)
            for key in obs:
                obs[key][done] = fresh[key]
            speed = speed.copy()
            speed[done] = core.traffic.speed[done_t, 0].cpu().numpy()
            if labels is not None:
                labels = labels.copy()
                labels[done] = core.road_labels(fresh_labels[:, -1]).cpu().numpy()
            reward_terms = {
                k: (v & ~done if k.startswith("_") else v) for k, v in reward_terms.items()
            }
        infos["reward_terms"], infos["_reward_terms"] = reward_terms, ~done
        infos["speed"], infos["_speed"] = speed, self._mask()
        if labels is not None:
            infos["road_labels"], infos["_road_labels"] = labels, self._mask()
        terminated = out.terminated.cpu().numpy()
        truncated = out.truncated.cpu().numpy()
        return obs, out.reward.cpu().numpy().astype(np.float64), terminated, truncated, infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array" or not self._started:
            return None
        return tuple(self.core.camera(self.core.labels[:, -1:]).cpu().numpy())


def make_vec_env(env_id: str, num_envs: int, seed: int | None = None, **options: Any) -> VecEnv:
    """The batched VecEnv of a registered ``Batched`` id (for the training code's switch)."""
    spec = gym.spec(env_id)
    if "Batched" not in env_id:
        raise ConfigError(f"{env_id}: not a batched id; batched ids contain 'Batched'")
    venv = BatchedDriveVecEnv(num_envs=num_envs, **{**spec.kwargs, **options})
    if seed is not None:
        venv.seed(seed)
    return venv
