"""Evaluate a trained run (or the random / idle / rule reference policy) on seeded episodes.

``python scripts/evaluate.py --run runs/NAME --episodes 20 --seed 1000
[--policy random|idle|rule|lookahead|teacher] [--checkpoint PATH] [--env ID] [--video]
[--attention [--relevance-frames N]] [--json OUT] [--wandb [MODE]] [--allow-pickle]``

The reference policies need no trained run: ``--policy rule --env ID --json OUT`` evaluates the
hand-written cautious controller (:mod:`agent.policies.rule`) with the env's default options
(``--config`` or ``--run`` for a config's options). ``--policy lookahead`` (highway-env ids,
discrete actions) plans each decision in copies of the simulator that know the traffic's future
(:mod:`agent.policies.lookahead`): not a driver, but a bound from below on what the meta-actions
reach. ``--policy teacher`` (batched ids, discrete actions) is the same planner on the batched
simulator, every plan of a decision stepped at once (:mod:`agent.policies.teacher`): a
privileged teacher that reads the simulator's exact state, not a deployable agent.

Prints a table (mean and std of return, success and collision rates, mean speed, episode
length) and writes the same figures with per-episode rows as JSON (default:
``runs/NAME/eval/evaluate_<policy>_<env>_seed<S>.json``; with a --checkpoint that is not the
run's latest, ``..._seed<S>_step<N>.json``, or ``..._seed<S>_<other run>-step<N>.json`` for
another run's checkpoint, so no result overwrites another).

``--checkpoint model.zip --allow-pickle`` evaluates an SB3 model zip (PPO or SAC, e.g. one made
by ``scripts/export.py``). Loading it unpickles the file, which can execute any code its author
put in it: without ``--allow-pickle`` it is refused. Its env is the one a zip exported here
names, else the --run folder's config, else --env ID with default options; --attention needs a
policy with one of this project's attention extractors.

Output goes only to the --run folder (or the run folder that holds --checkpoint) or to --json
(videos beside it); a checkpoint outside a run folder needs --json. Seeds must be >= 0; the
output paths are checked before any episode runs, and nothing is written through a symbolic
link.
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
    parser.add_argument(
        "--config",
        type=Path,
        help="experiment YAML, for --policy random|idle|rule|lookahead|teacher without --run",
    )
    parser.add_argument(
        "--policy",
        choices=["trained", "random", "idle", "rule", "lookahead", "teacher"],
        default="trained",
        help="lookahead: plans in copies of the highway-env simulator (a bound on what the "
        "meta-actions can reach, not a driver); teacher: the same planner on batched ids, "
        "privileged (exact state), not a deployable agent",
    )
    parser.add_argument("--env", dest="env_id", help="evaluate on another registered env id")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000, help="episode k uses seed SEED + k")
    parser.add_argument(
        "--video",
        action="store_true",
        help="attention videos: the first successful and the first failed episode",
    )
    parser.add_argument(
        "--video-episodes",
        type=int,
        default=1,
        help="with --video: videos of each outcome (the first N successful and N failed episodes)",
    )
    parser.add_argument(
        "--json",
        dest="json_path",
        type=Path,
        help="where to write the JSON (default: the run's eval/ folder); videos go beside it "
        "when there is no run folder",
    )
    parser.add_argument(
        "--wandb",
        nargs="?",
        const="online",
        default="disabled",
        choices=["online", "offline", "disabled"],
        help="log to W&B (online when logged in, else offline)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--attention",
        action="store_true",
        help="attention per road class (mass, lift), occlusion check, modality reliance, and "
        "on batched scenarios agreement with what the teacher's decision depends on",
    )
    parser.add_argument(
        "--relevance-frames",
        type=int,
        default=256,
        help="with --attention: frames whose relevance is computed (each costs a teacher "
        "decision per object in it; 0: none)",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept an SB3 model .zip as --checkpoint: SB3 unpickles it, which can execute any "
        "code its author put in the file; only for files you trust",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # imported after the arguments are read: --help and a bad flag answer before torch loads
    from drive_attention.agent.evaluate.command import EvaluationRequest, main_table, run_evaluation
    from drive_attention.agent.run.cli import guarded

    def body() -> int:
        report, json_path = run_evaluation(EvaluationRequest(**vars(args)))
        print(main_table(report, json_path))
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
