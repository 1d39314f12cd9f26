"""Time the default attention extractor against SB3's CombinedExtractor on the same inputs.

    python scripts/benchmark_model.py [--json OUT] [--repeats N] [--threads T] [--frame 64]

Both extractors get a channel-first uint8 frame batch (as SB3 hands it after VecTransposeImage)
and go through SB3's preprocess_obs inside the timed region (ours un-normalised, Combined
divided by 255). forward is timed under no_grad (rollouts); forward+backward with gradients
(updates). Prints a table; ``--json`` writes
``{"params": N, "batch": {"64": {"ours_ms", "combined_ms", "ratio", ...}, "256": {...}}}``
with forward+backward milliseconds (median of N alternating runs) and ratio = ours /
CombinedExtractor; ``best_ratio`` compares the fastest runs, which other load on the machine
skews less; ``forward_*`` keys hold the same for forward alone. On CUDA it adds
``"cuda": {"fp32": {...}, "bf16": {...}}`` in the same per-batch format.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import CombinedExtractor
from stable_baselines3.common.type_aliases import TensorDict
from torch import nn

from drive_attention.models import ExtractorConfig, make_extractor

BATCHES = (64, 256)


def sensor_names(count: int) -> list[str]:
    """A contract-style layout of ``count`` values: ego (5), route (3), rays (2 values each)."""
    ego = ["ego.speed", "ego.heading", "ego.lateral_offset", "ego.steering", "ego.acceleration"]
    route = ["route.exit_left", "route.exit_right", "route.distance_to_goal"]
    rays = (count - len(ego) - len(route)) // 2
    if rays < 1:
        raise SystemExit(f"--sensors {count} is too few; use at least {len(ego) + len(route) + 2}")
    names = ego + [f"rays.{k:02d}.{q}" for k in range(rays) for q in ("distance", "closing_speed")]
    names += route
    names += [f"extra.v{i}" for i in range(count - len(names))]
    return names


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pair(
    ours: Callable[[], None], combined: Callable[[], None], repeats: int, device: torch.device
) -> tuple[list[float], list[float]]:
    """Milliseconds of each run of two steps, timed alternately so that load hits both alike."""
    for _ in range(max(3, repeats // 5)):
        ours()
        combined()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for step, out in ((ours, samples[0]), (combined, samples[1])):
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            out.append((time.perf_counter() - start) * 1e3)
    return samples


def summary(prefix: str, ours: list[float], combined: list[float]) -> dict[str, float]:
    """Median milliseconds and their ratio, plus the best-of-N ratio (robust to other load)."""
    ours_ms, combined_ms = statistics.median(ours), statistics.median(combined)
    return {
        f"{prefix}ours_ms": round(ours_ms, 3),
        f"{prefix}combined_ms": round(combined_ms, 3),
        f"{prefix}ratio": round(ours_ms / combined_ms, 3),
        f"{prefix}best_ratio": round(min(ours) / min(combined), 3),
    }


def steps(
    extractor: nn.Module, space: spaces.Dict, normalize_images: bool, obs: TensorDict, bf16: bool
) -> tuple[Callable[[], None], Callable[[], None]]:
    """Forward (no_grad, as in rollouts) and forward+backward (as in updates) of one extractor."""

    def autocast() -> contextlib.AbstractContextManager[object]:
        if bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward() -> None:
        with torch.no_grad(), autocast():
            extractor(preprocess_obs(obs, space, normalize_images=normalize_images))

    def forward_backward() -> None:
        extractor.zero_grad(set_to_none=True)
        with autocast():
            features = extractor(preprocess_obs(obs, space, normalize_images=normalize_images))
        features.float().square().mean().backward()

    return forward, forward_backward


def run(
    device: torch.device, frame: int, num_sensors: int, repeats: int, bf16: bool
) -> tuple[int, int, dict[str, dict[str, float]]]:
    """Parameters of both extractors and one row of timings per batch size."""
    names = sensor_names(num_sensors)
    space = spaces.Dict(
        camera=spaces.Box(0, 255, (3, frame, frame), np.uint8),  # channel-first, as after SB3
        sensors=spaces.Box(-np.inf, np.inf, (len(names),), np.float32),
    )
    torch.manual_seed(0)
    ours = make_extractor(space, ExtractorConfig(), names).to(device)
    combined = CombinedExtractor(space).to(device)
    generator = torch.Generator().manual_seed(0)
    rows: dict[str, dict[str, float]] = {}
    for batch in BATCHES:
        camera = torch.randint(0, 256, (batch, 3, frame, frame), generator=generator)
        sensors = torch.rand(batch, len(names), generator=generator) * 2 - 1
        obs = {"camera": camera.to(torch.uint8).to(device), "sensors": sensors.to(device)}
        ours_forward, ours_both = steps(ours, space, False, obs, bf16)
        combined_forward, combined_both = steps(combined, space, True, obs, bf16)
        forward = time_pair(ours_forward, combined_forward, repeats, device)
        both = time_pair(ours_both, combined_both, repeats, device)
        rows[str(batch)] = {**summary("", *both), **summary("forward_", *forward)}
    params = sum(p.numel() for p in ours.parameters())
    combined_params = sum(p.numel() for p in combined.parameters())
    return params, combined_params, rows


def print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}: median ms; ratio = ours / CombinedExtractor (best-of-N ratio beside)")
    header = (
        f"{'batch':>6} | {'pass':<16} | {'ours [ms]':>10} | {'Combined [ms]':>13} | "
        f"{'ratio':>6} | {'best':>5}"
    )
    print(header)
    print("-" * len(header))
    for batch, row in rows.items():
        for label, prefix in (("forward", "forward_"), ("forward+backward", "")):
            print(
                f"{batch:>6} | {label:<16} | {row[prefix + 'ours_ms']:>10.2f} | "
                f"{row[prefix + 'combined_ms']:>13.2f} | {row[prefix + 'ratio']:>6.2f} | "
                f"{row[prefix + 'best_ratio']:>5.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per measurement")
    parser.add_argument("--frame", type=int, default=64, help="[px] square camera frame size")
    parser.add_argument("--sensors", type=int, default=40, help="number of sensor values")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    config = ExtractorConfig()
    print(
        f"default config: dim={config.dim} layers={config.layers} heads={config.heads} "
        f"patch={config.patch} features_dim={config.features_dim}\n"
        f"inputs: {args.frame}x{args.frame}x3 frames, {args.sensors} sensor values; "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    busy = os.getloadavg()[0] > max(0.5, (os.cpu_count() or 1) - torch.get_num_threads())
    if busy:
        print(
            "warning: other processes are using the cores torch wants; with several threads "
            "each small op then waits for a descheduled thread and both timings inflate, ours "
            "(more, smaller ops) more. Compare on an idle machine, or with --threads 1."
        )
    params, combined_params, rows = run(
        torch.device("cpu"), args.frame, args.sensors, args.repeats, False
    )
    print(f"parameters: ours {params:,}, CombinedExtractor {combined_params:,}")
    print_table("CPU, float32", rows)
    result: dict = {"params": params, "combined_params": combined_params, "batch": rows}

    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        result["cuda"] = {"device": torch.cuda.get_device_name(cuda)}
        for precision, bf16 in (("fp32", False), ("bf16", True)):
            _, _, cuda_rows = run(cuda, args.frame, args.sensors, args.repeats, bf16)
            result["cuda"][precision] = cuda_rows
            print_table(f"CUDA ({result['cuda']['device']}), {precision}", cuda_rows)

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    print(
        f"load average at the end: {os.getloadavg()[0]:.1f} (other work on the machine skews both)"
    )


if __name__ == "__main__":
    main()
