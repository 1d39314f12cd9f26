"""Why a policy's return differs between the batched simulator and highway-env.

``python scripts/transfer_gap.py --run runs/NAME [--episodes 100] [--seed 20000] [--json OUT]``

Runs a policy trained on a batched scenario, episode by episode: on the batched backend from its
own initial states, on the batched backend from highway-env's initial states (copied in), on
highway-env, and, as an ablation, on highway-env with its predictive collision test off (a crash
only when boxes overlap). Both simulators have the predictive test, so from the same starts the
episodes should match: the figures are highway-env's return over the batched return from the
same starts, and the episodes that crash on one backend only. ``--no-arrivals`` turns the
intersection's random arrivals off on both sides (they are separate random draws). See
``envs.validation.paired_transfer``.
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
    parser.add_argument("--run", required=True, help="a run trained on a Batched* env id")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20_000, help="episode k uses seed + k")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument(
        "--no-arrivals", action="store_true", help="no new traffic during episodes (intersection)"
    )
    args = parser.parse_args(argv)
    # imported after the arguments are read: --help and a bad flag answer before torch loads
    from drive_attention.agent.run.cli import fail, guarded
    from drive_attention.agent.run.limits import check_episodes

    if args.episodes < 2:
        return fail("--episodes must be at least 2")

    def body() -> int:
        check_episodes("--episodes", args.episodes)
        return report(args)

    return guarded(body)


def report(args: argparse.Namespace) -> int:
    import torch

    from drive_attention import envs
    from drive_attention.agent.run.config import ConfigError
    from drive_attention.agent.run.loading import load_agent, run_config
    from drive_attention.agent.run.rundir import RunDir
    from drive_attention.envs.validation import REFERENCE_IDS, paired_transfer

    torch.set_num_threads(1)
    config = run_config(RunDir(Path(args.run)))
    scenario = envs.BATCHED_IDS.get(config.env.id)
    if scenario not in REFERENCE_IDS:
        raise ConfigError(
            f"--run {args.run}: trained on {config.env.id}; give a run trained on one of "
            f"{', '.join(envs.env_id(name, batched=True) for name in REFERENCE_IDS)}"
        )
    agent = load_agent(args.run, env_id=REFERENCE_IDS[scenario], device="cpu")
    # TrainedPolicy.act takes a batch as well as one observation
    options = dict(config.env.kwargs)
    if args.no_arrivals:
        if not envs.SCENARIOS[scenario].respawns_traffic:
            raise ConfigError(f"--no-arrivals: {scenario} has no arrivals to turn off")
        options["sim"] = {**options.get("sim", {}), "spawn_probability": 0.0}
    result = paired_transfer(agent.policy.act, scenario, args.episodes, args.seed, **options)
    result["run"] = args.run
    print(f"{args.run}: {scenario}, {args.episodes} episodes from seed {args.seed}")
    print(f"{'':28s} {'return':>14s} {'collision':>10s} {'length':>7s}")
    for name in ("batched", "batched_same_start", "highway_env", "highway_env_overlap_only"):
        row = result[name]
        print(
            f"{name:28s} {row['mean_return']:7.2f} ± {row['stderr_return']:4.2f} "
            f"{row['collision_rate']:10.0%} {row['mean_length']:7.1f}"
        )
    print(
        f"return on highway-env / batched from the same starts: "
        f"{result['return_ratio_same_start']:.3f}; crashes on one backend only: "
        f"{result['crashes_on_one_backend']}/{args.episodes}"
    )
    print(
        f"same start: {result['predictive_only_crashes']} episodes crash only on highway-env, "
        f"{result['batched_only_crashes']} only on the batched simulator; with the predictive "
        f"test off, {result['same_length_overlap_only']}/{args.episodes} episodes last exactly "
        "as long as on the batched simulator"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
