"""The batched teacher beside the highway-env lookahead, from the same starts (resumable).

    python scripts/validate_teacher.py [--out runs/validate_teacher]
        [--scenarios intersection roundabout highway merge] [--episodes 100] [--seed 0]
        [--horizon 15] [--threads 1] [--json OUT]

Per scenario and seed: the lookahead drives highway-env's episode, the teacher decides at each
of its states too (imported into the batched simulator), then drives its own episode from the
same start (:mod:`agent.evaluate.teacher_check`). Each episode's row goes to
``OUT/<scenario>/seed<S>.json`` as it finishes; seeds already there are skipped, so the command
can be stopped and run again. Prints the success rates, whether they agree within 3 standard
errors, and the share of shared states with the same first action (asked: 90%). The lookahead
is slow (about 25 s per intersection episode, over a minute per highway episode).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from drive_attention.agent.evaluate.teacher_check import SCENARIOS, format_summary, validate
from drive_attention.agent.policies.teacher import TeacherConfig
from drive_attention.agent.run.cli import guarded
from drive_attention.agent.run.files import write_text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/validate_teacher"))
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--episodes", type=int, default=100, help="seeds per scenario")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--horizon", type=float, default=15.0, help="[s] both planners'")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="write the summary here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def progress(row: dict) -> None:
        said = {
            who: "success" if o["success"] else "collision" if o["collision"] else "no success"
            for who, o in (("lookahead", row["lookahead"]), ("teacher", row["teacher"]))
        }
        print(
            f"  {row['scenario']} seed {row['seed']}: lookahead {said['lookahead']}, teacher "
            f"{said['teacher']}, same first action {row['same_first_action']}/"
            f"{row['shared_states']}",
            file=sys.stderr,
            flush=True,
        )

    def body() -> int:
        torch.set_num_threads(args.threads)
        config = TeacherConfig(horizon=args.horizon)
        summary = validate(
            args.out, tuple(args.scenarios), args.episodes, args.seed, config, progress
        )
        print(format_summary(summary))
        if args.json is not None:
            write_text(args.json, json.dumps(summary, indent=2) + "\n")
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
