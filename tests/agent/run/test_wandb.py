"""W&B logging (agent/run/wandb_logger.py, the run's group in agent/training.py) with a real offline
W&B run: checkpoint artifact versions and their aliases, best-value summaries, per-frame series
on their own axis, system metrics as configured, and the group a run joins."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import wandb

from drive_attention.agent.run import wandb_logger
from drive_attention.agent.run.wandb_logger import RunLogger

ROOT = Path(__file__).resolve().parents[3]


def records(run_dir: Path) -> bytes:
    """The offline W&B run's record file (protobuf; names and strings are stored as bytes), read
    once W&B's service has ended (a finished run's records may still be in its write buffer)."""
    wandb.teardown()
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return path.read_bytes()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_offline_run_logs_checkpoints_summaries_and_frames(
    tmp_path: Path, offline: None, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "step_1.safetensors", tmp_path / "step_2.safetensors"
    first.write_bytes(b"one")
    second.write_bytes(b"two")
    logger = RunLogger(tmp_path, mode="offline", name="x", group="default", system_metrics=False)
    assert logger.active and logger.run.group == "default"
    assert logger.run.settings.x_disable_stats  # system metrics switched off by the config
    for step, value in ((100, 2.0), (200, 5.0), (300, 1.0)):
        logger.log({"eval/mean_return": value, "eval/success_rate": value / 10}, step)
    # the run's summary keeps the best evaluation, not only the last
    assert logger.run.summary["eval/mean_return"]["max"] == 5.0
    assert logger.run.summary["eval/mean_return"]["last"] == 1.0
    assert logger.run.summary["eval/success_rate"]["max"] == 0.5
    logger.log_frames([{"attention/frame/class_mass/road": m} for m in (0.3, 0.4, 0.5)])
    logger.log_model([first], "x-model", {"step": 1}, ("latest",))
    logger.log_model([second], "x-model", {"step": 2}, ("best", "latest"))
    assert logger.url is None  # offline: no page to print
    logger.finish()
    assert "wandb sync" in capsys.readouterr().out

    # metrics.jsonl: one row per logged environment step, no per-frame rows
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["global_step"] for row in rows] == [100, 200, 300]
    data = records(tmp_path)
    assert data.count(b"attention/frame/class_mass/road") >= 3  # W&B got every frame
    # two versions of one model artifact: aliases latest (both), best, and the steps
    assert data.count(b"x-model") == 2
    for alias in (b"best", b"step-1", b"step-2"):
        assert data.count(alias) == 1, alias
    assert data.count(b"latest") == 2


def test_system_metrics_are_on_by_default(tmp_path: Path, offline: None) -> None:
    logger = RunLogger(tmp_path, mode="offline", name="y")
    try:
        assert not logger.run.settings.x_disable_stats
    finally:
        logger.finish()


def test_group_defaults_to_the_experiment(tmp_path: Path) -> None:
    """A run's W&B group is its config's name (the seeds and arms of one experiment share it)
    unless ``logging.group`` says otherwise; it is saved in the run's config."""
    from drive_attention.agent.run.admission import prepare

    default = ROOT / "configs" / "default.yaml"
    prepared = prepare(default, {"logging.root": str(tmp_path), "logging.name": "a"})
    prepared.release()
    assert prepared.config.logging.group == "default"
    assert prepared.config.logging.system_metrics is True
    given = {"logging.root": str(tmp_path), "logging.name": "b", "logging.group": "study-1"}
    prepared = prepare(default, given)
    prepared.release()
    assert prepared.config.logging.group == "study-1"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server on the loopback address that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()
    assert held, "W&B never tried the server"


def test_a_server_that_never_answers_costs_one_init_timeout_then_logs_offline(
    tmp_path: Path,
    silent_server: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # looks logged in: the run tries online
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(wandb_logger, "INIT_TIMEOUT_S", 2.0)
    wandb.teardown()  # W&B keeps the settings it read first (the other tests': offline)
    logger = RunLogger(tmp_path, mode="online", name="x", system_metrics=False)
    try:
        assert logger.mode == "offline" and logger.active, capsys.readouterr().err
        assert logger.run.settings.init_timeout == 2.0
        logger.log({"eval/mean_return": 1.0}, 10)
    finally:
        logger.finish()
    err = capsys.readouterr().err
    assert "cannot start the run online" in err and "logging offline" in err, err
    assert records(tmp_path).count(b"eval/mean_return") >= 1, err  # the offline run has it


def test_an_offline_run_copied_elsewhere_holds_its_checkpoints_and_its_console(
    tmp_path: Path, offline: None
) -> None:
    run_dir = tmp_path / "node" / "run"
    run_dir.mkdir(parents=True)
    checkpoint = run_dir / "step_1.safetensors"
    checkpoint.write_bytes(b"weights " * 1000)
    logger = RunLogger(run_dir, mode="offline", name="copied", system_metrics=False)
    print("a line the Logs tab should show")
    logger.log_model([checkpoint], "copied-model", {"step": 1}, ("latest",))
    logger.finish()
    wandb.teardown()
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(run_dir, copy)
    checkpoint.unlink()
    shutil.rmtree(tmp_path / "node")  # the node's files are gone; the copy must suffice
    staged = [p for p in (copy / "wandb").rglob("*") if p.is_file()]
    assert any(p.read_bytes() == b"weights " * 1000 for p in staged), "the artifact's file"
    (log,) = (copy / "wandb").glob("offline-run-*/files/output.log")
    assert "a line the Logs tab should show" in log.read_text()


def test_a_video_already_uploaded_is_not_uploaded_again(tmp_path: Path, offline: None) -> None:
    from drive_attention.agent.evaluate.mp4 import VideoWriter

    videos = []
    for name in ("last_eval.mp4", "final.mp4", "other.mp4"):
        writer = VideoWriter(tmp_path / name, fps=4)
        shade = 200 if name == "other.mp4" else 90
        for _ in range(4):
            writer.append(np.full((32, 32, 3), shade, np.uint8))
        videos.append(writer.close())
    assert videos[0].read_bytes() == videos[1].read_bytes()  # the same episode filmed twice
    logger = RunLogger(tmp_path, mode="offline", name="videos", system_metrics=False)
    logger.log_video("eval/attention_video_success", videos[0], 100)
    logger.log_video("final/attention_video_success", videos[1], 100)
    logger.log_table("final/episodes", ("video",), [[videos[1]], [videos[2]]], 100)
    logger.finish()
    wandb.teardown()
    # what W&B keeps to upload: the run's media and the staged files of its table artifact
    sent = [p.read_bytes() for p in (tmp_path / "wandb").rglob("*") if p.is_file()]
    assert sent.count(videos[0].read_bytes()) == 1, "the repeat is left out"
    assert sent.count(videos[2].read_bytes()) == 1, "the other video goes"
