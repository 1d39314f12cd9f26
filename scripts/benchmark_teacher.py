"""Decisions per second of the batched teacher (``--policy teacher``) at a batch size.

    python scripts/benchmark_teacher.py [--env DriveAttention/BatchedIntersection-v0]
        [--num-envs 256] [--horizon 15] [--plans "faster;idle;slower;slower,faster"]
        [--rounds 2] [--threads 1] [--device cpu|cuda] [--seed 0] [--json OUT]

The teacher plans every environment of the batch at once (:mod:`agent.policies.teacher`): each
round is one decision of each of the ``--num-envs`` environments, then one step of the batch
with the chosen actions (finished episodes start anew). Prints decisions/s (planning time only)
and the copies' policy steps per second; ``--json`` writes the same figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from drive_attention import envs
from drive_attention.agent.policies.lookahead import PLANS
from drive_attention.agent.policies.teacher import (
    TeacherConfig,
    check_can_teach,
    decision_rate,
    parse_plans,
)
from drive_attention.agent.run.cli import guarded
from drive_attention.agent.run.files import write_text
from drive_attention.envs.batched import BatchedDrive
from drive_attention.envs.contract import DISCRETE_ACTIONS

DEFAULT_PLANS = ";".join(",".join(DISCRETE_ACTIONS[a] for a in plan) for plan in PLANS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="DriveAttention/BatchedIntersection-v0")
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--horizon", type=float, default=15.0, help="[s] how far plans look")
    parser.add_argument("--plans", default=DEFAULT_PLANS, help="plans by ';', actions by ','")
    parser.add_argument("--rounds", type=int, default=2, help="decisions per environment")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: fastest on a busy machine)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        check_can_teach(args.env)
        config = TeacherConfig(horizon=args.horizon, plans=parse_plans(args.plans))
        torch.set_num_threads(args.threads)
        core = BatchedDrive(
            scenario=envs.BATCHED_IDS[args.env], num_envs=args.num_envs, device=args.device
        )
        core.seed(args.seed)
        core.reset()
        figures = decision_rate(core, config, args.rounds)
        result = {
            "env": args.env,
            "num_envs": args.num_envs,
            "horizon": args.horizon,
            "plans": args.plans,
            "threads": args.threads,
            "device": args.device,
            **figures,
        }
        print(
            f"teacher on {args.env}, B = {args.num_envs}, horizon {args.horizon:g} s, "
            f"{int(figures['candidates'])} candidates, {args.threads} thread(s), {args.device}:\n"
            f"  {figures['decisions_per_s']:.2f} decisions/s, "
            f"{figures['rows_per_s']:.0f} copy-steps/s ({figures['seconds']:.1f} s planning)"
        )
        if args.json is not None:
            write_text(args.json, json.dumps(result, indent=2) + "\n")
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
