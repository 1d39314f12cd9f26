"""The CUDA paths against the CPU, and a smoke run of ``make bench-gpu`` on the CPU.

Tests marked ``cuda`` skip without a GPU; ``make bench-gpu`` (``scripts/bench_gpu.py``) runs
them with ``pytest -m cuda``. The smoke run (not marked) keeps the GPU command working while no
GPU is around.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger
from test_models import contract_space, make, sample_obs
from torch.testing import assert_close

from drive_attention import envs
from drive_attention.envs.batched import BatchedDrive, BatchedDriveVecEnv
from drive_attention.envs.batched.scenarios import BATCHED
from drive_attention.envs.batched.sim import Traffic
from drive_attention.models import (
    ATTENTION_NAMES,
    EXTRACTOR_NAMES,
    ExtractorConfig,
    attention_from_policy,
    policy_kwargs,
)

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = list(envs.BATCHED_IDS.values())
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (torch sees none); make bench-gpu runs these where there is one",
)


@pytest.fixture
def exact_cuda_math():
    """TF32 off (cuDNN convolutions use it by default): GPU results comparable with the CPU's."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _on(traffic: Traffic, device: str) -> Traffic:
    fields = dataclasses.fields(traffic)
    return Traffic(**{f.name: getattr(traffic, f.name).to(device) for f in fields})


# --- the batched simulator ---------------------------------------------------------------------


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_batched_core_on_cuda_follows_the_cpu(scenario: str, exact_cuda_math) -> None:
    """From one spawned state, the same actions give the same traffic, sensors, rewards and
    frames on both devices (float round-off may flip a rare threshold decision: an environment
    that diverges is left out from then on, and at most a tenth may)."""
    b = 32
    source = BatchedDrive(scenario=scenario, num_envs=b)
    source.seed(0)
    source.reset()
    start = source.traffic
    # Arrivals during an episode are random draws, and a CPU and a CUDA generator seeded alike
    # draw different numbers: the compared cores have none (their start has the usual traffic).
    allowed = BATCHED[scenario].setting_names()
    options = {"sim": {"spawn_probability": 0.0}} if "spawn_probability" in allowed else {}
    cpu = BatchedDrive(scenario=scenario, num_envs=b, device="cpu", **options)
    gpu = BatchedDrive(scenario=scenario, num_envs=b, device="cuda", **options)
    cpu.restart_from(start.clone())
    gpu.restart_from(_on(start, "cuda"))
    same = torch.ones(b, dtype=torch.bool)  # environments that have not diverged
    rng = np.random.default_rng(0)
    for step in range(6):
        if cpu.discrete:
            action = torch.as_tensor(rng.integers(0, cpu.action_dim, b))
        else:
            action = torch.as_tensor(rng.uniform(-1, 1, (b, 2)), dtype=torch.float32)
        a, g = cpu.step(action), gpu.step(action.cuda())
        assert g.labels.device.type == g.sensors.device.type == g.reward.device.type == "cuda"
        error = torch.maximum(
            (cpu.traffic.x - gpu.traffic.x.cpu()).abs(), (cpu.traffic.y - gpu.traffic.y.cpu()).abs()
        ).amax(1)  # (B,) [m]
        same &= error < 1e-2
        assert same.float().mean() >= 0.9, f"step {step}: position errors [m] {error.tolist()}"
        s = same
        assert_close(g.sensors.cpu()[s], a.sensors[s], atol=1e-3, rtol=1e-3)
        assert_close(g.reward.cpu()[s], a.reward[s], atol=1e-3, rtol=1e-3)
        assert torch.equal(g.terminated.cpu()[s], a.terminated[s])
        agree = (g.labels.cpu()[s] == a.labels[s]).float().mean()
        assert agree >= 0.99, f"step {step}: {agree:.4f} of the label pixels agree"
        frames = gpu.camera(g.labels)
        assert frames.device.type == "cuda" and frames.dtype == torch.uint8
        agree = (frames.cpu()[s] == cpu.camera(a.labels)[s]).float().mean()
        assert agree >= 0.99, f"step {step}: {agree:.4f} of the camera pixels agree"


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_tensor_api_with_resets_stays_on_cuda(scenario: str) -> None:
    """The loop ``make bench-gpu`` times: random actions, frames, sensors and automatic resets,
    every tensor on the GPU."""
    core = BatchedDrive(scenario=scenario, num_envs=64, device="cuda", duration=2.0)
    core.seed(0)
    core.reset()
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    resets = 0
    for _ in range(4):
        if core.discrete:
            action = torch.randint(core.action_dim, (64,), generator=gen, device="cuda")
        else:
            action = torch.rand((64, 2), generator=gen, device="cuda") * 2 - 1
        out = core.step(action)
        frames = core.camera(out.labels)
        done = out.terminated | out.truncated
        core.reset_envs(done)
        tensors = [out.labels, out.sensors, out.reward, out.terms, frames, done]
        tensors += list(out.episode.values())
        assert all(t.device.type == "cuda" for t in tensors)
        assert torch.isfinite(out.sensors).all() and out.sensors.abs().max() <= 1.0
        assert (core.stats.steps[done] == 0).all(), "finished environments start anew"
        if done.any():
            labels, sensors = core.observe(done)
            assert labels.device.type == sensors.device.type == "cuda"
        resets += int(done.sum())
    assert resets >= 64, "a 2 s episode at 1 Hz ends by its second step"


@pytest.mark.cuda
@needs_cuda
def test_vec_env_on_cuda_trains_with_ppo(exact_cuda_math) -> None:
    """SB3 PPO with the simulator and the policy on the GPU; the policy then gives the same
    values on the CPU, and its attention maps stay on the GPU."""
    venv = BatchedDriveVecEnv(num_envs=8, device="cuda")
    venv.seed(0)
    config = ExtractorConfig(dim=16, heads=2, features_dim=24)
    model = PPO("MultiInputPolicy", venv, policy_kwargs=policy_kwargs(config, venv.sensor_names),
                n_steps=32, batch_size=64, n_epochs=2, seed=0, device="cuda")  # fmt: skip
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.learn(256)
    assert model.num_timesteps >= 256
    assert next(model.policy.parameters()).device.type == "cuda"
    obs = model.get_env().reset()  # channel-first, as the policy sees it
    maps = attention_from_policy(model, obs)
    assert maps.weights.device.type == "cuda"
    assert_close(maps.weights.sum(-1), torch.ones(maps.weights.shape[:-1], device="cuda"))
    model.policy.set_training_mode(False)
    on_cpu = type(model.policy)(**model.policy._get_constructor_parameters()).to("cpu")
    on_cpu.load_state_dict(model.policy.state_dict())
    on_cpu.set_training_mode(False)
    with torch.no_grad():
        values = model.policy.predict_values(model.policy.obs_to_tensor(obs)[0])
        expected = on_cpu.predict_values(on_cpu.obs_to_tensor(obs)[0])
    assert_close(values.cpu(), expected, atol=1e-4, rtol=1e-4)


# --- the encoder -------------------------------------------------------------------------------


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_extractor_on_cuda_equals_cpu(name: str, exact_cuda_math) -> None:
    extractor = make(name).eval()
    on_gpu = copy.deepcopy(extractor).cuda()
    obs = sample_obs(contract_space(), batch=8)
    obs_gpu = {k: v.cuda() for k, v in obs.items()}
    with torch.no_grad():
        features = on_gpu(obs_gpu)
        assert features.device.type == "cuda"
        assert_close(features.cpu(), extractor(obs), atol=1e-4, rtol=1e-4)
        if name not in ATTENTION_NAMES:
            return
        explicit, maps = on_gpu(obs_gpu, return_attention=True)
        _, expected = extractor(obs, return_attention=True)
    assert_close(explicit, features, atol=1e-5, rtol=1e-5)  # SDPA and explicit paths on CUDA
    assert maps.weights.device.type == "cuda"
    assert_close(maps.weights.cpu(), expected.weights, atol=1e-5, rtol=1e-4)
    assert maps.to("cpu").weights.device.type == "cpu"


# --- make bench-gpu ----------------------------------------------------------------------------


@pytest.mark.slow  # half a minute; make bench-gpu runs the script itself on a GPU
def test_bench_gpu_smoke_run_on_cpu(tmp_path: Path) -> None:
    """``scripts/bench_gpu.py --device cpu --quick``: every part runs and the JSON is whole."""
    out = tmp_path / "bench_gpu.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), "--device", "cpu", "--quick"]
    cmd += ["--threads", "1", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["complete"] and result["ok"]
    assert {"torch", "cuda", "device_name"} <= set(result["system"])
    assert result["tests"]["status"] == "skipped"
    assert set(result["sim"]) == set(envs.BATCHED_IDS), "every batched scenario is measured"
    for env_id, entry in result["sim"].items():
        assert entry["status"] == "ok", (env_id, entry)
        assert list(entry["B"]) == [str(b) for b in result["settings"]["batch_sizes"]]
        for row in entry["B"].values():
            assert row["steps_per_s"] > 0 and row["frames_per_s"] > 0
            assert row["obs_device"] == row["sensors_device"] == "cpu"
            assert row["camera_shape"] == [64, 64, 3]
    assert result["train"], "no training run"
    for name, row in result["train"].items():
        assert row["status"] == "ok" and row["device"] == "cpu", (name, row)
        assert row["steps"] >= row["rollout_steps"] and row["steps_per_s"] > 0
    assert result["goal"]["verdict"]
    assert "steps/s" in proc.stdout  # the table


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_bench_gpu_says_how_to_run_without_cuda(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), "--skip-sim", "--skip-train"]
    proc = subprocess.run(
        [*cmd, "--json", str(tmp_path / "x.json")], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "--device cpu" in proc.stderr
    assert not (tmp_path / "x.json").exists()
