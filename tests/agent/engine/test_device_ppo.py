"""The device engine (agent/engine/): its advantages are SB3's, it learns, and its runs are
ordinary runs (checkpoints, resume, evaluation, export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer

from drive_attention.agent.engine import DevicePPO, TensorEnv, gae
from drive_attention.agent.engine.speed import compare
from drive_attention.agent.run.admission import prepare
from drive_attention.agent.run.build import make_algo, make_vec_env, probe_env, wrap_normalize
from drive_attention.agent.run.checkpoint import latest_checkpoint, load_checkpoint
from drive_attention.agent.run.config import ConfigError
from drive_attention.agent.run.config_files import load_config
from drive_attention.agent.run.export import export_sb3
from drive_attention.agent.training import Trainer

ROOT = Path(__file__).resolve().parents[3]
DEFAULT = ROOT / "configs" / "default.yaml"


def test_gae_equals_sb3_rollout_buffer() -> None:
    """Advantages and returns of a fixed rollout with episode starts mid-rollout and a mix of
    finished and running envs after the last step: SB3's numpy loop, to float32 rounding."""
    steps, envs, gamma, lam = 7, 5, 0.97, 0.9
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(steps, envs)).astype(np.float32)
    values = rng.normal(size=(steps, envs)).astype(np.float32)
    starts = (rng.random((steps, envs)) < 0.25).astype(np.float32)
    starts[0] = 1.0
    last_values = rng.normal(size=envs).astype(np.float32)
    last_dones = np.array([True, False, True, False, False])
    sb3 = RolloutBuffer(steps, spaces.Box(-1, 1, (2,)), spaces.Discrete(3), "cpu", lam, gamma, envs)
    for t in range(steps):
        sb3.add(
            np.zeros((envs, 2), np.float32), np.zeros((envs, 1)), rewards[t], starts[t],
            torch.as_tensor(values[t]), torch.zeros(envs),
        )  # fmt: skip
    sb3.compute_returns_and_advantage(torch.as_tensor(last_values), last_dones)
    advantages, returns = gae(
        torch.as_tensor(rewards),
        torch.as_tensor(values),
        torch.as_tensor(starts),
        torch.as_tensor(last_values),
        torch.as_tensor(last_dones),
        gamma,
        lam,
    )
    torch.testing.assert_close(advantages, torch.as_tensor(sb3.advantages))
    torch.testing.assert_close(returns, torch.as_tensor(sb3.returns))


def _model(overrides: list[str], seed: int = 0):
    config = load_config(DEFAULT, overrides)
    venv = wrap_normalize(make_vec_env(config.env, seed), config.env, config.algo.gamma)
    return config, make_algo(config, venv, probe_env(config.env), "cpu", seed=seed)


# 4 envs of 3-step episodes (time-limit truncations and some collisions), rewards normalised
SMALL = [
    "env.n_envs=4", "env.kwargs.duration=3", "env.kwargs.camera_size=[32, 32]",
    "env.normalize_sensors=true", "algo.n_steps=10", "algo.batch_size=20", "model.dim=16",
]  # fmt: skip


@pytest.mark.parametrize(
    "arm", [["model.name=attention"], ["model.name=late_fusion", "env.kwargs.action=continuous"]]
)
def test_rollout_equals_sb3_collection(one_thread, arm: list[str]) -> None:
    """One rollout of each engine from the same weights, env seed and sampling seed: the same
    stored rewards (truncations bootstrapped with the value of the last observation, rewards
    and sensors normalised), values, log-probabilities, starts, advantages and returns; for the
    attention encoder with meta-actions and the late-fusion baseline with continuous actions."""
    _, sb3 = _model([*SMALL, *arm, "train.engine=sb3"])
    _, dev_model = _model([*SMALL, *arm, "train.engine=device"])
    dev = DevicePPO(dev_model)
    _, hooks = sb3._setup_learn(40, None)
    torch.manual_seed(1)
    assert sb3.collect_rollouts(sb3.env, hooks, sb3.rollout_buffer, sb3.n_steps)
    _, hooks = dev.setup(40, None)
    torch.manual_seed(1)
    assert dev.collect(hooks)
    buffer, rollout = sb3.rollout_buffer, dev.rollout
    assert buffer.episode_starts[1:].any(), "episodes ended inside the rollout"
    for name, ours in (
        ("rewards", rollout.rewards),
        ("values", rollout.values),
        ("log_probs", rollout.log_probs),
        ("episode_starts", rollout.starts),
        ("advantages", rollout.advantages),
        ("returns", rollout.returns),
    ):
        torch.testing.assert_close(ours, torch.as_tensor(getattr(buffer, name)), msg=name)
    torch.testing.assert_close(
        rollout.actions,
        torch.as_tensor(buffer.actions).reshape_as(rollout.actions).to(rollout.actions.dtype),
    )
    assert sb3.num_timesteps == dev_model.num_timesteps == 40


def _evaluate(model, config, seed: int = 7) -> tuple[float, float]:
    """Collision rate and mean return of the policy as PPO trains it (sampled actions, seeded)
    over the episodes that end in one episode length of 64 seeded envs (each env ends one at
    least; a crashed one restarts and may end again)."""
    tensors = TensorEnv(make_vec_env(config.env, seed), "cpu")
    tensors.core.seed(seed)
    tensors.core.reset()
    obs = tensors.start()
    torch.manual_seed(seed)
    for _ in range(int(config.env.options.duration * config.env.options.policy_frequency)):
        with torch.no_grad():
            actions = model.policy(obs)[0]
        obs = tensors.step(actions).obs
    episodes, metrics = tensors.tally.drain()
    assert len(episodes) >= 64
    return metrics["rollout/collision_rate"], float(np.mean([r for r, _ in episodes]))


def test_device_engine_learns_to_avoid_collisions(one_thread) -> None:
    """5k steps of the batched highway (sensors-only policy, 10 s episodes): the policy crashes
    far less often on the same seeded episodes and earns more. Measured on seeds 0-3: collisions
    0.82 -> 0.39-0.47, return 6.0 -> 9.3-9.4."""
    torch.manual_seed(0)
    config, model = _model(
        [
            "train.engine=device", "env.n_envs=64", "algo.n_steps=16", "algo.batch_size=512",
            "algo.n_epochs=4", "algo.learning_rate=3e-3", "model.name=sensors_only",
            "env.kwargs.duration=10", "env.kwargs.camera_size=[32, 32]",
            "env.normalize_reward=false",
        ]
    )  # fmt: skip
    collisions, ret = _evaluate(model, config)
    DevicePPO(model).learn(5120)
    collisions_after, ret_after = _evaluate(model, config)
    assert collisions_after <= collisions - 0.2, (collisions, collisions_after)
    assert ret_after >= ret + 2.0, (ret, ret_after)


def test_device_engine_refuses_what_it_cannot_train() -> None:
    with pytest.raises(ConfigError, match=r"^train.engine: device trains on the batched sim"):
        load_config(DEFAULT, ["train.engine=device", "env.id=DriveAttention/Highway-v0"])
    with pytest.raises(ConfigError, match=r"^train.engine: device trains PPO only"):
        load_config(
            ROOT / "configs" / "sac.yaml",
            ["train.engine=device", "env.id=DriveAttention/BatchedHighway-v0"],
        )


TINY_RUN = [
    "--steps", "128", "--wandb", "disabled", "--device", "cpu", "train.engine=device",
    "env.n_envs=8", "algo.n_steps=8", "algo.batch_size=32", "algo.n_epochs=1", "model.dim=16",
    "env.kwargs.duration=4", "env.kwargs.camera_size=[32, 32]", "train.eval_env=null",
    "train.eval_every=128", "train.eval_episodes=1", "train.checkpoint_every=64",
    "train.final_eval_episodes=1", "logging.video=false",
]  # fmt: skip


def test_device_run_checkpoints_resumes_and_evaluates(
    run_script, one_thread, tmp_path: Path
) -> None:
    """scripts/train.py with train.engine=device writes the usual run folder; a resumed run goes
    on from its step without repeating one (in this process, to save a start-up); evaluate.py
    and the SB3 export take the run."""
    result = run_script(
        "train.py", "--config", str(DEFAULT), "--name", "d", f"logging.root={tmp_path}", *TINY_RUN
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "d"
    steps = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("*.safetensors"))
    assert steps == [64, 128]
    assert Trainer(prepare(None, ["train.steps=256"], resume=run)).run() == 0
    after = load_checkpoint(latest_checkpoint(run))
    assert after.step == 256 and after.config["train"]["engine"] == "device"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    totals = [r["time/total_timesteps"] for r in rows if "time/total_timesteps" in r]
    assert totals == sorted(set(totals)) and max(totals) == 256, totals  # no step twice
    assert any("train/loss" in r for r in rows) and any("rollout/ep_rew_mean" in r for r in rows)
    out = tmp_path / "eval.json"
    result = run_script(
        "evaluate.py", "--run", str(run), "--episodes", "1", "--seed", "3", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(out.read_text())["episodes"][0]["seed"] == 3
    export_sb3(run, tmp_path / "d.zip")
    assert PPO.load(tmp_path / "d.zip", device="cpu").num_timesteps == 256


def test_benchmark_times_both_engines_on_one_config(one_thread) -> None:
    """scripts/benchmark_train.py's measurement: both engines train the same tiny config."""
    config = load_config(
        DEFAULT, [*SMALL, "algo.n_steps=4", "algo.batch_size=16", "algo.n_epochs=1"]
    )
    speeds = compare(config, steps=16, warmup=16, device="cpu", repeats=1)
    assert set(speeds) == {"sb3", "device"}
    assert all(len(s.steps_per_s) == 1 and s.median > 0 for s in speeds.values())
