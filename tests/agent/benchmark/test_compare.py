"""``scripts/plot.py``: a few runs side by side, from what their folders hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]


def _run(folder: Path, success: list[float], final: dict | None, evals: dict[int, float]) -> Path:
    """A run folder as scripts/train.py leaves it: metrics.jsonl rows every 1000 steps (return
    rising, the given training success), evaluation rows, and eval/final.json if given."""
    folder.mkdir(parents=True)
    rows = []
    for i, s in enumerate(success):
        step = 1000 * (i + 1)
        rows.append(
            {
                "global_step": step,
                "rollout/ep_rew_mean": float(i),
                "rollout/success_rate": s,
                "time/time_elapsed": 6 * (i + 1),
            }
        )
        if step in evals:
            rows.append(
                {"global_step": step, "eval/success_rate": evals[step], "eval/mean_return": 9.5}
            )
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    if final is not None:
        (folder / "eval").mkdir()
        (folder / "eval" / "final.json").write_text(json.dumps(final))
    return folder


def _figures(success: float, collision: float, speed: float, ret: float) -> dict:
    return {
        "mean_return": ret,
        "std_return": 1.0,
        "success_rate": success,
        "collision_rate": collision,
        "mean_speed": speed,
        "mean_length": 30.0,
    }


def _plot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plot.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_runs_side_by_side_give_their_own_figures_and_one_png(tmp_path: Path) -> None:
    final = {
        "step": 5000,
        "episodes": 50,
        "seed": 1000,
        "trained": _figures(0.94, 0.06, 27.6, 51.9),
        "rule": _figures(0.98, 0.02, 20.5, 32.0),
    }
    a = _run(tmp_path / "runs" / "a", [0.0, 0.5, 1.0, 1.0, 1.0], final, {3000: 0.8})
    b = _run(tmp_path / "runs" / "b", [0.0, 0.0, 0.2], None, {2000: 0.25, 3000: 0.4})
    out, table = tmp_path / "cmp.png", tmp_path / "cmp.md"
    result = _plot(str(a), str(b), "--out", str(out), "--table", str(table))
    assert result.returncode == 0, result.stderr
    lines = table.read_text().splitlines()
    assert lines[2] == "| a | trained | 5000 | 50 | 94% | 6% | 27.6 | 51.90 |"
    assert lines[3] == "| a | rule | 5000 | 50 | 98% | 2% | 20.5 | 32.00 |"
    # no final evaluation: the last periodic one, said as such
    assert lines[4] == "| b | trained (evaluation at step 3000) | 3000 | - | 40% | - | - | 9.50 |"
    assert table.read_text().strip() in result.stdout
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 300 and image.shape[1] > 500
    # two curves in two colours: more than the axes' black and white
    colours = {tuple(c) for c in image.reshape(-1, 3)[::7]}
    assert len(colours) > 20 and np.std(image) > 10


def test_bad_run_folders_are_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import plot
    finally:
        sys.path.pop(0)
    out = tmp_path / "cmp.png"
    assert plot.main([str(tmp_path / "nothing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    a = _run(tmp_path / "x" / "a", [0.0, 1.0], None, {})
    other = _run(tmp_path / "y" / "a", [0.0, 1.0], None, {})
    assert plot.main([str(a), str(other), "--out", str(out)]) == 2
    assert "named twice" in capsys.readouterr().err and not out.exists()
