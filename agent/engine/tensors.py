"""The batched simulator as tensors, for the device engine: what the SB3 VecEnv chain
(``BatchedDriveVecEnv`` → ``VecMonitor`` → ``VecNormalize`` → ``VecTransposeImage``) does per
step, done on the training device without numpy.

- observations: camera ``(B, 3 S, H, W)`` uint8 (channel-first, as ``VecTransposeImage`` gives
  SB3's policy), sensors ``(B, D)`` float32, normalised as ``VecNormalize`` would;
- rewards normalised by the running std of the discounted return, as ``VecNormalize`` does;
- finished envs reset in the same step, the truncated ones' last observations kept for the
  value bootstrap;
- episode returns, lengths, end-of-episode metrics and summed reward terms as tensors
  (:class:`EpisodeTally`), read back once per rollout.

The VecEnv's own objects stay the owners of their state: the normalisation statistics are read
from ``VecNormalize`` at the start and written back after every step (checkpoints save them from
there), so a run continues on either engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor, VecNormalize

from drive_attention.agent.run.callbacks import EPISODE_METRICS
from drive_attention.envs.batched.core import BatchedDrive
from drive_attention.envs.contract import REWARD_TERMS

Obs = dict[str, torch.Tensor]


def find_wrapper(venv: VecEnv, kind: type) -> Any:
    """The first wrapper of type ``kind`` in the chain above the base VecEnv, else None."""
    while isinstance(venv, VecEnvWrapper):
        if isinstance(venv, kind):
            return venv
        venv = venv.venv
    return None


class Moments:
    """SB3's ``RunningMeanStd`` in float64 torch: the same parallel-moments update."""

    def __init__(self, rms: Any, device: torch.device) -> None:
        self.mean = torch.as_tensor(np.asarray(rms.mean), dtype=torch.float64, device=device)
        self.var = torch.as_tensor(np.asarray(rms.var), dtype=torch.float64, device=device)
        self.count = torch.tensor(float(rms.count), dtype=torch.float64, device=device)

    def update(self, batch: torch.Tensor) -> None:
        """Fold in a batch ``(N, ...)`` (float64)."""
        n = batch.shape[0]
        mean, var = batch.mean(0), batch.var(0, unbiased=False)
        delta = mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def store(self, rms: Any) -> None:
        """Write the statistics into SB3's ``RunningMeanStd`` ``rms`` (numpy)."""
        rms.mean = self.mean.cpu().numpy().reshape(np.shape(rms.mean))
        rms.var = self.var.cpu().numpy().reshape(np.shape(rms.var))
        rms.count = float(self.count)


class EpisodeTally:
    """Episode returns, lengths, metrics and reward terms of B envs, as tensors; :meth:`drain`
    reads the episodes that ended since the last drain (one host copy)."""

    def __init__(self, num_envs: int, device: torch.device) -> None:
        self.ret = torch.zeros(num_envs, dtype=torch.float64, device=device)  # raw reward
        self.length = torch.zeros(num_envs, dtype=torch.float64, device=device)
        self.terms = torch.zeros(num_envs, len(REWARD_TERMS), dtype=torch.float64, device=device)
        self.ended: list[torch.Tensor] = []  # (3, B) each: done, return, length
        self.sums: dict[str, torch.Tensor] = {}  # metric -> summed over ended episodes

    def add(
        self, reward: torch.Tensor, terms: torch.Tensor, done: torch.Tensor, episode: Obs
    ) -> None:
        self.ret += reward
        self.length += 1
        self.terms += terms
        d = done.double()
        self.ended.append(torch.stack([d, self.ret, self.length]))
        values = {
            f"rollout/{EPISODE_METRICS[k]}": v for k, v in episode.items() if k in EPISODE_METRICS
        }
        values.update(
            {f"rollout/reward/{name}": self.terms[:, i] for i, name in enumerate(REWARD_TERMS)}
        )
        for key, value in values.items():
            summed = (value.double() * d).sum()
            self.sums[key] = self.sums[key] + summed if key in self.sums else summed
        keep = 1.0 - d
        self.ret *= keep
        self.length *= keep
        self.terms *= keep[:, None]

    def drain(self) -> tuple[list[tuple[float, int]], dict[str, float]]:
        """The ended episodes' ``(return, length)`` and the metrics' means over them."""
        if not self.ended:
            return [], {}
        ended = torch.stack(self.ended, 1).flatten(1)  # (3, T * B)
        keys = list(self.sums)
        sums = torch.stack([self.sums[k] for k in keys]) if keys else ended.new_zeros(0)
        ended_np, sums_np = ended.cpu().numpy(), sums.cpu().numpy()
        self.ended, self.sums = [], {}
        mask = ended_np[0] > 0
        episodes = [(float(r), int(n)) for r, n in zip(ended_np[1][mask], ended_np[2][mask])]
        if not episodes:
            return [], {}
        return episodes, {k: float(v) / len(episodes) for k, v in zip(keys, sums_np)}


@dataclass
class Step:
    """One step of :class:`TensorEnv`; tensors on the training device."""

    obs: Obs  # the next observations (reset ones where done)
    reward: torch.Tensor  # (B,) float32, normalised where the config asks
    done: torch.Tensor  # (B,) bool
    truncated: torch.Tensor  # (K,) long indices of the envs cut by the time limit
    terminal: Obs | None  # their last observations (K rows), None when K = 0


class TensorEnv:
    """The SB3 VecEnv chain of a batched run, stepped as tensors on ``device``."""

    def __init__(self, venv: VecEnv, device: torch.device | str) -> None:
        base = venv.unwrapped
        core = getattr(base, "core", None)
        if not isinstance(core, BatchedDrive):
            raise TypeError(f"the device engine steps the batched simulator; got {type(base)}")
        self.core: BatchedDrive = core
        self.device = torch.device(device)
        self.num_envs = core.num_envs
        self.normalize: VecNormalize | None = find_wrapper(venv, VecNormalize)
        self.monitor: VecMonitor | None = find_wrapper(venv, VecMonitor)
        self.tally = EpisodeTally(self.num_envs, self.device)
        self.obs_moments: Moments | None = None
        self.ret_moments: Moments | None = None
        self.returns = torch.zeros(self.num_envs, dtype=torch.float64, device=self.device)

    # ----------------------------------------------------------------- state in and out
    def start(self) -> Obs:
        """Read the normalisation state from ``VecNormalize``; the current observations."""
        norm = self.normalize
        if norm is not None:
            if norm.norm_obs:
                self.obs_moments = Moments(norm.obs_rms["sensors"], self.device)
            self.ret_moments = Moments(norm.ret_rms, self.device)
            self.returns = torch.as_tensor(norm.returns, dtype=torch.float64, device=self.device)
        labels, sensors = self.core.observe()
        return {"camera": self._camera(labels), "sensors": self._sensors(sensors, False)}

    def store(self) -> None:
        """Write the normalisation state back into ``VecNormalize`` (what checkpoints save)."""
        norm = self.normalize
        if norm is None:
            return
        if self.obs_moments is not None:
            self.obs_moments.store(norm.obs_rms["sensors"])
        if self.ret_moments is not None:
            self.ret_moments.store(norm.ret_rms)
        norm.returns = self.returns.cpu().numpy()

    # ----------------------------------------------------------------- the step
    def _camera(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, 3 S, H, W) uint8 frames of label maps (B, S, H, W): a channel-first view."""
        return self.core.camera(labels).to(self.device).permute(0, 3, 1, 2)

    def _sensors(self, sensors: torch.Tensor, update: bool) -> torch.Tensor:
        sensors = sensors.to(self.device, torch.float32)
        moments, norm = self.obs_moments, self.normalize
        if moments is None or norm is None:
            return sensors
        if update:
            moments.update(sensors.double())
        scaled = (sensors.double() - moments.mean) / torch.sqrt(moments.var + norm.epsilon)
        return scaled.clamp(-norm.clip_obs, norm.clip_obs).float()

    def _reward(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        moments, norm = self.ret_moments, self.normalize
        if moments is None or norm is None or not norm.norm_reward:
            return reward.float()
        self.returns = self.returns * norm.gamma + reward
        moments.update(self.returns)
        scaled = reward / torch.sqrt(moments.var + norm.epsilon)
        self.returns = self.returns.masked_fill(done, 0.0)
        return scaled.clamp(-norm.clip_reward, norm.clip_reward).float()

    def step(self, actions: torch.Tensor) -> Step:
        """Step every env with ``actions`` ((B,) long or (B, 2) float, any device)."""
        core, dev = self.core, self.device
        out = core.step(actions.to(core.device))
        done_core = out.terminated | out.truncated
        done = done_core.to(dev)
        reward = out.reward.to(dev, torch.float64)
        camera = self._camera(out.labels)  # a new tensor: reset_envs changes out.labels in place
        sensors = out.sensors.to(dev)
        self.tally.add(
            reward, out.terms.to(dev), done, {k: v.to(dev) for k, v in out.episode.items()}
        )
        truncated = out.truncated.to(dev).nonzero()[:, 0]
        terminal = None
        if truncated.numel():
            terminal = {"camera": camera[truncated], "sensors": sensors[truncated]}
        if bool(done_core.any()):  # camera and sensors are this step's own tensors: edit them
            core.reset_envs(done_core)
            fresh_labels, fresh_sensors = core.observe(done_core)
            camera[done] = self._camera(fresh_labels)
            sensors[done] = fresh_sensors.to(dev, sensors.dtype)
        obs = {"camera": camera, "sensors": self._sensors(sensors, True)}
        if terminal is not None:  # normalised with the statistics just updated, as SB3 does
            terminal["sensors"] = self._sensors(terminal["sensors"], False)
        return Step(obs, self._reward(reward, done), done, truncated, terminal)
