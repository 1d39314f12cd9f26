"""``scripts/watch.py``: the shipped default agent, filmed without any training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drive_attention.agent.evaluate.mp4 import read_video
from drive_attention.agent.evaluate.watch import PRETRAINED
from drive_attention.agent.run.checkpoint import load_checkpoint
from drive_attention.agent.run.config_files import read_yaml

ROOT = Path(__file__).resolve().parents[3]


def test_the_shipped_agent_is_a_run_folder_with_its_checkpoint_and_evaluation() -> None:
    config = read_yaml(PRETRAINED / "config.yaml")
    assert config["env"]["id"] == "DriveAttention/BatchedHighway-v0"
    (checkpoint,) = (PRETRAINED / "checkpoints").glob("step_*.safetensors")
    assert checkpoint.stat().st_size < 2_000_000, "small enough to live in the repository"
    ckpt = load_checkpoint(checkpoint)  # verifies the checksum and the tensors
    final = json.loads((PRETRAINED / "eval" / "final.json").read_text())
    assert final["step"] == ckpt.step and final["episodes"] >= 50
    # what it reached is what the docs may claim: the bar of the default agent
    assert final["trained"]["success_rate"] >= 0.9 and final["trained"]["mean_speed"] >= 25


@pytest.mark.slow  # ten seconds: films an episode in a fresh process (make test-slow runs it)
def test_watch_films_the_shipped_agent_without_a_display(tmp_path: Path) -> None:
    out = tmp_path / "videos"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "watch.py"), "--episodes", "1", "--seed", "3",
         "--out", str(out), "--no-window"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (video,) = out.glob("*.mp4")
    assert video.name == "pretrained_BatchedHighway-v0_seed3.mp4" and str(video) in result.stdout
    assert "occlusion ratio" in result.stdout
    frames = read_video(video)
    assert len(frames) >= 8 and frames.shape[2] >= 512  # the panel beside a 256 px scene


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--episodes", "0"], "at least 1"),
        (["--run", "nowhere"], "not a run folder"),
    ],
)
def test_watch_refuses_bad_input_in_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import watch
    finally:
        sys.path.pop(0)
    assert watch.main([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
