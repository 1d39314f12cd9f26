"""Throughput of the batched backend beside highway-env, and its validation figures.

    python scripts/benchmark_sim.py --json OUT [--quick] [--threads N] [--device cpu|cuda]

Throughput: environment steps per second with camera frames (the VecEnv's numpy observations)
at B = 1, 16, 256, beside the highway-env backend (DriveAttention/Highway-v0, same frame size,
one process, one core) measured in the same run. ``ratio_per_core`` = (batched steps/s / torch
threads) / (reference steps/s). On a GPU the frames stay on the device (tensor API), as a GPU
training pipeline would consume them. Validation: see :mod:`agent.backend_validation`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401
from agent.backend_validation import traffic_statistics, trajectory_error
from agent.cli import guarded
from envs.batched import BatchedDrive, BatchedDriveVecEnv


def reference_rate(camera: tuple[int, int], seconds: float) -> float:
    env = gym.make("DriveAttention/Highway-v0", camera_size=camera)
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(1)
        steps += 1
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def batched_rate(b: int, camera: tuple[int, int], seconds: float) -> float:
    venv = BatchedDriveVecEnv(num_envs=b, camera_size=camera)
    venv.seed(0)
    venv.reset()
    actions = np.ones(b, np.int64)
    venv.step(actions)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 3:
        venv.step(actions)
        calls += 1
    return calls * b / (time.perf_counter() - start)


def device_rate(b: int, camera: tuple[int, int], device: str, seconds: float) -> float:
    """Steps/s of the tensor API on ``device`` with automatic reset, frames kept on device."""
    core = BatchedDrive(num_envs=b, camera_size=camera, device=device)
    core.seed(0)
    core.reset()
    actions = torch.ones(b, dtype=torch.long, device=device)

    def step() -> None:
        out = core.step(actions)
        core.camera(out.labels)  # RGB frames
        core.reset_envs(out.terminated | out.truncated)

    step()
    torch.cuda.synchronize() if device.startswith("cuda") else None
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 3:
        step()
        calls += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return calls * b / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="short timings, few episodes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (cores used)")
    parser.add_argument("--device", default="cpu", help="also time the tensor API on this device")
    parser.add_argument("--camera", type=int, nargs=2, default=(64, 64), metavar=("H", "W"))
    parser.add_argument("--skip-validation", action="store_true")
    args = parser.parse_args()
    return guarded(lambda: measure(args))


def measure(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    camera = tuple(args.camera)
    seconds = 2.0 if args.quick else 8.0

    reference = reference_rate(camera, seconds)
    throughput = {}
    for b in (1, 16, 256):
        rate = batched_rate(b, camera, seconds)
        throughput[f"B{b}"] = {
            "steps_per_s": rate,
            "reference_steps_per_s": reference,
            "ratio_per_core": (rate / args.threads) / reference,
        }
    result: dict = {
        "throughput": throughput,
        "settings": {
            "torch_threads": args.threads,
            "camera_size": list(camera),
            "scenario": "highway",
            "reference": "DriveAttention/Highway-v0, one process, frames on",
            "cpu_count": os.cpu_count(),
            # other processes compete for the cores: read the timings against this
            "load_average_1min": os.getloadavg()[0],
        },
    }
    if args.device != "cpu":
        result["device"] = {
            "device": args.device,
            "name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "",
            **{f"B{b}": device_rate(b, camera, args.device, seconds) for b in (256, 4096, 16384)},
        }

    print(
        f"throughput, highway with {camera[0]}x{camera[1]} frames, torch threads {args.threads}"
        f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(f"{'B':>6} {'batched steps/s':>16} {'highway-env steps/s':>20} {'ratio/core':>11}")
    for key, row in throughput.items():
        print(
            f"{key[1:]:>6} {row['steps_per_s']:>16.0f} {row['reference_steps_per_s']:>20.1f}"
            f" {row['ratio_per_core']:>11.1f}"
        )
    if "device" in result:
        for key, value in result["device"].items():
            if key.startswith("B"):
                print(f"{args.device} {key}: {value:.0f} steps/s")

    if not args.skip_validation:
        episodes = 16 if args.quick else 100
        seeds = 10 if args.quick else 50
        validation = {
            "trajectory": [
                trajectory_error("highway", seeds=seeds, steps=5, action=a, policy=p)
                for a, p in (("discrete", "idle"), ("discrete", "random"), ("continuous", "random"))
            ]
            + [trajectory_error("merge", seeds=seeds, steps=5, policy="random")],
            "statistics": [
                traffic_statistics("highway", episodes, policy=p) for p in ("idle", "random")
            ]
            + [traffic_statistics("merge", episodes, policy="idle")],
            "policy_transfer": {
                "ratio": None,
                "missing": "needs a policy trained on DriveAttention/BatchedHighway-v0: train "
                "one (configs/batched.yaml), then run scripts/transfer_gap.py --run runs/NAME",
            },
        }
        result["validation"] = validation
        print("\ntrajectory error from one highway-env state [m], max over vehicles")
        for row in validation["trajectory"]:
            errs = ", ".join("-" if e is None else f"{e:.4f}" for e in row["max_position_error_m"])
            means = ", ".join(
                "-" if e is None else f"{e:.4f}" for e in row["mean_position_error_m"]
            )
            print(
                f"  {row['scenario']:8s} {row['action']:10s} {row['policy']:6s}"
                f" t={row['horizon_s']} s  max [{errs}]  mean [{means}]"
                f"  (ego crashes left out: {row['episodes_with_ego_crash']}/{row['episodes']})"
            )
        print("\ntraffic statistics, highway-env | batched")
        for row in validation["statistics"]:
            print(
                f"  {row['scenario']} / {row['policy']} ego, {row['batched']['episodes']} episodes"
            )
            for key in row["batched"]:
                if key != "episodes":
                    a, b = row["highway_env"][key], row["batched"][key]
                    print(f"    {key:32s} {a:9.3f} | {b:9.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
