"""Every size option has an upper bound, checked before anything is allocated, wherever the value
comes from: a config file, an override, the config stored in a checkpoint on ``--resume`` (or an
override of it), the dataclasses called directly. Each refusal is one ConfigError line naming the
key and the limit; the scripts print it as one line and exit with status 2.

No training and no env stepping here: configs are read, and run folders are written in-process
with a small stand-in state (a refused resume never reads it).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from drive_attention.agent.run import limits
from drive_attention.agent.run.admission import prepare
from drive_attention.agent.run.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    save_checkpoint,
)
from drive_attention.agent.run.config import EnvConfig, PPOConfig, SACConfig, TrainConfig
from drive_attention.agent.run.config_files import apply_overrides, load_config, read_yaml, to_dict
from drive_attention.envs import limits as env_limits
from drive_attention.envs.configuration import ConfigError
from drive_attention.models import ExtractorConfig
from drive_attention.models import config as model_config

ROOT = Path(__file__).resolve().parents[3]
DEFAULT = ROOT / "configs" / "default.yaml"  # the batched simulator, 256 envs
HIGHWAY = ROOT / "configs" / "highway_env.yaml"  # highway-env, one process per env
SAC = ROOT / "configs" / "sac.yaml"
BATCHED_ID = "DriveAttention/BatchedHighway-v0"

# (config, override, key named, limit named), one per size option
OVERSIZED = [
    (DEFAULT, "env.n_envs=10000000", "env.n_envs", f"{limits.MAX_BATCHED_ENVS:,}"),
    (HIGHWAY, "env.n_envs=10000000", "env.n_envs", f"{limits.MAX_PROCESS_ENVS:,}"),
    (DEFAULT, "algo.n_steps=100000000", "algo.n_steps", f"{limits.MAX_N_STEPS:,}"),
    (DEFAULT, "algo.n_steps=100000", "algo.n_steps", f"{limits.MAX_ROLLOUT:,}"),  # x 256 envs
    (DEFAULT, "algo.batch_size=100000000", "algo.batch_size", f"{limits.MAX_BATCH_SIZE:,}"),
    (SAC, "algo.batch_size=100000000", "algo.batch_size", f"{limits.MAX_BATCH_SIZE:,}"),
    (SAC, "algo.buffer_size=100000000", "algo.buffer_size", f"{limits.MAX_BUFFER_SIZE:,}"),
    (DEFAULT, "algo.net_arch=[100000, 64]", "algo.net_arch[0]", f"{limits.MAX_NET_WIDTH:,}"),
    (DEFAULT, "algo.net_arch=[64]*100", "algo.net_arch", f"{limits.MAX_NET_DEPTH:,}"),
    (DEFAULT, "model.dim=100000", "model.dim", f"{model_config.MAX_DIM:,}"),
    (DEFAULT, "model.layers=100000", "model.layers", f"{model_config.MAX_LAYERS:,}"),
    (DEFAULT, "model.heads=1024", "model.heads", f"{model_config.MAX_HEADS:,}"),
    (DEFAULT, "model.mlp_ratio=1000", "model.mlp_ratio", f"{model_config.MAX_MLP_RATIO:,}"),
    (DEFAULT, "model.patch=100000", "model.patch", f"{model_config.MAX_PATCH:,}"),
    (DEFAULT, "model.stem_channels=100000", "model.stem_channels", "1,024"),
    (DEFAULT, "model.features_dim=10000000", "model.features_dim", "16,384"),
    (DEFAULT, "train.eval_episodes=1000000000", "train.eval_episodes", "100,000"),
    (DEFAULT, "train.final_eval_episodes=1000000000", "train.final_eval_episodes", "100,000"),
]
IDS = [f"{path.stem}:{override}" for path, override, _, _ in OVERSIZED]
# each under its own cap, together an encoder of 8.6e9 parameters
HUGE_MODEL = ["model.dim=4096", "model.layers=64", "model.heads=64"]


def _override(text: str) -> list[str]:
    """``algo.net_arch=[64]*100`` spelled out as YAML (the other overrides as they are)."""
    if text.endswith("*100"):
        key, value = text[: -len("*100")].split("=")
        return [f"{key}={yaml.safe_load(value) * 100}"]
    return [text]


def assert_names(message: str, key: str, limit: str) -> None:
    assert "\n" not in message, message
    assert f"{key}: " in message and limit in message and "limit" in message, message


# ------------------------------------------------------------------- 1. where the value comes from
@pytest.mark.parametrize(("path", "override", "key", "limit"), OVERSIZED, ids=IDS)
def test_override_above_the_limit_names_key_and_limit(
    path: Path, override: str, key: str, limit: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(path, _override(override))
    assert_names(str(refused.value), key, limit)


@pytest.mark.parametrize(("path", "override", "key", "limit"), OVERSIZED, ids=IDS)
def test_config_file_above_the_limit_names_key_and_limit(
    tmp_path: Path, path: Path, override: str, key: str, limit: str
) -> None:
    written = tmp_path / "experiment.yaml"
    written.write_text(yaml.safe_dump(apply_overrides(read_yaml(path), _override(override))))
    with pytest.raises(ConfigError) as refused:
        load_config(written)
    assert_names(str(refused.value), key, limit)


def test_sizes_within_each_limit_but_too_large_together_are_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(DEFAULT, HUGE_MODEL)
    assert_names(str(refused.value), "model.dim", f"{model_config.MAX_PARAMS:,}")


@pytest.mark.parametrize(
    ("build", "key", "limit"),
    [
        (lambda: EnvConfig(id=BATCHED_ID, n_envs=10**7), "n_envs", "262,144"),
        (lambda: EnvConfig(id="DriveAttention/Highway-v0", n_envs=10**7), "n_envs", "256"),
        (lambda: PPOConfig(n_steps=10**8), "n_steps", "1,048,576"),
        (lambda: PPOConfig(batch_size=10**8), "batch_size", "1,048,576"),
        (lambda: SACConfig(buffer_size=10**8), "buffer_size", "16,777,216"),
        (lambda: TrainConfig(eval_episodes=10**9), "eval_episodes", "100,000"),
        (lambda: ExtractorConfig(dim=100_000), "dim", "4,096"),
        (lambda: ExtractorConfig(layers=100_000), "layers", "64"),
        (lambda: ExtractorConfig(heads=1024, dim=1024), "heads", "128"),
    ],
    ids=["batched-n_envs", "process-n_envs", "n_steps", "batch_size", "buffer_size",
         "eval_episodes", "dim", "layers", "heads"],
)  # fmt: skip
def test_dataclasses_called_directly_are_bounded(build, key: str, limit: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build()
    assert_names(str(refused.value), key, limit)


# --------------------------------------------------------------------------- 2. on --resume
def _run_folder(root: Path, config: dict) -> Path:
    """A run folder as scripts/train.py leaves it, its checkpoint holding ``config`` (as a
    crafted or older run would); the state is a stand-in, never read by a refused resume."""
    run = root / config["logging"]["name"]
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(json.dumps(config))
    state = {"params": {"policy": {"w": torch.zeros(2, 2)}}, "algo": "PPO"}
    save_checkpoint(checkpoint_path(run / "checkpoints", 64), Checkpoint(64, config, state))
    return run


def _tiny_config(root: Path, name: str, *edits: str) -> dict:
    """The default experiment, small, with ``edits`` set without validation (``key=value``)."""
    plain = to_dict(load_config(DEFAULT, [f"logging.root={root}", f"logging.name={name}"]))
    for edit in edits:
        key, value = edit.split("=")
        section, option = key.split(".")
        plain[section][option] = yaml.safe_load(value)
    return plain


@pytest.mark.parametrize(
    ("edit", "key", "limit"),
    [
        ("env.n_envs=10000000", "env.n_envs", "262,144"),
        ("algo.n_steps=100000000", "algo.n_steps", "1,048,576"),
        ("model.dim=100000", "model.dim", "4,096"),
        ("model.layers=100000", "model.layers", "64"),
    ],
)
def test_checkpoint_config_above_the_limit_is_refused_on_resume(
    tmp_path: Path, edit: str, key: str, limit: str
) -> None:
    run = _run_folder(tmp_path, _tiny_config(tmp_path, "crafted", edit))
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(CheckpointError) as refused:
        prepare(None, resume=run)
    assert_names(str(refused.value), key, limit)
    assert sorted(p.name for p in run.rglob("*") if p.name != ".lock") == before


@pytest.mark.parametrize(
    ("override", "key", "limit"),
    [
        ("env.n_envs=10000000", "env.n_envs", "262,144"),
        ("algo.n_steps=100000000", "algo.n_steps", "1,048,576"),
        ("model.dim=100000", "model.dim", "4,096"),
        ("train.final_eval_episodes=1000000000", "train.final_eval_episodes", "100,000"),
    ],
)
def test_resume_override_above_the_limit_is_refused(
    tmp_path: Path, override: str, key: str, limit: str
) -> None:
    run = _run_folder(tmp_path, _tiny_config(tmp_path, "mine"))
    with pytest.raises(ConfigError) as refused:
        prepare(None, [override], resume=run)
    assert_names(str(refused.value), key, limit)


# ------------------------------------------------------------ 3. this machine's memory
def test_a_run_beyond_the_machines_memory_is_refused_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within every fixed cap, 4 times the default's envs with 2,048-step rollouts is 2 million
    frames (about 50 GiB): on a 16 GiB machine the run is refused before any env or model is
    made, new or resumed, naming the option behind most of it."""
    monkeypatch.setattr(env_limits, "machine_memory", lambda: 16 * 2**30)
    big = ["env.n_envs=1024", "algo.n_steps=2048"]
    with pytest.raises(ConfigError) as refused:
        prepare(DEFAULT, [*big, f"logging.root={tmp_path}", "logging.name=big"])
    message = str(refused.value)
    assert message.startswith("algo.n_steps: ") and "16.0 GiB" in message, message
    assert not (tmp_path / "big").exists() or not any((tmp_path / "big").iterdir())
    run = _run_folder(tmp_path, _tiny_config(tmp_path, "grown"))
    with pytest.raises(ConfigError, match=r"^algo\.n_steps: .*16\.0 GiB"):
        prepare(None, big, resume=run)


# ------------------------------------------------------------ 4. the scripts: one line, exit 2
def test_train_script_refuses_an_oversized_override_in_one_line(run_script, tmp_path: Path) -> None:
    result = run_script(
        "train.py", "--config", str(DEFAULT), "--name", "huge", f"logging.root={tmp_path}",
        "env.n_envs=10000000", timeout=120,
    )  # fmt: skip
    _assert_one_line(result, "env.n_envs", "262,144")
    assert not (tmp_path / "huge").exists()


def test_train_script_refuses_an_oversized_checkpoint_config_on_resume(
    run_script, tmp_path: Path
) -> None:
    run = _run_folder(tmp_path, _tiny_config(tmp_path, "crafted", "model.dim=100000"))
    result = run_script("train.py", "--resume", str(run), timeout=120)
    _assert_one_line(result, "model.dim", "4,096")


@pytest.mark.parametrize(
    "args",
    [
        ["reward_check.py", "--episodes", "1000000000"],
        ["transfer_gap.py", "--run", "runs/none", "--episodes", "1000000000"],
    ],
    ids=["reward_check", "transfer_gap"],
)
def test_episode_scripts_refuse_a_billion_episodes(run_script, args: list[str]) -> None:
    _assert_one_line(run_script(*args, timeout=90), "--episodes", "100,000")


def _assert_one_line(result: subprocess.CompletedProcess, key: str, limit: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert_names(line, key, limit)
