"""Tune hyperparameters with Ray Tune (Optuna search, ASHA early stopping).

``python scripts/sweep.py --config configs/sweep/NAME.yaml [--ray [auto|ADDRESS]] [--trials N]``

Every trial is an ordinary run directory in ``runs/sweep/<name>/`` that reports its periodic
evaluation; ASHA stops the trials that trail. Writes ``trials.json``, ``trials.md`` (every trial,
its values and scores) and ``best.yaml`` (the best full trial's experiment, for
``scripts/train.py --config``) to ``docs/sweeps/<name>/``. Without ``--ray`` a local Ray instance
runs the trials (on the loopback address); ``auto`` joins the cluster started on this machine with
``ray start``, ``HOST:PORT`` the cluster there. Running the same command again continues an
interrupted sweep. Needs the ``ray`` extra (``pip install -e '.[ray]'``). See
``agent/scale/sweep.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="sweep YAML, e.g. configs/sweep/NAME.yaml")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default="local",
        metavar="auto|ADDRESS",
        help="Ray to run the trials on: a local instance (default), the cluster started on this "
        "machine (auto), or the cluster at HOST:PORT",
    )
    parser.add_argument("--trials", type=int, help="override the number of trials")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="default 1")
    parser.add_argument(
        "--gpus-per-trial", type=float, default=0.0, help="a fraction shares one GPU (default 0)"
    )
    parser.add_argument("--runs", type=Path, help="runs folder (default runs/sweep/<name>)")
    parser.add_argument("--out", type=Path, help="results folder (default docs/sweeps/<name>)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # imported after the arguments are read: --help and a bad flag answer before torch loads
    from drive_attention.agent.run.cli import fail, guarded

    if args.trials is not None and args.trials < 1:
        return fail(f"--trials must be at least 1, got {args.trials}")
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        return fail("--cpus-per-trial must be positive and --gpus-per-trial at least 0")
    return guarded(lambda: sweep(args))


def sweep(args: argparse.Namespace) -> int:
    from drive_attention.agent.scale.sweep import run_sweep
    from drive_attention.agent.scale.sweep_config import default_paths, load_sweep_config

    config = load_sweep_config(args.config, trials=args.trials)
    runs_root, out_dir = default_paths(config)
    runs_root, out_dir = args.runs or runs_root, args.out or out_dir
    try:
        summary = run_sweep(
            config,
            runs_root,
            out_dir,
            args.ray,
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
        )
    except KeyboardInterrupt:
        print(f"aborted; the same command continues the sweep ({runs_root})", file=sys.stderr)
        return 130
    if summary["interrupted"]:
        done = sum(r["status"] != "unfinished" for r in summary["trials"])
        print(
            f"interrupted with {done} of {config.trials} trials done (so far: "
            f"{out_dir / 'trials.md'}); the same command continues the sweep ({runs_root})",
            file=sys.stderr,
        )
        return 130
    print((out_dir / "trials.md").read_text())
    best = summary["best"]
    if best is None:
        print("no trial trained its whole budget; see the table", file=sys.stderr)
        return 1
    print(f"best: {best['trial']} ({config.metric} {best[config.metric]:.3f}); train it with:")
    print(f"  python scripts/train.py --config {out_dir / 'best.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
