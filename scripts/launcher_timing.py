"""The same study on the local launcher and on a multi-node Ray cluster, timed in one run.

``python scripts/launcher_timing.py [--quick | --config configs/benchmark/X.yaml] [--workers 2]
[--out runs/launcher_timing] [--json OUT]``

Runs every job of the study twice from scratch: with the local launcher (``jobs`` processes at
a time), then as Ray tasks on a cluster started here on the loopback address (a head without CPUs
and ``--workers`` one-CPU worker nodes: as many runs at a time). Prints both wall times, their
ratio (Ray / local) and whether the two reports agree (every figure but the training
throughput; training is seeded, so they should). Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

QUICK = "configs/benchmark/quick.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", help="benchmark YAML")
    which.add_argument("--quick", action="store_true", help=f"the quick study ({QUICK}, default)")
    parser.add_argument("--workers", type=int, default=2, help="Ray worker nodes (default 2)")
    parser.add_argument("--steps", type=int, help="override the steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/launcher_timing"), help="scratch runs folder"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    return parser.parse_args(argv)


def without_throughput(value):
    if isinstance(value, dict):
        return {k: without_throughput(v) for k, v in value.items() if k != "throughput"}
    if isinstance(value, list):
        return [without_throughput(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # imported after the arguments are read: --help and a bad flag answer before torch loads
    from drive_attention.agent.run.cli import fail, guarded

    if args.workers < 1:
        return fail(f"--workers must be at least 1, got {args.workers}")
    return guarded(lambda: measure(args))


def measure(args: argparse.Namespace) -> int:
    import importlib.util

    from drive_attention.agent.benchmark import load_benchmark_config, run_benchmark, write_report
    from drive_attention.agent.scale.cluster import INSTALL_HINT, loopback_cluster
    from drive_attention.agent.scale.study import run_benchmark_ray
    from drive_attention.envs.configuration import ConfigError

    # not imported yet: loopback_cluster must set Ray's loopback switch before the import
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(f"this needs Ray, which is not installed: {INSTALL_HINT}")
    config = load_benchmark_config(args.config or QUICK, steps=args.steps, seeds=args.seeds)
    shutil.rmtree(args.out, ignore_errors=True)  # both launchers start from nothing
    seconds, reports = {}, {}
    for launcher in ("local", "ray"):
        runs = args.out / launcher / "runs"
        print(f"== {launcher} launcher ({time.ctime()})", file=sys.stderr, flush=True)
        started = time.perf_counter()
        if launcher == "local":
            results, stopped = run_benchmark(config, runs, jobs=config.jobs)
        else:
            with loopback_cluster(workers=args.workers):
                results, stopped = run_benchmark_ray(config, runs, address=None)
        seconds[launcher] = time.perf_counter() - started
        if stopped:
            print("interrupted", file=sys.stderr)
            return 130
        write_report(config, results, {}, args.out / launcher / "report", "launcher_timing")
        saved = json.loads((args.out / launcher / "report" / "results.json").read_text())
        reports[launcher] = {
            "finished": sum(r["status"] == "finished" for r in results),
            "results": without_throughput(saved["results"]),
        }
    same = reports["local"]["results"] == reports["ray"]["results"]
    n = len(results)
    figures = {
        "study": config.name,
        "runs": n,
        "local_seconds": seconds["local"],
        "local_jobs": config.jobs,
        "ray_seconds": seconds["ray"],
        "ray_workers": args.workers,
        "ratio_ray_over_local": seconds["ray"] / seconds["local"],
        "finished": {k: v["finished"] for k, v in reports.items()},
        "reports_agree": same,
    }
    print("\n| launcher | runs at a time | runs finished | wall time [s] |\n|---|---|---|---|")
    print(
        f"| local processes | {config.jobs} | {figures['finished']['local']}/{n} | "
        f"{seconds['local']:.0f} |"
    )
    print(
        f"| Ray, {args.workers} worker nodes (127.0.0.1) | {args.workers} | "
        f"{figures['finished']['ray']}/{n} | {seconds['ray']:.0f} |"
    )
    print(
        f"\nratio Ray / local: {figures['ratio_ray_over_local']:.2f}; reports agree (all but "
        f"throughput): {'yes' if same else 'NO'}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0 if same and all(v["finished"] == n for v in reports.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
