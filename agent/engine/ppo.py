"""The device engine: PPO's collection and update loop over an SB3 ``PPO`` model's policy, with
the batched simulator, the rollout, GAE and the update as tensors on the training device.

The model stays the SB3 ``PPO`` that :func:`agent.run.build.make_algo` builds: the same policy
class and optimiser, the same counters, logger, schedules and callbacks (progress bar, periodic
checkpoints and evaluations, the stop on a signal), so checkpoints, resume, export and
evaluation do not know which engine trained a run. What changes is the loop:

- the simulator is stepped as tensors (:class:`agent.engine.tensors.TensorEnv`), never through
  numpy, and the truncated envs' bootstrap values come from one batched forward per step;
- the rollout is preallocated on the device, camera frames as uint8 (SB3 keeps float32 copies);
- GAE runs in torch; minibatches are gathered by index on the device;
- the update's figures stay tensors until the end of the update (one host read per update);
- Adam runs its fused kernel where this torch has one for the device, gradient clipping its
  foreach kernel; ``model.bf16`` puts the encoder under bf16 autocast on CUDA, as on the SB3
  engine (the extractor does it itself).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from drive_attention.agent.engine.loss import STATS, LossWeights, clipped_loss
from drive_attention.agent.engine.rollout import Rollout
from drive_attention.agent.engine.tensors import Obs, TensorEnv


def fuse_adam(optimizer: torch.optim.Optimizer, device: torch.device) -> bool:
    """Switch ``optimizer`` (Adam) to the fused kernel where torch has one for ``device`` (the
    same update, one kernel for every tensor); True when it did."""
    if not isinstance(optimizer, torch.optim.Adam):
        return False
    try:
        torch.optim.Adam([torch.zeros(1, device=device, requires_grad=True)], fused=True)
    except (RuntimeError, ValueError):
        return False
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, False
    for state in optimizer.state.values():  # fused Adam keeps its step count on the device
        if "step" in state:
            state["step"] = state["step"].to(device=device, dtype=torch.float32)
    return True


class DevicePPO:
    """Trains ``model`` (SB3 ``PPO`` over a batched VecEnv) with the device loop; ``learn``
    takes SB3's arguments."""

    def __init__(self, model: PPO) -> None:
        if not isinstance(model, PPO):
            raise TypeError(f"the device engine trains PPO, got {type(model).__name__}")
        self.model = model
        self.policy = model.policy
        self.device = model.device
        self.env = TensorEnv(model.get_env(), self.device)
        self.rollout = Rollout(
            model.n_steps,
            self.env.num_envs,
            self.policy.observation_space,
            model.action_space,
            self.device,
        )
        self.obs: Obs | None = None
        self.starts = torch.ones(self.env.num_envs, device=self.device)

    # ----------------------------------------------------------------- the loop
    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int | None = 1,
        reset_num_timesteps: bool = True,
        **_: Any,
    ) -> PPO:
        """SB3's ``OnPolicyAlgorithm.learn`` with the device loop inside."""
        model = self.model
        total, hooks = self.setup(total_timesteps, callback, reset_num_timesteps)
        hooks.on_training_start(locals(), globals())
        iteration = 0
        try:
            while model.num_timesteps < total:
                if not self.collect(hooks):
                    break
                iteration += 1
                model._update_current_progress_remaining(model.num_timesteps, total)
                if log_interval is not None and iteration % log_interval == 0:
                    model.dump_logs(iteration)
                self.train()
        finally:
            self.env.store()
        hooks.on_training_end()
        return model

    def setup(
        self, total_timesteps: int, callback: Any = None, reset_num_timesteps: bool = True
    ) -> tuple[int, BaseCallback]:
        """SB3's ``_setup_learn`` (counters, episode buffer, callbacks; the env reset where SB3
        resets it), then the env's current state as tensors; the total steps and callback."""
        model = self.model
        last = model._last_obs
        total, hooks = model._setup_learn(total_timesteps, callback, reset_num_timesteps, "PPO")
        fuse_adam(self.policy.optimizer, self.device)
        if self.obs is None or model._last_obs is not last:  # the env was (re)started
            self.starts = torch.as_tensor(
                model._last_episode_starts, dtype=torch.float32, device=self.device
            )
        self.obs = self.env.start()
        return total, hooks

    def collect(self, hooks: BaseCallback) -> bool:
        """Fill the rollout; False when a callback stopped training."""
        model, policy, env, rollout = self.model, self.policy, self.env, self.rollout
        policy.set_training_mode(False)
        hooks.on_rollout_start()
        obs, starts = self.obs, self.starts
        assert obs is not None
        for step in range(model.n_steps):
            with torch.no_grad():
                actions, values, log_probs = policy(obs)
            out = env.step(actions)
            model.num_timesteps += env.num_envs
            env.store()  # a checkpoint written by a callback holds this step's statistics
            hooks.update_locals({"dones": out.done, "rewards": out.reward})
            if not hooks.on_step():
                self.obs, self.starts = out.obs, out.done.float()
                return False
            reward = out.reward
            if out.terminal is not None:  # truncated episodes: bootstrap, one batched forward
                with torch.no_grad():
                    terminal_values = policy.predict_values(out.terminal).float().flatten()
                reward = reward.index_add(0, out.truncated, model.gamma * terminal_values)
            rollout.add(step, obs, actions, reward, starts, values.float(), log_probs.float())
            obs, starts = out.obs, out.done.float()
        with torch.no_grad():
            last_values = policy.predict_values(obs).float()
        rollout.finish(last_values, starts, model.gamma, model.gae_lambda)
        self.obs, self.starts = obs, starts
        self._log_episodes()
        hooks.update_locals({"dones": starts})
        hooks.on_rollout_end()
        return True

    def _log_episodes(self) -> None:
        """The rollout's ended episodes into SB3's episode buffer, their metrics to the logger."""
        episodes, metrics = self.env.tally.drain()
        now = time.time() - self.model.start_time / 1e9
        self.model.ep_info_buffer.extend({"r": r, "l": n, "t": now} for r, n in episodes)
        for key, value in metrics.items():
            self.model.logger.record(key, value)

    def train(self) -> None:
        """PPO's update over the rollout: ``n_epochs`` passes of ``batch_size`` minibatches."""
        model, policy = self.model, self.policy
        policy.set_training_mode(True)
        model._update_learning_rate(policy.optimizer)
        progress = model._current_progress_remaining
        clip_vf = model.clip_range_vf(progress) if model.clip_range_vf is not None else None
        weights = LossWeights(
            float(model.clip_range(progress)),
            clip_vf,
            float(model.ent_coef),
            float(model.vf_coef),
            model.normalize_advantage,
        )
        discrete = isinstance(model.action_space, spaces.Discrete)
        params = list(policy.parameters())
        figures: list[torch.Tensor] = []
        kls: list[torch.Tensor] = []
        loss = torch.zeros((), device=self.device)
        for _ in range(model.n_epochs):
            kls, stop = [], False
            for batch in self.rollout.minibatches(model.batch_size):
                actions = batch.actions.long().flatten() if discrete else batch.actions
                values, log_prob, entropy = policy.evaluate_actions(batch.obs, actions)
                loss, stats = clipped_loss(
                    log_prob.float(),
                    batch.old_log_probs,
                    batch.advantages,
                    values.float().flatten(),
                    batch.old_values,
                    batch.returns,
                    None if entropy is None else entropy.float(),
                    weights,
                )
                figures.append(stats)
                kls.append(stats[3])
                # SB3's early stop on the approximate KL (a host read per minibatch, only then)
                if model.target_kl is not None and float(stats[3]) > 1.5 * model.target_kl:
                    stop = True
                    break
                policy.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, model.max_grad_norm, foreach=True)
                policy.optimizer.step()
            model._n_updates += 1
            if stop:
                break
        self._log_update(figures, kls, loss, weights)

    def _log_update(
        self, figures: list[torch.Tensor], kls: list[torch.Tensor], loss: torch.Tensor, w: Any
    ) -> None:
        """SB3's ``train/`` figures of the update, read from the device at once."""
        model, rollout = self.model, self.rollout
        values, returns = rollout.values.flatten(), rollout.returns.flatten()
        var_returns = returns.var(unbiased=False)
        explained = 1 - (returns - values).var(unbiased=False) / var_returns
        explained = torch.where(var_returns == 0, torch.nan, explained)
        read = torch.cat(
            [
                torch.stack(figures).mean(0),
                torch.stack([torch.stack(kls).mean(), loss.detach().float(), explained]),
            ]
        ).tolist()
        figure = dict(zip([*STATS, "approx_kl", "loss", "explained_variance"], read))
        record = model.logger.record
        for name, value in figure.items():  # approx_kl: over the last epoch, as SB3 logs it
            record(f"train/{name}", value)
        if hasattr(policy := model.policy, "log_std"):
            record("train/std", float(torch.exp(policy.log_std).mean()))
        record("train/n_updates", model._n_updates, exclude="tensorboard")
        record("train/clip_range", w.clip_range)
        if w.clip_range_vf is not None:
            record("train/clip_range_vf", w.clip_range_vf)
