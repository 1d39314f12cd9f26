"""scripts/mutation_report.py: the copy mutmut runs on is laid out as the package is imported,
and the report's figures are mutmut's outcomes counted per module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "mutation_report.py"


def test_the_staged_copy_imports_its_own_files_as_drive_attention(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    done = subprocess.run([sys.executable, str(SCRIPT), "--stage", str(stage)], check=False)
    assert done.returncode == 0
    probe = (
        "import drive_attention.agent.evaluate.episodes as m, drive_attention.envs as e\n"
        "print(m.__file__); print(e.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=stage, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    module, envs_init = out.stdout.split()
    # mutmut names mutants by path: the path must be the module's dotted name
    assert Path(module) == stage / "drive_attention" / "agent" / "evaluate" / "episodes.py"
    assert Path(envs_init) == stage / "drive_attention" / "envs" / "__init__.py"
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = tomllib.loads((stage / "pyproject.toml").read_text())["tool"]["mutmut"]
    assert all((stage / path).is_file() for path in listed["only_mutate"])
    assert all((stage / path).is_file() for path in listed["pytest_add_cli_args_test_selection"])


def test_the_report_counts_each_outcome_per_module(tmp_path: Path) -> None:
    root = tmp_path / "mutants" / "drive_attention" / "agent"
    root.mkdir(parents=True)
    codes = {"a__mutmut_1": 1, "a__mutmut_2": 0, "a__mutmut_3": 33, "a__mutmut_4": -9,
             "a__mutmut_5": None, "a__mutmut_6": 1}  # fmt: skip
    (root / "rule.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(tmp_path / "mutants"), "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    row = report["modules"]["agent/rule.py"]
    # killed: exit 1 twice and a signal (the timeout); survived 0; no tests 33; None not run
    assert (row["killed"], row["survived"], row["no_tests"], row["not_run"]) == (3, 1, 1, 1)
    assert row["kill_rate"] == 3 / 5
    assert row["survivors"] == ["a__mutmut_2", "a__mutmut_3", "a__mutmut_5"]
    assert len(report["commit"]) == 40 and report["date"][:2] == "20"
    assert "| `agent/rule.py` | 6 | 3 | 1 | 1 | 1 | 60.0% |" in (out / "report.md").read_text()


def test_no_results_is_an_error_that_says_what_to_run(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(tmp_path)], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "run make mutation" in done.stderr
