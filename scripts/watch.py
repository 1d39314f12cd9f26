"""Watch a trained agent drive, with its attention: the shipped default agent, no training needed.

``python scripts/watch.py [--run runs/NAME] [--episodes 3] [--seed 0] [--env ID]
[--out runs/watch] [--window | --no-window] [--relevance]``

Films seeded episodes as attention videos (``--out``, one mp4 per episode, paths printed) and,
where a display exists, plays each in a window as it ends (q or Esc skips). Without ``--run`` it
is the default agent that ships with the package (``agent/pretrained/default``: ``make
train``'s recipe, its config, checkpoint and final evaluation). ``--relevance`` outlines the
objects the teacher's decision depends on (batched scenarios; slower). See
:mod:`agent.evaluate.watch`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, help="a run folder (default: the shipped agent)")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="episode k uses seed + k")
    parser.add_argument("--env", dest="env_id", help="another scenario with the same sensors")
    parser.add_argument("--out", type=Path, default=Path("runs/watch"), help="videos folder")
    parser.add_argument(
        "--window",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="play each video in a window (default: where a display exists)",
    )
    parser.add_argument(
        "--relevance", action="store_true", help="outline what the teacher's decision needs"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from drive_attention.agent.evaluate.watch import watch
    from drive_attention.agent.run.cli import guarded

    def body() -> int:
        watch(
            args.run, args.episodes, args.seed, args.env_id, args.out, args.window,
            args.relevance, args.device,
        )  # fmt: skip
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
