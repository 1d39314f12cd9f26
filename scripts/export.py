"""Export a trained run to another tool's format.

``python scripts/export.py --run runs/NAME --format sb3 --out FILE.zip [--checkpoint PATH]
[--force]``

``sb3``: a zip that plain ``stable_baselines3`` loads (``PPO.load("FILE.zip")`` or
``SAC.load``), given this package installed (its policy names our features extractor by import
path). A run that normalises sensors also gets ``FILE_vecnormalize.pkl`` beside it, in SB3's
``VecNormalize.save`` format. Bad input (no run, no checkpoint, an unsupported format, an output
that cannot be written) is one line on stderr and exit status 2, before any work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, help="run directory, e.g. runs/NAME")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint (default: the run's latest)")
    parser.add_argument("--format", dest="fmt", default="sb3", help="output format: sb3")
    parser.add_argument("--out", type=Path, required=True, help="output file, e.g. model.zip")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing --out file (refused without)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # imported after the arguments are read: --help and a bad flag answer before torch loads
    from drive_attention.agent.run.cli import guarded
    from drive_attention.agent.run.export import export_sb3

    def body() -> int:
        result = export_sb3(
            args.run, args.out, checkpoint=args.checkpoint, fmt=args.fmt, force=args.force
        )
        rows = [
            ("format", args.fmt),
            ("algorithm", result.algo),
            ("env", result.env_id),
            ("step", str(result.step)),
            ("checkpoint", str(result.checkpoint)),
            ("zip", str(result.zip_path)),
            ("VecNormalize", str(result.vec_normalize_path or "none (the run does not normalise)")),
        ]
        width = max(len(k) for k, _ in rows)
        print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
        algo = result.algo
        print(f'load it: from stable_baselines3 import {algo}; {algo}.load("{result.zip_path}")')
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
