"""The benchmark study: does cross-modal attention help, is it robust, what does it cost.

``python scripts/benchmark.py [--config configs/benchmark/full.yaml | --quick] [--jobs N]
[--ray [auto|ADDRESS]] [--wandb offline|online|disabled]``

Trains every arm (encoder) x scenario x seed of the config on the batched simulator with equal
step budgets, evaluates each on the batched backend and on highway-env (plus modality ablations
and attention attribution), then writes ``results.json``, ``results.md`` and learning-curve PNGs
to ``docs/results/<name>/``. With ``--ray`` every run is a Ray task (a local Ray instance, or
the cluster at ``auto`` / ``ADDRESS``; ``pip install -e '.[ray]'``), else a local process. Runs
live in ``runs/benchmark/<name>/``; running the same command again skips finished runs and
resumes interrupted ones from their last checkpoint. See ``agent/benchmark/`` and
``agent/scale/``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

QUICK = "configs/benchmark/quick.yaml"
FULL = "configs/benchmark/full.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", help=f"benchmark YAML (default {FULL})")
    which.add_argument(
        "--quick", action="store_true", help=f"tiny budgets, under 15 minutes ({QUICK})"
    )
    parser.add_argument("--jobs", type=int, help="runs at a time (default: the config's jobs)")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="auto|ADDRESS",
        help="run every job as a Ray task: on a local Ray instance (no value), the cluster "
        "started on this machine with `ray start` (auto), or the cluster at HOST:PORT",
    )
    parser.add_argument(
        "--cpus-per-job", type=float, default=1.0, help="with --ray: CPUs per run (default 1)"
    )
    parser.add_argument(
        "--gpus-per-job",
        type=float,
        default=0.0,
        help="with --ray: GPUs per run, a fraction shares one GPU (e.g. 0.25; default 0)",
    )
    parser.add_argument(
        "--wandb",
        choices=("online", "offline", "disabled"),
        help="log every run to W&B, grouped by study (default: the config's wandb, disabled)",
    )
    parser.add_argument("--steps", type=int, help="override the steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    parser.add_argument("--runs", type=Path, help="runs folder (default runs/benchmark/<name>)")
    parser.add_argument("--out", type=Path, help="results folder (default docs/results/<name>)")
    parser.add_argument(
        "--report-only", action="store_true", help="only rebuild the report from finished runs"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # imported after parsing: --help answers without loading torch and the simulators
    # imported after the arguments are read: --help and a bad flag answer before torch loads
    from drive_attention.agent.run.cli import fail, guarded

    if args.jobs is not None and args.jobs < 1:
        return fail(f"--jobs must be at least 1, got {args.jobs}")
    if args.ray is None and (args.cpus_per_job != 1.0 or args.gpus_per_job != 0.0):
        return fail("--cpus-per-job and --gpus-per-job need --ray")
    if args.cpus_per_job <= 0 or args.gpus_per_job < 0:
        return fail("--cpus-per-job must be positive and --gpus-per-job at least 0")
    given = argv if argv is not None else sys.argv[1:]
    return guarded(lambda: study(args, given))


def study(args: argparse.Namespace, given: list[str]) -> int:
    from drive_attention.agent.benchmark import (
        default_paths,
        ensure_fresh,
        load_benchmark_config,
        plan,
        read_result,
        reference_policies,
        run_benchmark,
        write_report,
    )

    path = QUICK if args.quick else (args.config or FULL)
    config = load_benchmark_config(path, steps=args.steps, seeds=args.seeds, wandb=args.wandb)
    runs_root, out_dir = default_paths(config)
    runs_root, out_dir = args.runs or runs_root, args.out or out_dir
    # the command that makes (or continues) the runs; --report-only only rebuilds the report
    command = shlex.join(
        ["python", "scripts/benchmark.py", *(a for a in given if a != "--report-only")]
    )
    interrupted = False
    try:
        if args.report_only:
            jobs = plan(config, runs_root)
            ensure_fresh(jobs, runs_root)
            results = [r for job in jobs if (r := read_result(job)) is not None]
        elif args.ray is not None:
            from drive_attention.agent.scale.study import run_benchmark_ray

            results, interrupted = run_benchmark_ray(
                config,
                runs_root,
                args.ray,
                jobs=args.jobs,
                cpus_per_job=args.cpus_per_job,
                gpus_per_job=args.gpus_per_job,
            )
        else:
            results, interrupted = run_benchmark(config, runs_root, jobs=args.jobs)
    except KeyboardInterrupt:
        print(f"aborted; continue with: {command}", file=sys.stderr)
        return 130
    references: dict = {}
    if not interrupted:
        print("reference policies (random, idle) on the same episodes ...", file=sys.stderr)
        try:
            references = reference_policies(config, runs_root)
        except Exception as err:  # the report is still written, without the reference rows
            print(f"reference policies failed: {err}", file=sys.stderr)
    summary = write_report(config, results, references, out_dir, command)
    print(summary["markdown"])
    print(f"results: {out_dir}/results.json, {out_dir}/results.md, plots {summary['plots']}")
    if interrupted:
        print(f"interrupted; continue with: {command}", file=sys.stderr)
        return 130
    unfinished = len(summary["not_finished"]) + len(summary["missing"])
    return 1 if unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
