"""Throughput of the batched backend beside highway-env, and its validation figures.

    python scripts/benchmark_sim.py --json OUT [--quick] [--threads N] [--device cpu|cuda]
        [--scenario NAME ...]

Throughput, per scenario (highway, merge, roundabout, intersection): environment steps per
second with camera frames (the VecEnv's numpy observations) at B = 1, 16, 256, beside the
highway-env backend (DriveAttention/<Scenario>-v0, same frame size, one process, one core)
measured in the same run. ``ratio_per_core`` = (batched steps/s / torch
threads) / (reference steps/s). On a GPU the frames stay on the device (tensor API), as a GPU
training pipeline would consume them. With ``envpool`` installed, EnvPool's C++ port of
highway-env (no camera) is a peer row on highway's settings, same B and threads
(``batched_over_envpool``); skipped with a message without it. Validation: see
:mod:`envs.validation`.
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

from drive_attention import envs
from drive_attention.agent.run.cli import guarded
from drive_attention.envs.batched import BatchedDrive, BatchedDriveVecEnv
from drive_attention.envs.scenarios import SCENARIOS
from drive_attention.envs.validation import REFERENCE_IDS, traffic_statistics, trajectory_error


def reference_rate(scenario: str, camera: tuple[int, int], seconds: float) -> float:
    env = gym.make(envs.env_id(scenario), camera_size=camera)
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(1)
        steps += 1
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def batched_rate(scenario: str, b: int, camera: tuple[int, int], seconds: float) -> float:
    venv = BatchedDriveVecEnv(num_envs=b, scenario=scenario, camera_size=camera)
    venv.seed(0)
    venv.reset()
    actions = np.ones(b, np.int64)
    venv.step(actions)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 3:
        venv.step(actions)
        calls += 1
    return calls * b / (time.perf_counter() - start)


def envpool_rate(b: int, seconds: float, threads: int) -> float | str:
    """Steps/s of EnvPool's C++ port of highway-env (``Highway-v0``, kinematics observations,
    no camera) on our highway's settings (3 lanes, 20 vehicles, 5 Hz simulation, 1 Hz policy,
    30 s episodes), ``b`` environments on ``threads`` threads, idle meta-actions as the batched
    rows, auto-reset; or why it was not measured."""
    try:
        import envpool
    except ImportError:
        return "envpool is not installed (pip install -e '.[peers]', Linux x86-64)"
    sim = SCENARIOS["highway"].sim_config
    env = envpool.make_gymnasium(
        "Highway-v0",
        num_envs=b,
        batch_size=b,
        num_threads=threads,
        seed=0,
        lanes_count=sim["lanes_count"],
        vehicles_count=sim["vehicles_count"],
        simulation_frequency=sim["simulation_frequency"],
        policy_frequency=1,
        duration=int(SCENARIOS["highway"].duration),
        max_episode_steps=int(SCENARIOS["highway"].duration),
    )
    env.reset()
    actions = np.ones(b, np.int64)  # IDLE, as highway-env orders the meta-actions
    env.step(actions)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 3:
        env.step(actions)
        calls += 1
    rate = calls * b / (time.perf_counter() - start)
    env.close()
    return rate


def device_rate(
    b: int, camera: tuple[int, int], device: str, seconds: float, scenario: str = "highway"
) -> float:
    """Steps/s of the tensor API on ``device`` with automatic reset, frames kept on device."""
    core = BatchedDrive(num_envs=b, scenario=scenario, camera_size=camera, device=device)
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
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(REFERENCE_IDS),
        help="only these scenarios (repeat the flag); default: the four with a highway-env "
        "version to compare with",
    )
    parser.add_argument("--skip-validation", action="store_true")
    args = parser.parse_args()
    return guarded(lambda: measure(args))


def measure(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    camera = tuple(args.camera)
    seconds = 2.0 if args.quick else 8.0
    scenarios = args.scenario or list(REFERENCE_IDS)
    result: dict = {
        "throughput": {},
        "settings": {
            "torch_threads": args.threads,
            "camera_size": list(camera),
            "scenarios": scenarios,
            "reference": "DriveAttention/<Scenario>-v0, one process, frames on",
            "cpu_count": os.cpu_count(),
            # other processes compete for the cores: read the timings against this
            "load_average_1min": os.getloadavg()[0],
        },
    }
    print(
        f"throughput with {camera[0]}x{camera[1]} frames, torch threads {args.threads}"
        f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(
        f"{'scenario':>12} {'B':>6} {'batched steps/s':>16} {'highway-env':>12} {'ratio/core':>11}"
    )
    for scenario in scenarios:
        reference = reference_rate(scenario, camera, seconds)
        rows = {}
        for b in (1, 16, 256):
            rate = batched_rate(scenario, b, camera, seconds)
            rows[f"B{b}"] = {
                "steps_per_s": rate,
                "reference_steps_per_s": reference,
                "ratio_per_core": (rate / args.threads) / reference,
            }
            print(
                f"{scenario:>12} {b:>6} {rate:>16.0f} {reference:>12.1f}"
                f" {rows[f'B{b}']['ratio_per_core']:>11.1f}"
            )
        result["throughput"][scenario] = rows
    if "highway" in scenarios:  # a peer: EnvPool's C++ highway-env, no camera, same settings
        result["envpool_highway"] = peer = {}
        for b in (1, 16, 256):
            rate = envpool_rate(b, seconds, args.threads)
            if isinstance(rate, str):
                print(f"EnvPool highway peer skipped: {rate}")
                peer["skipped"] = rate
                break
            ours = result["throughput"]["highway"][f"B{b}"]["steps_per_s"]
            peer[f"B{b}"] = {"steps_per_s": rate, "batched_over_envpool": ours / rate}
            print(
                f"{'envpool':>12} {b:>6} {rate:>16.0f}   (no camera; batched with camera / "
                f"envpool: {ours / rate:.2f})"
            )
    if args.device != "cpu":
        result["device"] = {
            "device": args.device,
            "name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "",
            **{
                scenario: {
                    f"B{b}": device_rate(b, camera, args.device, seconds, scenario)
                    for b in (256, 4096, 16384)
                }
                for scenario in scenarios
            },
        }
        for scenario in scenarios:
            for key, value in result["device"][scenario].items():
                print(f"{args.device} {scenario} {key}: {value:.0f} steps/s")

    if not args.skip_validation:
        result["validation"] = validate(scenarios, args.quick)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def validate(scenarios: list[str], quick: bool) -> dict:
    """Trajectories from one state and traffic statistics of every scenario (see
    :mod:`envs.validation`); printed as they come."""
    episodes = 16 if quick else 100
    seeds = 10 if quick else 50
    validation: dict = {"trajectory": [], "statistics": []}
    print("\ntrajectory error from one highway-env state [m], max over vehicles, and crash flags")
    for scenario in scenarios:
        for action, policy in (
            ("discrete", "idle"),
            ("discrete", "random"),
            ("continuous", "random"),
        ):
            row = trajectory_error(scenario, seeds=seeds, steps=5, action=action, policy=policy)
            validation["trajectory"].append(row)
            errs = ", ".join(f"{e:.4f}" for e in row["max_position_error_m"])
            print(
                f"  {scenario:12s} {action:10s} {policy:6s} t={row['horizon_s']} s  max [{errs}]"
                f"  crash-flag mismatches {row['crash_flag_mismatch_frames']}/{row['frames']}"
                f" frames, ego crashes {row['episodes_with_ego_crash']} |"
                f" {row['episodes_with_ego_crash_batched']} of {row['episodes']}"
            )
    print("\ntraffic statistics, highway-env | batched")
    for scenario in scenarios:
        for policy in ("idle", "random"):
            row = traffic_statistics(scenario, episodes, policy=policy)
            validation["statistics"].append(row)
            print(f"  {scenario} / {policy} ego, {row['batched']['episodes']} episodes")
            for key in row["batched"]:
                if key != "episodes":
                    a, b = row["highway_env"][key], row["batched"][key]
                    print(f"    {key:32s} {a:9.3f} | {b:9.3f}")
    validation["policy_transfer"] = {
        "missing": "needs policies trained on the Batched* ids: see scripts/transfer_gap.py"
    }
    return validation


if __name__ == "__main__":
    sys.exit(main())
