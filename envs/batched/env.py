"""The batched backend: B driving environments stepped at once with torch, on CPU or GPU.

Same contract as the highway-env backend (:mod:`envs.highway`): the camera raster of the same
look, scale and ego-centring, the same sensor names, groups and normalisation, the same reward
terms and episode-end keys, ``road_labels`` for free. Traffic is simulated by
:mod:`envs.batched.sim` (highway-env's IDM, MOBIL, controllers and bicycle model, vectorised)
on roads read from highway-env (:mod:`envs.batched.road`).

Three views of one core (:class:`BatchedDrive`, tensors in and out):

- :class:`BatchedDriveVecEnv`: an SB3 ``VecEnv`` (batched step, automatic reset, numpy
  observations, ``terminal_observation`` in the infos) for training;
- :class:`BatchedDriveEnv`: a single Gymnasium env (B = 1) for ``gymnasium.make`` and
  ``check_env``;
- :class:`BatchedDrive` itself, for benchmarks and GPU pipelines that keep frames on device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

from envs.batched.render import TorchRasterizer, lidar
from envs.batched.scenarios import SIM_FREQUENCY, SIM_KEYS, road_for, spawn
from envs.batched.sim import (
    EGO,
    FASTER,
    IDLE,
    IDM,
    LANE_LEFT,
    LANE_RIGHT,
    SLOWER,
    Simulator,
    Traffic,
)
from envs.configuration import ConfigError, build, check, closest
from envs.contract import EPISODE_KEYS, REWARD_TERMS, sensor_groups
from envs.highway.env import (
    CLOSING_SCALE,
    DEFAULT_REWARD_WEIGHTS,
    EDGE_SCALE,
    MERGE_END_X,
    SCENARIOS,
    SPEED_SCALE,
    DriveEnvConfig,
    sensor_names,
)

BATCHED_SCENARIOS = ("highway", "merge")
assert (LANE_LEFT, IDLE, LANE_RIGHT, FASTER, SLOWER) == (0, 1, 2, 3, 4)


@dataclass
class BatchedDriveConfig(DriveEnvConfig):
    """The highway-env backend's options (:class:`envs.highway.DriveEnvConfig`) plus batching."""

    num_envs: int = 1  # B, environments stepped together
    device: str = "cpu"  # torch device of the simulation ("cpu", "cuda", "cuda:1")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.scenario in BATCHED_SCENARIOS,
            f"scenario: {self.scenario!r} has no batched version yet; use one of "
            f"{', '.join(BATCHED_SCENARIOS)} (or the highway-env backend)",
        )
        check(self.num_envs >= 1, f"num_envs: {self.num_envs} must be at least 1")
        allowed = SIM_KEYS[self.scenario]
        for key in self.sim:
            check(
                key in allowed,
                f"sim.{key}: not supported by the batched {self.scenario}"
                f"{closest(key, allowed)}; supported: {', '.join(allowed)}",
            )
        sim_freq = self.sim.get("simulation_frequency", SIM_FREQUENCY[self.scenario])
        check(
            sim_freq % self.policy_frequency == 0,
            f"policy_frequency: {self.policy_frequency} Hz must divide the simulation "
            f"frequency {sim_freq} Hz (set sim.simulation_frequency or policy_frequency)",
        )
        try:
            torch.device(self.device)
        except RuntimeError as err:
            raise ConfigError(f"device: {self.device!r} is not a torch device ({err})") from None


@dataclass
class StepOutput:
    """One batched step; tensors on the simulation device, (B, ...) each."""

    labels: torch.Tensor  # (B, S, H, W) uint8, the stacked label maps (newest last)
    sensors: torch.Tensor  # (B, D) float32
    reward: torch.Tensor  # (B,)
    terms: torch.Tensor  # (B, len(REWARD_TERMS)) weighted terms
    terminated: torch.Tensor  # (B,) bool
    truncated: torch.Tensor  # (B,) bool
    episode: dict[str, torch.Tensor]  # EPISODE_KEYS -> (B,), meaningful where done
    speed: torch.Tensor  # (B,) ego speed [m/s]


class BatchedDrive:
    """The batched core: traffic, episode bookkeeping, sensors, rewards and frames."""

    def __init__(self, **options: Any) -> None:
        self.config = build(BatchedDriveConfig, options)
        cfg = self.config
        self.device = torch.device(cfg.device)
        self.num_envs = cfg.num_envs
        self.scenario = SCENARIOS[cfg.scenario]
        self.discrete = cfg.action == "discrete"
        self.weights = {**DEFAULT_REWARD_WEIGHTS, **cfg.reward_weights}
        self.weight_vec = torch.tensor(
            [self.weights[k] for k in REWARD_TERMS], device=self.device, dtype=torch.float32
        )
        self.duration = cfg.duration or self.scenario.duration  # [s]
        self.sim_frequency = cfg.sim.get("simulation_frequency", SIM_FREQUENCY[cfg.scenario])
        self.frames_per_step = self.sim_frequency // cfg.policy_frequency
        self.road = road_for(cfg.scenario, cfg.sim, self.device)
        self.sim = Simulator(
            self.road, all_collisions=cfg.scenario != "highway", discrete=self.discrete
        )
        h, w = cfg.camera_size
        view_m = cfg.view_m or self.scenario.view_m
        self.raster = TorchRasterizer(self.road, h, w, w / view_m, self.scenario.centering)
        self.sensor_names = sensor_names(cfg)
        self.sensor_groups = sensor_groups(self.sensor_names)
        self.action_dim = 5 if self.discrete else 2
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(np.random.SeedSequence().generate_state(1)[0]))
        self.traffic: Traffic | None = None

    # ----------------------------------------------------------------- spaces
    def observation_space(self) -> spaces.Dict:
        h, w = self.config.camera_size
        return spaces.Dict(
            camera=spaces.Box(0, 255, (h, w, 3 * self.config.frame_stack), np.uint8),
            sensors=spaces.Box(-np.inf, np.inf, (len(self.sensor_names),), np.float32),
        )

    def action_space(self) -> spaces.Space:
        if self.discrete:
            return spaces.Discrete(5)
        return spaces.Box(-1.0, 1.0, (2,), np.float32)

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed))

    # ----------------------------------------------------------------- reset and step
    def reset(self) -> StepOutput:
        """Start every environment anew."""
        b, dev = self.num_envs, self.device
        self.traffic = spawn(
            self.config.scenario, b, self.sim, self.config.sim, self.generator, self.discrete
        )
        self.steps = torch.zeros(b, dtype=torch.long, device=dev)
        self.distance = torch.zeros(b, device=dev)  # [m]
        self.speed_sum = torch.zeros(b, device=dev)  # [m/s]
        self.last_action = torch.zeros(b, self.action_dim, device=dev)
        labels = self.raster.draw(self.traffic)
        self.labels = labels[:, None].repeat(1, self.config.frame_stack, 1, 1)
        zeros = torch.zeros(b, device=dev)
        return StepOutput(
            labels=self.labels,
            sensors=self.sensors(self.traffic, self.last_action),
            reward=zeros,
            terms=torch.zeros(b, len(REWARD_TERMS), device=dev),
            terminated=zeros.bool(),
            truncated=zeros.bool(),
            episode={},
            speed=self.traffic.speed[:, 0],
        )

    def reset_envs(self, done: torch.Tensor) -> None:
        """Start the environments of the (B,) bool mask ``done`` anew, in place."""
        idx = done.nonzero()[:, 0]
        if idx.numel() == 0:
            return
        fresh = spawn(
            self.config.scenario, len(idx), self.sim, self.config.sim, self.generator, self.discrete
        )
        self.traffic.assign(idx, fresh)
        self.steps[idx] = 0
        self.distance[idx] = 0.0
        self.speed_sum[idx] = 0.0
        self.last_action[idx] = 0.0
        labels = self.raster.draw(fresh)
        self.labels[idx] = labels[:, None].repeat(1, self.config.frame_stack, 1, 1)

    def observe(self, which: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Current (labels (B, S, H, W), sensors (B, D)) of every environment.

        ``which``: a (B,) bool mask or (K,) index tensor to observe only those (K rows out).
        """
        if which is None:
            return self.labels, self.sensors(self.traffic, self.last_action)
        t = self.traffic.select(which)
        return self.labels[which], self.sensors(t, self.last_action[which])

    def step(self, action: torch.Tensor) -> StepOutput:
        """Advance every environment by one policy period (no automatic reset).

        ``action``: (B,) long meta-actions or (B, 2) float [steer, accel] in [-1, 1].
        """
        t, cfg = self.traffic, self.config
        assert t is not None, "call reset() before step()"
        if self.discrete:
            action = action.to(self.device).long().reshape(-1)
            action_vec = torch.nn.functional.one_hot(action, 5).float()
            sim_action = action
        else:
            action_vec = action.to(self.device, torch.float32).reshape(-1, 2).clamp(-1, 1)
            sim_action = action_vec[:, [1, 0]]  # highway-env's order is [accel, steer]
        dt = 1.0 / self.sim_frequency
        start_x, start_y = t.x[:, 0].clone(), t.y[:, 0].clone()
        for frame in range(self.frames_per_step):
            self.sim.step(t, dt, sim_action if frame == 0 else None)
        self.steps += 1
        policy_dt = 1.0 / cfg.policy_frequency  # [s]

        lane = t.lane[:, 0]
        s, lat = self._ego_lane_coordinates(t)
        forward = t.speed[:, 0] * torch.cos(t.heading[:, 0] - self.road.heading_at(lane, s))
        self.distance += torch.hypot(t.x[:, 0] - start_x, t.y[:, 0] - start_y)  # [m] travelled
        self.speed_sum += t.speed[:, 0]
        collision = t.crashed[:, 0]
        off_road = ~self._on_road(t, s, lat)
        arrived = self._arrived(t)
        timeout = self.steps.float() * policy_dt >= self.duration - 1e-9
        success = (arrived | (timeout & (cfg.scenario == "highway"))) & ~collision

        lo, hi = self.scenario.speed_range
        if self.discrete:
            differs = (action_vec != self.last_action).any(1)
            change = (differs & (action != IDLE)).float()
        else:
            change = (action_vec - self.last_action).abs().mean(1) / 2.0
        half_width = self.road.width[lane] / 2
        terms = torch.stack(
            [
                ((forward - lo) / (hi - lo)).clamp(0.0, 1.0),
                -collision.float(),
                -off_road.float(),
                -(lat.abs() / half_width).clamp(max=1.0),
                -change,
                success.float(),
            ],
            1,
        )
        terms = terms * self.weight_vec
        self.last_action = action_vec

        terminated = collision | (off_road & cfg.offroad_terminal) | arrived
        truncated = timeout & ~terminated
        labels = self.raster.draw(t)
        self.labels = torch.cat([self.labels[:, 1:], labels[:, None]], 1)
        episode = {
            "collision": collision,
            "off_road": off_road,
            "success": success,
            "distance": self.distance.clone(),
            "mean_speed": self.speed_sum / self.steps.clamp(min=1),
        }
        return StepOutput(
            labels=self.labels,
            sensors=self.sensors(t, self.last_action),
            reward=terms.sum(1),
            terms=terms,
            terminated=terminated,
            truncated=truncated,
            episode=episode,
            speed=t.speed[:, 0].clone(),
        )

    # ----------------------------------------------------------------- observation parts
    def _ego_lane_coordinates(self, t: Traffic) -> tuple[torch.Tensor, torch.Tensor]:
        lane = t.lane[:, 0]
        s = t.x[:, 0] - self.road.x0[lane]
        return s, t.y[:, 0] - self.road.centre(lane, s)

    def _on_road(self, t: Traffic, s: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        lane = t.lane[:, 0]
        road = self.road
        length = road.length[lane]
        return (lat.abs() <= road.width[lane] / 2) & (s >= -5.0) & (s < length + 5.0)

    def _arrived(self, t: Traffic) -> torch.Tensor:
        if self.config.scenario == "merge":
            return t.x[:, 0] > MERGE_END_X
        return torch.zeros_like(t.crashed[:, 0])

    def sensors(self, t: Traffic, last_action: torch.Tensor) -> torch.Tensor:
        """(B, D) float32 sensor vectors in [-1, 1], in :attr:`sensor_names` order."""
        cfg, road = self.config, self.road
        lane = t.lane[:, 0]
        s, lat = self._ego_lane_coordinates(t)
        width = road.width[lane]
        heading_error = t.heading[:, 0] - road.heading_at(lane, s)
        idx = road.lane_id[lane].float()
        count = road.edge_lanes[lane].float()
        edge_left = width / 2 + lat + width * idx
        edge_right = width / 2 - lat + width * (count - 1 - idx)
        on_road = torch.where(self._on_road(t, s, lat), 1.0, -1.0)
        ego = torch.stack(
            [
                t.speed[:, 0] / SPEED_SCALE,
                torch.sin(heading_error),
                torch.cos(heading_error),
                lat / width,
                edge_left / EDGE_SCALE,
                edge_right / EDGE_SCALE,
                on_road,
            ],
            1,
        )
        distance, rel_speed = lidar(t, cfg.n_rays, cfg.ray_range)
        hit = distance < cfg.ray_range
        closing = torch.where(hit, -rel_speed, 0.0) / CLOSING_SCALE
        rays = torch.stack([distance / cfg.ray_range, closing], 2).reshape(len(lane), -1)
        parts = [ego, last_action, rays]
        if cfg.scenario == "merge":
            ramp = road.ramp[t.lane] & ((t.kind == EGO) | (t.kind == IDM))  # road.vehicles
            near = (ramp & ((t.x - t.x[:, :1]).abs() < 40.0)).any(1).float()
            parts.append(torch.stack([(MERGE_END_X - t.x[:, 0]) / 400.0, near], 1))
        return torch.cat(parts, 1).clamp(-1.0, 1.0)

    def camera(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3 S) uint8 frames from stacked label maps (B, S, H, W)."""
        frames = self.raster.colorize(labels)  # (B, S, H, W, 3)
        return frames.permute(0, 2, 3, 1, 4).reshape(*frames.shape[0:1], *frames.shape[2:4], -1)


def _episode_info(out: StepOutput, i: int, cpu: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "collision": bool(cpu["collision"][i]),
        "off_road": bool(cpu["off_road"][i]),
        "success": bool(cpu["success"][i]),
        "distance": float(cpu["distance"][i]),
        "mean_speed": float(cpu["mean_speed"][i]),
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
        self.sensor_groups = self.core.sensor_groups
        self.idle_action = IDLE if self.core.discrete else np.zeros(2, np.float32)
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
        labels_np = out.labels[:, -1].cpu().numpy() if self.config.road_labels else None
        infos: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            info: dict[str, Any] = {
                "reward_terms": dict(zip(REWARD_TERMS, terms[i].tolist())),
                "speed": float(speeds[i]),
            }
            if labels_np is not None:
                info["road_labels"] = labels_np[i].copy()
            infos.append(info)
        done_np = done.cpu().numpy()
        if done_np.any():
            cpu = {k: v.cpu().numpy() for k, v in out.episode.items()}
            truncated = out.truncated.cpu().numpy()
            for i in np.flatnonzero(done_np):
                infos[i].update(_episode_info(out, i, cpu))
                infos[i]["terminal_observation"] = {k: v[i].copy() for k, v in obs.items()}
                infos[i]["TimeLimit.truncated"] = bool(truncated[i])
                assert all(k in infos[i] for k in EPISODE_KEYS)
            core.reset_envs(done)
            labels, sensors = core.observe(done)
            fresh = self._obs(labels, sensors)
            for key in obs:
                obs[key][done_np] = fresh[key]
            if labels_np is not None:
                fresh_labels = labels[:, -1].cpu().numpy()
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

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(self, render_mode: str | None = None, **options: Any) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode: {render_mode!r} is not supported; use 'rgb_array'")
        if options.get("num_envs", 1) != 1:
            raise ConfigError("num_envs: the Gymnasium view has one env; use BatchedDriveVecEnv")
        self.core = BatchedDrive(**options)
        self.config = self.core.config
        self.render_mode = render_mode
        self.observation_space = self.core.observation_space()
        self.action_space = self.core.action_space()
        self.sensor_names = self.core.sensor_names
        self.sensor_groups = self.core.sensor_groups
        self.idle_action: Any = IDLE if self.core.discrete else np.zeros(2, np.float32)

    def _obs(self, labels: torch.Tensor, sensors: torch.Tensor) -> dict[str, np.ndarray]:
        return {
            "camera": self.core.camera(labels)[0].cpu().numpy(),
            "sensors": sensors[0].cpu().numpy().astype(np.float32, copy=False),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None:  # draw the simulator's seed from ours, so one seed fixes everything
            seed = int(self.np_random.integers(2**31 - 1))
        self.core.seed(seed)
        out = self.core.reset()
        info: dict[str, Any] = {"speed": float(out.speed[0])}
        if self.config.road_labels:
            info["road_labels"] = out.labels[0, -1].cpu().numpy()
        return self._obs(out.labels, out.sensors), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.core.discrete:
            act = torch.tensor([int(action)])
        else:
            act = torch.as_tensor(np.asarray(action, np.float32).reshape(1, 2))
        out = self.core.step(act)
        terms = out.terms[0].cpu().numpy()
        info: dict[str, Any] = {
            "reward_terms": dict(zip(REWARD_TERMS, terms.tolist())),
            "speed": float(out.speed[0]),
        }
        if self.config.road_labels:
            info["road_labels"] = out.labels[0, -1].cpu().numpy()
        terminated, truncated = bool(out.terminated[0]), bool(out.truncated[0])
        if terminated or truncated:
            cpu = {k: v.cpu().numpy() for k, v in out.episode.items()}
            info.update(_episode_info(out, 0, cpu))
        reward = float(sum(info["reward_terms"].values()))
        return self._obs(out.labels, out.sensors), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self.core.camera(self.core.labels[:, -1:])[0].cpu().numpy()
        return None


def make_vec_env(env_id: str, num_envs: int, seed: int | None = None, **options: Any) -> VecEnv:
    """The batched VecEnv of a registered ``Batched`` id (for the training code's switch)."""
    spec = gym.spec(env_id)
    if "Batched" not in env_id:
        raise ConfigError(f"{env_id}: not a batched id; batched ids contain 'Batched'")
    venv = BatchedDriveVecEnv(num_envs=num_envs, **{**spec.kwargs, **options})
    if seed is not None:
        venv.seed(seed)
    return venv
