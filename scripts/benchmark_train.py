"""Training throughput of the SB3 engine and the device engine, same config, same machine.

    python scripts/benchmark_train.py [--config configs/default.yaml] [--device cpu|cuda]
        [--steps N] [--warmup N] [--repeats R] [--json OUT] [key.sub=value ...]

Each engine trains a fresh model of the config (``train.engine`` set to each in turn; the
config's ``torch_threads`` apply): ``--warmup`` steps untimed, then ``--steps`` timed, collection
and updates together; the engines alternate ``--repeats`` times and the medians are compared.
Prints a table with ``ratio`` = device / sb3; ``--json`` writes
``{"engines": {"sb3"|"device": {"steps_per_s", "runs"}}, "ratio", "ratio_per_repeat",
"settings"}`` (``ratio``: of the medians; ``ratio_per_repeat``: of each back-to-back pair).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/default.yaml", help="experiment YAML")
    parser.add_argument("--device", default="cpu", help="training device (cpu, cuda)")
    parser.add_argument("--steps", type=int, default=4096, help="timed env steps per run")
    parser.add_argument("--warmup", type=int, default=2048, help="untimed env steps first")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each engine")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    args = parser.parse_args(argv)
    # imported after the arguments are read: --help answers before torch loads
    from drive_attention.agent.engine.speed import compare
    from drive_attention.agent.run.build import resolve_device
    from drive_attention.agent.run.cli import guarded
    from drive_attention.agent.run.config_files import load_config
    from drive_attention.agent.run.files import write_text

    def body() -> int:
        config = load_config(args.config, args.overrides)
        device = resolve_device(args.device)
        load = os.getloadavg()[0]
        print(
            f"{args.config}: {config.env.n_envs} env(s) of {config.env.id}, rollout "
            f"{config.algo.n_steps * config.env.n_envs}, minibatch {config.algo.batch_size}, "
            f"{config.algo.n_epochs} epochs; device {device}, torch threads "
            f"{config.train.torch_threads or 'default'}; load average {load:.1f} on "
            f"{os.cpu_count()} cores",
            file=sys.stderr,
        )
        speeds = compare(config, args.steps, args.warmup, device, args.repeats)
        ratio = speeds["device"].median / speeds["sb3"].median
        # each repeat runs the two engines back to back: their ratio sees the same load
        pairs = [d / s for d, s in zip(speeds["device"].steps_per_s, speeds["sb3"].steps_per_s)]
        print(f"{'engine':<8} {'steps/s':>9}  runs")
        for name, speed in speeds.items():
            runs = ", ".join(f"{s:.0f}" for s in speed.steps_per_s)
            print(f"{name:<8} {speed.median:>9.0f}  {runs}")
        print(
            f"ratio device / sb3: {ratio:.2f}x (of the medians); per repeat: "
            + ", ".join(f"{r:.2f}x" for r in pairs)
        )
        if args.json:
            result = {
                "engines": {
                    name: {"steps_per_s": s.median, "runs": s.steps_per_s}
                    for name, s in speeds.items()
                },
                "ratio": ratio,
                "ratio_per_repeat": pairs,
                "settings": {
                    "config": args.config,
                    "overrides": args.overrides,
                    "device": device,
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "torch_threads": config.train.torch_threads,
                    "cpu_count": os.cpu_count(),
                    "load_average_1min": load,
                },
            }
            write_text(args.json, json.dumps(result, indent=2) + "\n")
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
