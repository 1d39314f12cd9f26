"""Training and evaluation (agent/, scripts/train.py, scripts/evaluate.py) on short CPU runs.

One tiny training run (module fixture) is shared by the checkpoint, video, W&B, resume and
evaluation tests; the config, checkpoint-format and video tests need no simulator.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from drive_attention.agent.evaluate.episodes import SUMMARY_KEYS
from drive_attention.agent.evaluate.mp4 import VideoWriter, read_video
from drive_attention.agent.evaluate.video import FrameText, render_frame
from drive_attention.agent.run.checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from drive_attention.agent.run.config import ConfigError
from drive_attention.agent.run.config_files import load_config, read_yaml, to_dict
from drive_attention.agent.run.wandb_logger import RunLogger

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "configs" / "default.yaml"
PYTHON = sys.executable
ENV = {
    **os.environ,
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
}

# A few hundred steps of the default experiment, one env in-process, short episodes.
TINY = [
    "env.n_envs=1",
    "env.kwargs.duration=8",
    "algo.n_steps=64",
    "algo.batch_size=32",
    "algo.n_epochs=2",
    "train.eval_every=128",
    "train.eval_episodes=1",
    "train.checkpoint_every=64",
    "train.final_eval_episodes=2",
    "model.dim=16",
    "logging.video_scale=2",
]


# ------------------------------------------------------------------------------------- config


def test_default_config_resolves_with_overrides() -> None:
    overrides = ["model.layers=3", "env.kwargs.camera_size=[32, 32]", "algo.learning_rate=5e-4"]
    config = load_config(DEFAULT, overrides)
    assert config.model.layers == 3
    assert config.algo.learning_rate == 5e-4  # YAML 1.1 would read "5e-4" as a string
    assert config.env.kwargs["camera_size"] == [32, 32]
    plain = to_dict(config)
    assert set(plain) == {"env", "model", "algo", "train", "logging"}
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain  # plain data only


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.layer=3", ["model.layer", "model.layers"]),  # unknown key and the closest one
        ("trian.steps=10", ["trian", "train"]),  # unknown section
        ("algo.n_step=64", ["algo.n_step", "algo.n_steps"]),
        ("train.steps=lots", ["train.steps", "integer"]),  # wrong type
        ("train.eval_episodes=0", ["train.eval_episodes", "at least 1"]),  # out of range
        ("logging.wandb=onlin", ["logging.wandb", "online"]),
        ("algo.batch_size=4096", ["algo.batch_size", "algo.n_steps"]),  # cross-section check
        ("algo.name=sac", ["algo", "sac"]),  # PPO keys are not SAC options
        ("model.dim=31", ["model.dim", "heads"]),  # model schema, owned by models/
        ("model.layers", ["model.layers", "section.key=value"]),  # not an override
    ],
)
def test_bad_config_names_the_key(override: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DEFAULT, [override])
    for text in expected:
        assert text in str(info.value)


def test_overrides_given_as_data_keep_their_values() -> None:
    config = load_config(DEFAULT, {"logging.name": "2024", "model.layers": 3, "algo.n_epochs": 2})
    assert config.logging.name == "2024"  # read as YAML, the item logging.name=2024 is a number
    assert config.model.layers == 3 and config.algo.n_epochs == 2
    assert config == load_config(
        DEFAULT, ["logging.name='2024'", "model.layers=3", "algo.n_epochs=2"]
    )
    with pytest.raises(ConfigError, match=r"section\.key"):
        load_config(DEFAULT, {"model..layers": 3})
    with pytest.raises(ConfigError, match=r"model\.layer.*did you mean 'layers'"):
        load_config(DEFAULT, {"model.layer": 3})


def test_read_yaml_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    with pytest.raises(ConfigError, match="see configs/"):
        read_yaml(path, missing=f"{path} does not exist; see configs/")
    path.write_text("train: {steps: [1,\n")
    with pytest.raises(ConfigError, match=r"not valid YAML.*line"):
        read_yaml(path)
    path.write_text("- train\n- model\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_yaml(path)
    path.write_text("")
    assert read_yaml(path) == {}
    path.write_text("train: {steps: 10}\n")
    assert read_yaml(path) == {"train": {"steps": 10}}


def test_train_script_fails_fast_on_bad_config(run_script, tmp_path: Path) -> None:
    """A misspelt key ends the script before anything is built or written. (Each run takes a
    few seconds; the bound only catches a hang, with room for a machine at several times its
    usual load.)"""
    started = time.perf_counter()
    result = run_script(
        "train.py", "--config", str(DEFAULT), "model.layer=3", f"logging.root={tmp_path}"
    )
    assert result.returncode == 2
    assert "model.layer" in result.stderr and "model.layers" in result.stderr
    result = run_script(
        "train.py",
        "--config",
        str(DEFAULT),
        "env.kwargs.camera_siz=[32, 32]",
        f"logging.root={tmp_path}",
    )
    assert result.returncode == 2
    assert "env.kwargs.camera_siz" in result.stderr and "camera_size" in result.stderr
    assert not any(tmp_path.iterdir()), "nothing may be written before the config is valid"
    assert time.perf_counter() - started < 120


# --------------------------------------------------------------------------------- checkpoints


def _state() -> dict:
    return {
        "params": {"policy": {"w": torch.randn(3, 4), "b": torch.zeros(4)}},
        "optimizer": {
            "state": {0: {"step": torch.tensor(5.0)}},
            "param_groups": [{"betas": (0.9, 0.999)}],
        },
        "stats": {"mean": np.arange(3.0), "count": 7.0},
    }


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    state = _state()
    path = save_checkpoint(
        tmp_path / "step_0000000010.safetensors", Checkpoint(10, {"a": 1}, state)
    )
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file is left behind"
    loaded = load_checkpoint(path)
    assert loaded.step == 10 and loaded.config == {"a": 1}
    torch.testing.assert_close(
        loaded.state["params"]["policy"]["w"], state["params"]["policy"]["w"]
    )
    assert loaded.state["optimizer"]["state"][0]["step"].item() == 5.0  # int keys survive
    assert loaded.state["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    np.testing.assert_array_equal(loaded.state["stats"]["mean"], np.arange(3.0))
    assert latest_checkpoint(tmp_path) == path


def test_corrupted_checkpoint_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.safetensors", Checkpoint(1, {}, _state()))
    data = bytearray(path.read_bytes())
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    data[-3] ^= 0xFF  # damage inside the tensor data
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    for name in ("truncated", "flipped"):
        with pytest.raises(CheckpointError, match="corrupted"):
            load_checkpoint(tmp_path / f"{name}.safetensors")


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    torch.save({"policy": _Payload(str(marker))}, tmp_path / "torch.safetensors")
    (tmp_path / "raw.safetensors").write_bytes(pickle.dumps(_Payload(str(marker))))
    for name in ("torch", "raw"):
        with pytest.raises(CheckpointError, match=r"pickle|zip") as info:
            load_checkpoint(tmp_path / f"{name}.safetensors")
        assert "refused" in str(info.value)
    assert not marker.exists()


# ---------------------------------------------------------------------------- video, logging


def test_attention_frame_and_mp4(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    camera = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    attention = np.zeros((8, 8), np.float32)
    attention[2, 5] = 1.0
    text = FrameText(3, "FASTER", 24.0, 0.5, 1.5)
    plain = render_frame(camera, text, scale=2)
    overlaid = render_frame(
        camera, text, attention, np.array([0.6, 0.4]), ("ego", "rays.00"), camera_share=0.7, scale=2
    )
    assert overlaid.shape[0] % 16 == 0 and overlaid.shape[1] % 16 == 0  # H.264 macro blocks
    # the attended patch (row 2, col 5: pixels 32..48, 80..96 at scale 2) is tinted; an
    # unattended one far from it (row 6, col 0) is left as it was
    diff = np.abs(overlaid[:128, :128].astype(int) - plain[:128, :128].astype(int)).sum(-1)
    assert diff[32:48, 80:96].mean() > 30 and diff[96:112, 0:16].max() == 0
    with VideoWriter(tmp_path / "v.mp4", fps=4) as writer:
        for _ in range(5):
            writer.append(overlaid)
    frames = read_video(tmp_path / "v.mp4")
    assert frames.shape == (5, *overlaid.shape)
    assert np.abs(frames[0].astype(int) - overlaid.astype(int)).mean() < 8


def test_wandb_failure_does_not_stop_logging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", broken_init)
    logger = RunLogger(tmp_path, mode="offline", name="x")
    assert not logger.active
    logger.log({"train/loss": 1.0}, step=3)
    logger.log_video("eval/attention_video", tmp_path / "missing.mp4", step=3)
    logger.finish()
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["train/loss"] == 1.0


# -------------------------------------------------------------------------- a real tiny run


@pytest.fixture(scope="module")
def trained_run(run_script, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    result = run_script(
        "train.py",
        "--config",
        str(DEFAULT),
        "--name",
        "tiny",
        "--steps",
        "128",
        "--wandb",
        "offline",
        "--device",
        "cpu",
        f"logging.root={root}",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained" in result.stdout and "idle" in result.stdout and "random" in result.stdout
    assert f"attention videos (in {root / 'tiny' / 'videos'})" in result.stdout
    assert "final_trained_ep00.mp4" in result.stdout  # the first episode is always filmed
    return root / "tiny"


def test_training_writes_checkpoint_config_and_eval(trained_run: Path) -> None:
    steps = sorted(
        load_checkpoint(p).step for p in (trained_run / "checkpoints").glob("*.safetensors")
    )
    assert steps[-1] == 128 and 64 in steps
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["model"]["dim"] == 16 and config["logging"]["name"] == "tiny"
    final = json.loads((trained_run / "eval" / "final.json").read_text())
    assert set(final) >= {"trained", "random", "idle", "rule"}
    assert set(SUMMARY_KEYS) <= set(final["trained"])


def test_training_video_shows_whole_episodes_with_attention(trained_run: Path) -> None:
    """Every video of the final evaluation is a whole episode at its pace (``video_fps`` frames
    per 1 Hz decision and the last held), the scene 256 px across; its first frame is the seeded
    episode's scene with the attention drawn over it (the rays at least), the scene still
    visible under it."""
    import gymnasium as gym

    from drive_attention.agent.evaluate.scene import HighwayScene

    final = json.loads((trained_run / "eval" / "final_trained.json").read_text())
    filmed = [e for e in final["episodes"] if e["video"]]
    assert filmed and filmed[0]["episode"] == 0
    outcomes = {e["success"] for e in final["episodes"]}
    assert {e["success"] for e in filmed} == outcomes, "a success and a failure where both exist"
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    fps = config["logging"]["video_fps"]
    assert fps == 15  # the talk-ready default
    for episode in filmed:
        frames = read_video(episode["video"])
        assert frames.shape[0] == (episode["length"] + 1) * fps, episode
        assert frames.shape[1] >= 256 and frames.shape[2] >= 256 + 256
    judged_on = config["train"]["eval_env"] or config["env"]["id"]
    assert final["env_id"] == judged_on
    env = gym.make(judged_on, **config["env"]["kwargs"])
    env.reset(seed=filmed[0]["seed"])
    scene = HighwayScene.attach(env, 4)
    scene.start()
    raw, _ = scene.draw(scene.snapshot())
    env.close()
    shown = read_video(filmed[0]["video"])[0][:256, :256].astype(int)
    diff = np.abs(shown - raw.astype(int)).sum(-1)
    assert (diff < 30).mean() > 0.5, "most of the scene shows through"
    assert (diff > 60).sum() > 100, "the attention is drawn in the scene"


def test_offline_wandb_run_holds_video_and_metrics(trained_run: Path) -> None:
    runs = list((trained_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = list(runs[0].glob("files/media/videos/eval/attention_video*.mp4"))
    assert media and media[0].stat().st_size > 1000
    # every filmed episode of the final evaluation was sent once: under final/, or already as
    # the last periodic evaluation's byte-identical video (the same seeded episode)
    sent = {p.read_bytes() for p in runs[0].glob("files/media/videos/*/attention_video*.mp4")}
    final = json.loads((trained_run / "eval" / "final_trained.json").read_text())
    filmed = [e["video"] for e in final["episodes"] if e["video"]]
    assert filmed and all(Path(v).read_bytes() in sent for v in filmed)
    tables = list(runs[0].glob("files/media/table/final/episodes*.table.json"))
    text = tables[0].read_text() if tables else ""
    assert all('"Video"' in text or Path(v).name in text for v in filmed), "in the episode table"
    assert list(runs[0].glob("files/media/table/eval/episodes*.table.json"))
    records = next(runs[0].glob("run-*.wandb")).read_bytes()
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["logging"]["group"] == "default"  # the experiment: configs/default.yaml
    # checkpoints as versions of one model artifact: every 64 steps and the final one, the
    # best evaluation's marked "best"
    assert records.count(b"tiny-model") >= 3
    assert records.count(b"best") >= 1 and records.count(b"step-64") >= 1
    for key in (
        b"eval/mean_return",
        b"train/value_loss",
        b"rollout/ep_rew_mean",
        b"rollout/reward/progress",
    ):
        assert key in records, key
    metrics = [
        json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("eval/mean_return" in m for m in metrics)
    # the evaluation's attention video episode is attributed to road classes
    masses = [m for m in metrics if "attention/class_mass/road" in m]
    assert masses and 0.0 < masses[-1]["attention/class_mass/road"] < 1.0
    assert any("attention/class_lift/lane_marking" in m for m in metrics)
    assert any("rollout/collision_rate" in m for m in metrics)


def test_resume_continues_step_counter_and_optimizer(
    run_script, trained_run: Path, tmp_path: Path
) -> None:
    run = shutil.copytree(trained_run, tmp_path / "tiny")
    before = load_checkpoint(latest_checkpoint(run))
    result = run_script(
        "train.py", "--resume", str(run), "--steps", "256", "train.final_eval_episodes=0"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    after = load_checkpoint(latest_checkpoint(run))
    assert before.step == 128 and after.step == 256
    counters = after.state["counters"]
    assert counters["n_updates"] > before.state["counters"]["n_updates"]
    assert (
        after.state["params"]["policy.optimizer"]["state"][0]["step"]
        > (before.state["params"]["policy.optimizer"]["state"][0]["step"])
    )
    lines = (run / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["global_step"] for line in lines]
    assert steps == sorted(steps), "the step counter never goes back"
    assert max(steps) >= 256


def test_evaluate_writes_documented_json(run_script, trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    wandb_runs = set((trained_run / "wandb").glob("offline-run-*"))
    result = run_script(
        "evaluate.py", "--run", str(trained_run), "--episodes", "2", "--seed", "7", "--video",
        "--json", str(out), "--wandb", "offline",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (new_run,) = set((trained_run / "wandb").glob("offline-run-*")) - wandb_runs
    assert list(new_run.glob("files/media/videos/eval/attention_video*.mp4"))
    # the evaluation run carries the training run's config (and so its group)
    records = next(new_run.glob("run-*.wandb")).read_bytes()
    assert b"learning_rate" in records and b"evaluation" in records
    assert "attention videos:" in result.stdout and "_ep00.mp4" in result.stdout
    report = json.loads(out.read_text())
    assert set(SUMMARY_KEYS) | {"episodes"} <= set(report)
    assert len(report["episodes"]) == 2 and report["episodes"][0]["seed"] == 7
    assert {"return", "length", "success", "collision", "mean_speed"} <= set(report["episodes"][0])
    assert Path(report["episodes"][0]["video"]).is_file()
    assert "return" in result.stdout and "collision" in result.stdout  # the printed table
    for policy in ("random", "idle"):
        out = tmp_path / f"{policy}.json"
        result = run_script(
            "evaluate.py",
            "--run",
            str(trained_run),
            "--policy",
            policy,
            "--episodes",
            "2",
            "--seed",
            "7",
            "--json",
            str(out),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert set(SUMMARY_KEYS) <= set(json.loads(out.read_text()))


def test_evaluate_attention_reports_attribution(
    run_script, trained_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "attention.json"
    result = run_script(
        "evaluate.py", "--run", str(trained_run), "--episodes", "2", "--seed", "3",
        "--attention", "--video", "--json", str(out), "--wandb", "offline",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # per-frame attention goes to W&B on its own axis, never into metrics.jsonl's step axis
    rows = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert max(row["global_step"] for row in rows) == 128  # the run's last step
    newest = max((trained_run / "wandb").glob("offline-run-*"), key=lambda p: p.stat().st_mtime)
    assert b"attention/frame/class_mass/road" in next(newest.glob("run-*.wandb")).read_bytes()
    report = json.loads(out.read_text())
    attention, episodes = report["attention"], report["episodes"]
    mass, lift = attention["class_mass"], attention["class_lift"]
    assert {"road", "lane_marking", "ego"} <= set(mass) and set(lift) == set(mass)
    # one frame per decision of the two evaluated episodes (the evaluation's own episode
    # lengths), and the mass is the mean of the frames' masses. (Lift and the occlusion ratio
    # are checked against hand-computed maps in tests/agent/evaluate/test_attribution.py.)
    frames = attention["per_frame"]
    assert len(frames) == attention["frames"] == sum(e["length"] for e in episodes) > 0
    for name in mass:
        assert mass[name] == pytest.approx(np.mean([f[name] for f in frames]), abs=1e-6)
    # the printed table shows each class's area, mass and lift as the JSON holds them
    printed = {
        row[0]: [float(x.rstrip("%")) for x in row[1:]]
        for row in (line.split() for line in result.stdout.splitlines())
        if len(row) == 4 and row[0] in mass
    }
    assert set(printed) == set(mass), result.stdout
    for name, (area, on_it, lifted) in printed.items():
        assert area == pytest.approx(100 * attention["class_share"][name], abs=0.051)
        assert on_it == pytest.approx(100 * mass[name], abs=0.051)
        assert lifted == pytest.approx(lift[name], abs=0.0051)
    # the occlusion check blanks 10% of the 8 x 8 patches (a 64 px camera, 8 px patches); its
    # ratio is printed, and a warning where it is below the faithfulness threshold
    occlusion = attention["occlusion"]
    assert occlusion["patches_blanked"] == 6
    assert f"ratio {attention['occlusion_ratio']:.2f}" in result.stdout
    assert ("MAP NOT FAITHFUL" in result.stdout) is (not attention["faithful"])
    # the rates are shares of the two episodes: the intact ones those of the evaluation's
    # episode rows, each ablation's 0, 1/2 or 1
    intact = attention["modality"]["intact"]
    assert intact["success_rate"] == np.mean([e["success"] for e in episodes])
    assert intact["collision_rate"] == np.mean([e["collision"] for e in episodes])
    for mode in ("camera_blanked", "sensors_zeroed", "sensor_noise"):
        row = attention["modality"][mode]
        assert 2 * row["success_rate"] in (0, 1, 2) and 2 * row["collision_rate"] in (0, 1, 2)
        assert np.isfinite(row["mean_return"])
    # blanking the camera moves the query's attention off the (now black) camera
    modality = attention["modality"]
    assert modality["camera_blanked"]["camera_share"] != modality["intact"]["camera_share"]
    assert "lift" in result.stdout and "occlusion" in result.stdout  # the printed tables
    assert len(attention["per_layer"]) >= 1
    # attention against what the teacher's decision depends on, on the same episodes
    relevance = attention["relevance"]
    assert relevance["env_id"] == "DriveAttention/BatchedHighway-v0"
    assert 0 < relevance["relevant_frames"] <= relevance["frames"] == attention["frames"]
    assert relevance["relevance_seconds_per_frame"] > 0
    measured = [relevance[part] for part in ("tokens", "patches") if relevance[part]["frames"]]
    assert measured, "highway frames have relevant vehicles among the tokens or in view"
    for row in measured:
        assert 0.0 <= row["hit"] <= 1.0 and 0.0 < row["chance"] <= 1.0
        assert row["ratio"] == pytest.approx(row["hit"] / row["chance"])
    assert "attention on what matters" in result.stdout
    assert b"attention/relevance/" in next(newest.glob("run-*.wandb")).read_bytes()


def test_checkpoint_may_only_restore_the_algorithms_own_tensors(trained_run: Path) -> None:
    from drive_attention.agent.run.algo_state import restore_algo_state
    from drive_attention.agent.run.loading import load_agent

    agent = load_agent(trained_run, device="cpu")
    state = dict(agent.checkpoint.state)
    weight = agent.model.policy.action_net.weight
    state["variables"] = {"policy.action_net.weight": torch.zeros_like(weight)}
    with pytest.raises(CheckpointError, match="not one of this algorithm's saved tensors"):
        restore_algo_state(agent.model, state)
    assert weight.abs().sum() > 0, "nothing was overwritten"


def test_evaluate_refuses_bad_checkpoints(run_script, trained_run: Path, tmp_path: Path) -> None:
    good = latest_checkpoint(trained_run)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(good.read_bytes()[:-100])
    result = run_script(
        "evaluate.py", "--run", str(trained_run), "--checkpoint", str(broken), "--episodes", "1"
    )
    assert result.returncode == 2 and "corrupted" in result.stderr
    pickled = tmp_path / "pickled.pt"
    torch.save({"policy": {"w": torch.zeros(2)}}, pickled)
    result = run_script(
        "evaluate.py", "--run", str(trained_run), "--checkpoint", str(pickled), "--episodes", "1"
    )
    assert result.returncode == 2 and "refused" in result.stderr
    # another scenario with other sensors: explained, not a shape error deep inside torch
    result = run_script(
        "evaluate.py",
        "--run",
        str(trained_run),
        "--env",
        "DriveAttention/Merge-v0",
        "--episodes",
        "1",
    )
    assert result.returncode == 2 and "route.merge_distance" in result.stderr


def test_sigint_saves_a_checkpoint(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            PYTHON,
            str(ROOT / "scripts" / "train.py"),
            "--config",
            str(DEFAULT),
            "--name",
            "stop",
            "--steps",
            "100000",
            "--wandb",
            "disabled",
            f"logging.root={tmp_path}",
            *TINY,
            "train.eval_every=0",
            "train.checkpoint_every=0",
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "stop" / "metrics.jsonl"
    # until the first rollout has been logged (seconds; the limit only turns a hang into a
    # failure, with room for a machine at several times its usual load)
    deadline = time.monotonic() + 600
    while not metrics.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"training did not log its first rollout: {process.communicate()[1]}")
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    checkpoint = latest_checkpoint(tmp_path / "stop")
    assert checkpoint is not None and 64 <= load_checkpoint(checkpoint).step < 100000
    assert "--resume" in stderr


def test_resume_with_a_different_model_is_refused(
    run_script, trained_run: Path, tmp_path: Path
) -> None:
    run = shutil.copytree(trained_run, tmp_path / "tiny")
    result = run_script("train.py", "--resume", str(run), "model.dim=32")
    assert result.returncode == 2
    assert "does not fit" in result.stderr and "model.dim" in result.stderr
    assert latest_checkpoint(run).name == latest_checkpoint(trained_run).name  # nothing written


def test_resume_under_changed_default_reward_weights_is_refused_with_the_fix(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run records its reward weights; resumed where the defaults have changed since, it is
    refused (its reward would change without a word) and the message gives both fixes."""
    from drive_attention import envs
    from drive_attention.agent.run.admission import prepare
    from drive_attention.agent.run.config_files import read_yaml

    run = shutil.copytree(trained_run, tmp_path / "tiny")
    info_path = run / "run.json"
    info = json.loads(info_path.read_text())
    env = read_yaml(run / "config.yaml")["env"]
    assert info["reward_weights"] == envs.reward_weights(env["id"], **env["kwargs"])
    older = {**info["reward_weights"], "alive": 0.0, "collision": 1.0}  # as if trained before
    info_path.write_text(json.dumps({**info, "reward_weights": older}))
    with pytest.raises(ConfigError, match=r"reward weights.*alive 0\.0 -> 1") as refused:
        prepare(None, [], resume=run)
    assert "env.kwargs.reward_weights=" in str(refused.value)
    # naming one changed term does not let the other through
    with pytest.raises(ConfigError, match=r"alive 0\.0 -> 1"):
        prepare(None, ["env.kwargs.reward_weights={collision: 1.0}"], resume=run)
    keep = "{" + ", ".join(f"{k}: {v}" for k, v in older.items()) + "}"
    prepared = prepare(None, [f"env.kwargs.reward_weights={keep}"], resume=run)
    prepared.lock.release()
    # a run from before runs recorded them: a warning, and it goes on
    info_path.write_text(json.dumps({k: v for k, v in info.items() if k != "reward_weights"}))
    capsys.readouterr()
    prepared = prepare(None, [], resume=run)
    prepared.lock.release()
    assert "does not record the reward weights" in capsys.readouterr().err


def test_unknown_env_id_names_the_closest(tmp_path: Path) -> None:
    from drive_attention.agent.run.admission import prepare

    with pytest.raises(ConfigError, match=r"env\.id.*DriveAttention/Highway-v0"):
        prepare(DEFAULT, ["env.id=DriveAttention/Highwy-v0", f"logging.root={tmp_path}"])


def test_eval_env_must_be_a_known_id_with_the_same_observations(tmp_path: Path) -> None:
    from drive_attention.agent.run.admission import prepare

    with pytest.raises(ConfigError, match=r"train\.eval_env.*DriveAttention/Highway-v0"):
        prepare(DEFAULT, ["train.eval_env=DriveAttention/Highwy-v0", f"logging.root={tmp_path}"])
    # another scenario: refused before any run folder exists
    with pytest.raises(ConfigError, match=r"train\.eval_env: DriveAttention/Merge-v0"):
        prepare(DEFAULT, ["train.eval_env=DriveAttention/Merge-v0", f"logging.root={tmp_path}"])
    roundabout = ["env.id=DriveAttention/BatchedRoundabout-v0", f"logging.root={tmp_path}"]
    with pytest.raises(ConfigError, match="not the scenario"):  # the same sensors, not the same
        prepare(DEFAULT, [*roundabout, "train.eval_env=DriveAttention/Intersection-v0"])
    assert not any(tmp_path.iterdir())


def test_sac_continuous_trains_and_resumes(run_script, tmp_path: Path) -> None:
    tiny_sac = [
        "--wandb", "disabled", f"logging.root={tmp_path}", "env.kwargs.duration=4", "model.dim=16",
        "algo.learning_starts=32", "algo.batch_size=16", "algo.buffer_size=500",
        "train.eval_every=0", "train.checkpoint_every=0", "train.final_eval_episodes=0",
    ]  # fmt: skip
    sac = str(ROOT / "configs" / "sac.yaml")
    result = run_script("train.py", "--config", sac, "--name", "sac", "--steps", "64", *tiny_sac)
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_script("train.py", "--resume", str(tmp_path / "sac"), "--steps", "96")
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(latest_checkpoint(tmp_path / "sac")).state
    assert state["counters"]["num_timesteps"] == 96
    assert {"actor.optimizer", "critic.optimizer", "ent_coef_optimizer"} <= set(state["params"])
    assert "log_ent_coef" in state["variables"]


def test_normalisation_statistics_round_trip(tmp_path: Path) -> None:
    from drive_attention.agent.run.algo_state import restore_vec_normalize, vec_normalize_state
    from drive_attention.agent.run.build import make_vec_env, wrap_normalize

    config = load_config(
        DEFAULT,
        [
            "env.n_envs=1",
            "algo.n_steps=32",
            "algo.batch_size=32",
            "env.normalize_sensors=true",
            "env.normalize_reward=true",
        ],
    )
    venv = wrap_normalize(make_vec_env(config.env, seed=0), config.env, gamma=0.9)
    venv.reset()
    for _ in range(5):
        venv.step(np.array([1]))
    path = save_checkpoint(
        tmp_path / "n.safetensors", Checkpoint(5, {}, {"vec_normalize": vec_normalize_state(venv)})
    )
    fresh = wrap_normalize(make_vec_env(config.env, seed=1), config.env, gamma=0.9)
    restore_vec_normalize(fresh, load_checkpoint(path).state["vec_normalize"])
    np.testing.assert_allclose(fresh.obs_rms["sensors"].mean, venv.obs_rms["sensors"].mean)
    np.testing.assert_allclose(fresh.obs_rms["sensors"].var, venv.obs_rms["sensors"].var)
    assert fresh.ret_rms.count == venv.ret_rms.count
    venv.close()
    fresh.close()


def test_batched_backend_trains_in_one_process(run_script, tmp_path: Path) -> None:
    batched = str(ROOT / "configs" / "batched.yaml")
    result = run_script(
        "train.py", "--config", batched, "--name", "b", "--steps", "128", "--wandb", "disabled",
        f"logging.root={tmp_path}", "env.n_envs=4", "algo.n_steps=32", "algo.batch_size=64",
        "algo.n_epochs=1", "model.dim=16", "env.kwargs.duration=8", "train.eval_every=128",
        "train.eval_episodes=1", "train.final_eval_episodes=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(latest_checkpoint(tmp_path / "b")).step == 128
    assert list((tmp_path / "b" / "videos").glob("eval_step*.mp4"))
    rows = [
        json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("rollout/ep_rew_mean" in r for r in rows), "VecMonitor reports episodes"
