"""Runs side by side: learning curves and final evaluations of a few runs.

``python scripts/plot.py runs/A runs/B [...] [--out runs/compare.png] [--table OUT.md]``

Reads each run's ``metrics.jsonl`` and ``eval/final.json`` (nothing is re-run): one PNG with
training return and success against environment steps and wall time, the periodic
evaluations' success as dots, and a markdown table of the final evaluations (every policy each
run was judged beside), printed and optionally written. See :mod:`agent.benchmark.compare`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, e.g. runs/default")
    parser.add_argument("--out", type=Path, default=Path("runs/compare.png"), help="the PNG")
    parser.add_argument("--table", type=Path, help="also write the table here (markdown)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from drive_attention.agent.benchmark.compare import (
        check_runs,
        final_rows,
        markdown_table,
        plot_runs,
    )
    from drive_attention.agent.run.cli import guarded
    from drive_attention.agent.run.files import check_writable, write_text

    def body() -> int:
        check_runs(args.runs)
        for path in (args.out, args.table):
            if path is not None:
                check_writable(path)
        rows = [row for run in args.runs for row in final_rows(run)]
        table = markdown_table(rows)
        png = plot_runs(args.runs, args.out)
        print(table)
        print(f"curves: {png}")
        if args.table is not None:
            write_text(args.table, table + "\n")
            print(f"table: {args.table}")
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
