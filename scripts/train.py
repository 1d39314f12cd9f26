"""Train an agent: ``python scripts/train.py --config configs/default.yaml [key.sub=value ...]``.

Writes ``runs/<name>/`` (resolved config, checkpoints, videos, evaluation JSON, W&B files) and
ends with a comparison against the random and idle policies. See ``agent/`` for the logic.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="experiment YAML, e.g. configs/default.yaml")
    parser.add_argument("--name", help="run name: writes runs/NAME (logging.name)")
    parser.add_argument("--steps", type=int, help="total environment steps (train.steps)")
    parser.add_argument("--wandb", choices=["online", "offline", "disabled"], help="logging.wandb")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="train.device")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue runs/NAME from its last checkpoint"
    )
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="with --resume: continue from this checkpoint of the run instead of its last "
        "(runs/NAME/checkpoints/step_N.safetensors; later ones are moved aside)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="e.g. model.layers=3")
    return parser.parse_intermixed_args(argv)  # overrides may come before or after the flags


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # imported after the arguments are read: --help and a bad flag answer before torch loads
    from drive_attention.agent.run.admission import prepare
    from drive_attention.agent.run.cli import fail, guarded
    from drive_attention.agent.run.config_files import parse_overrides
    from drive_attention.agent.training import Trainer

    if args.resume and args.config:
        return fail("--resume takes the run's own config; drop --config (overrides still apply)")
    if args.resume and args.name:
        return fail("--resume continues the run in place; drop --name")
    if args.checkpoint and not args.resume:
        return fail(
            "--checkpoint picks the checkpoint a run continues from: give the run with --resume "
            "runs/NAME (to evaluate a checkpoint, use scripts/evaluate.py --checkpoint)"
        )

    def body() -> int:
        # key.sub=value items are read as YAML; the flags' values are taken as given (data), so
        # --name 2024 names a run "2024" rather than setting a number
        overrides = {".".join(path): value for path, value in parse_overrides(args.overrides)}
        for flag, key in (
            ("name", "logging.name"),
            ("steps", "train.steps"),
            ("wandb", "logging.wandb"),
            ("device", "train.device"),
        ):
            if getattr(args, flag) is not None:
                overrides[key] = getattr(args, flag)
        prepared = prepare(
            args.config,
            overrides,
            resume=args.resume,
            checkpoint=args.checkpoint,
            empty_folder=True,
        )
        return Trainer(prepared).run()

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
