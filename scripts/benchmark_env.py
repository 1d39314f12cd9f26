"""Steps per second of the embedded backend beside stock highway-env, measured in the same run.

For each scenario, one process, a random policy (same seeds for both): our env with and without
road labels, and stock highway-env with the same simulator settings rendering a frame of the same
size every step (``render_mode="rgb_array"``, with its re-render-on-next-step trap avoided, so
that the stock baseline is as fast as it can be). The three step in lockstep (same seed, same
actions, each step timed on its own) so that load on a shared machine hits all of them alike;
the median over rounds is reported.

    python scripts/benchmark_env.py [--steps 200] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym

from drive_attention import envs
from drive_attention.agent.run.cli import fail, guarded
from drive_attention.envs.highway import DriveEnv


def make_stock(ours: DriveEnv) -> gym.Env:
    """Stock highway-env (same scenario class and settings) rendering our frame size."""
    camera = ours.camera_geometry
    config = {k: v for k, v in ours.sim.config.items() if k != "observation"}
    config.update(
        screen_width=camera.width,
        screen_height=camera.height,
        scaling=camera.px_per_m,
        centering_position=list(camera.centering),
        offscreen_rendering=True,
        duration=ours.duration,
    )
    return ours.scenario.simulator_class()(config=config, render_mode="rgb_array")


def stock_step(env: gym.Env, action: object) -> bool:
    _, _, terminated, truncated, _ = env.step(action)
    frame = env.render()
    env.enable_auto_render = False  # stock trap: else it re-renders every sub-step next time
    assert frame.shape == (env.config["screen_height"], env.config["screen_width"], 3)
    return terminated or truncated


def ours_step(env: gym.Env, action: object) -> bool:
    _, _, terminated, truncated, _ = env.step(action)
    return terminated or truncated


def measure(envs_and_steps: dict, steps: int, seed: int) -> dict[str, float]:
    """Steps per second of each env, stepped in lockstep with the same seeds and actions so
    that machine load falls on all alike."""
    elapsed = dict.fromkeys(envs_and_steps, 0.0)
    action_space = next(iter(envs_and_steps.values()))[0].action_space
    action_space.seed(seed)
    for env, _ in envs_and_steps.values():
        env.reset(seed=seed)
    for i in range(steps):
        action = action_space.sample()
        done = False
        for name, (env, step) in envs_and_steps.items():
            start = time.perf_counter()
            done |= step(env, action)
            elapsed[name] += time.perf_counter() - start
        if done:
            for env, _ in envs_and_steps.values():
                env.reset(seed=seed + 1 + i)
    return {name: steps / t for name, t in elapsed.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per round and variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--camera", type=int, nargs=2, default=(64, 64), metavar=("H", "W"))
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.steps < 1 or args.rounds < 1:
        return fail("--steps and --rounds must be at least 1")
    return guarded(lambda: measure_all(args))


def measure_all(args: argparse.Namespace) -> int:
    results = {}
    print(f"{'scenario':32s} {'ours/s':>8s} {'stock/s':>8s} {'ratio':>6s} {'labels':>7s}")
    for env_id in envs.HIGHWAY_IDS:
        plain = gym.make(env_id, camera_size=tuple(args.camera))
        labels = gym.make(env_id, camera_size=tuple(args.camera), road_labels=True)
        stock = make_stock(plain.unwrapped)
        variants = {
            "stock": (stock, stock_step),
            "ours": (plain, ours_step),
            "labels": (labels, ours_step),
        }
        rounds = [measure(variants, args.steps, 1000 * r) for r in range(args.rounds)]
        ours, stock_rate, lab = (
            statistics.median(r[k] for r in rounds) for k in ("ours", "stock", "labels")
        )
        row = {
            "steps_per_s": round(ours, 2),
            "stock_steps_per_s": round(stock_rate, 2),
            "ratio": round(ours / stock_rate, 3),
            "labels_cost": round(ours / lab - 1.0, 3),  # extra time per step with labels on
            "labels_steps_per_s": round(lab, 2),
        }
        results[env_id] = row
        print(
            f"{env_id:32s} {ours:8.1f} {stock_rate:8.1f} {row['ratio']:6.2f}x "
            f"{100 * row['labels_cost']:+6.1f}%"
        )
        for env in (plain, labels, stock):
            env.close()
    print(
        "ratio = ours / stock highway-env rendering the same frame size (target >= 0.9); "
        "labels = extra time per step with road labels on (target <= 15%)"
    )
    out = {"scenarios": results, "camera_size": list(args.camera), "steps": args.steps}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
