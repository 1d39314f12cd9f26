"""Does the reward rank drives the way a user does (success first, then speed)?

``python scripts/reward_check.py [--env DriveAttention/Highway-v0] [--episodes 30] [--seed 3000]
[--run runs/NAME ...] [--json OUT]``

Random, idle, the cautious rule, a reckless rule and an always-faster policy (and the trained
runs given with --run) drive the same seeded episodes. Prints each policy's success, speed and
mean return under the current reward and under the reward before the ``alive`` term, and
how often each return orders two episodes as a user would (:mod:`agent.evaluate.reward_check`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="DriveAttention/Highway-v0")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--seed", type=int, default=3000)
    parser.add_argument("--run", type=Path, action="append", default=[], help="a trained run")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.episodes < 2 or args.seed < 0:
        parser.error("--episodes must be at least 2 and --seed non-negative")

    # imported after the arguments are read: --help and a bad flag answer before torch loads
    from drive_attention.agent.evaluate.reward_check import run_check
    from drive_attention.agent.run.config import ConfigError, check_env_id
    from drive_attention.agent.run.limits import check_episodes
    from drive_attention.agent.run.loading import load_agent

    try:
        check_episodes("--episodes", args.episodes)
        check_env_id(args.env, key="--env")
        extra = []
        for run in args.run:
            agent = load_agent(run, env_id=args.env, device="cpu")
            agent.policy.name = f"trained:{run.name}"
            extra.append((agent.policy, dict(agent.config.env.kwargs)))
        result, _ = run_check(args.env, args.episodes, args.seed, extra)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.env}, {args.episodes} episodes per policy from seed {args.seed}")
    print("| policy | success | collision | speed [m/s] | return | return before the alive term |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, s in result["policies"].items():
        print(
            f"| {name} | {s['success_rate']:.0%} | {s['collision_rate']:.0%} | "
            f"{s['mean_speed']:.1f} | {s['mean_return']:.2f} | {s['mean_previous_return']:.2f} |"
        )
    print()
    print("| reward | success pairs agreeing | speed pairs agreeing | policy rank tau |")
    print("| --- | ---: | ---: | ---: |")
    for reward in ("current", "previous"):
        r = result[reward]
        print(
            f"| {reward} | {r['success_agree']:.0%} of {r['success_pairs']} | "
            f"{r['speed_agree']:.0%} of {r['speed_pairs']} | {r['policy_tau']:.2f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"env": args.env, "episodes": args.episodes, "seed": args.seed, **result}, indent=2
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
