"""Kill rate per module of the last ``make mutation`` run (mutmut's results in ``mutants/``).

``python scripts/mutation_report.py [--json OUT] [--survivors]``

A mutant is *killed* when a test failed (or it timed out), *survived* when the tests that reach
its function all passed, *no tests* when no selected test reaches that function. The kill rate
is killed / (killed + survived + no tests); ``--survivors`` lists the survivors' names, which
``mutmut show NAME`` prints as a diff.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

KILLED, SURVIVED, NO_TESTS = 1, 0, 33  # mutmut's exit codes in its .meta files


def outcome(code: int | None) -> str:
    if code == KILLED or (code is not None and code < 0):  # a signal: the timeout killed it
        return "killed"
    if code == SURVIVED:
        return "survived"
    if code == NO_TESTS:
        return "no_tests"
    return "not_run"


def collect(root: Path) -> dict[str, dict]:
    modules: dict[str, dict] = {}
    for meta in sorted(root.rglob("*.py.meta")):
        module = str(meta.relative_to(root))[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter(outcome(code) for code in codes.values())
        judged = counts["killed"] + counts["survived"] + counts["no_tests"]
        modules[module] = {
            "mutants": len(codes),
            **{k: counts[k] for k in ("killed", "survived", "no_tests", "not_run")},
            "kill_rate": counts["killed"] / judged if judged else None,
            "survivors": sorted(k for k, c in codes.items() if outcome(c) != "killed"),
        }
    return modules


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("mutants"))
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--survivors", action="store_true", help="list surviving mutants")
    args = parser.parse_args()
    modules = collect(args.root)
    if not modules:
        print(f"error: no mutmut results under {args.root}; run make mutation", file=sys.stderr)
        return 2
    print(f"{'module':28s} {'mutants':>8s} {'killed':>7s} {'survived':>9s} {'no tests':>9s} "
          f"{'kill rate':>9s}")  # fmt: skip
    for name, row in modules.items():
        rate = "-" if row["kill_rate"] is None else f"{row['kill_rate']:.1%}"
        print(f"{name:28s} {row['mutants']:8d} {row['killed']:7d} {row['survived']:9d} "
              f"{row['no_tests']:9d} {rate:>9s}")  # fmt: skip
        if args.survivors:
            for mutant in row["survivors"]:
                print(f"    {mutant}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(modules, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
