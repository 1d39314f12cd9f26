"""Tests of the CARLA backend's options (envs/carla/config.py), and of what imports without
the carla client. None of them needs the client: they run without it.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from drive_attention import envs  # noqa: F401  (registers the ids)
from drive_attention.envs.carla.config import CarlaEnvConfig
from drive_attention.envs.configuration import ConfigError, build
from drive_attention.envs.contract import REWARD_TERMS

ENV_ID = "DriveAttention/Carla-v0"


# ==============================================================================================
# Configuration
# ==============================================================================================


def test_config_host_and_port_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARLA_HOST", raising=False)
    monkeypatch.delenv("CARLA_PORT", raising=False)
    assert (build(CarlaEnvConfig, {}).host, build(CarlaEnvConfig, {}).port) == ("localhost", 2000)
    monkeypatch.setenv("CARLA_HOST", "sim.example")
    monkeypatch.setenv("CARLA_PORT", "3000")
    cfg = build(CarlaEnvConfig, {})
    assert (cfg.host, cfg.port) == ("sim.example", 3000)
    assert build(CarlaEnvConfig, {"host": "h", "port": 4000}).port == 4000  # explicit wins
    monkeypatch.setenv("CARLA_PORT", "two thousand")
    with pytest.raises(ConfigError, match="CARLA_PORT"):
        build(CarlaEnvConfig, {})


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"camera_sise": (64, 64)}, "did you mean 'camera_size'"),
        ({"n_vehicles": "10"}, "n_vehicles"),
        ({"camera_size": (64,)}, "camera_size"),
        ({"camera_size": (4, 4)}, "camera_size"),
        ({"fixed_delta_s": 0.5}, "fixed_delta_s"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"port": 70000}, "port"),
        ({"weather": "ClearNon"}, "did you mean 'ClearNoon'"),
        ({"reward_weights": {"speed": 1.0}}, "reward_weights.speed"),
        ({"reward_weights": {"goal": "high"}}, "reward_weights.goal"),
        ({"on_server_loss": "ignore"}, "on_server_loss"),
        ({"speed_range": (10.0, 5.0)}, "speed_range"),
        ({"action": "discrete"}, "action"),
    ],
)
def test_config_errors_name_the_option(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        build(CarlaEnvConfig, kwargs)


def test_config_reward_weights_are_merged_over_the_defaults() -> None:
    cfg = build(CarlaEnvConfig, {"reward_weights": {"collision": 5}, "duration": 10.0})
    assert list(cfg.weights) == list(REWARD_TERMS)
    assert cfg.weights["collision"] == 5.0 and cfg.weights["goal"] == 20.0  # the rest: defaults
    assert cfg.max_steps == 200  # 10 s / 0.05 s
    assert build(CarlaEnvConfig, {}).max_steps == 2400  # 120 s by default


def test_training_config_env_kwargs_validate() -> None:
    import yaml

    config = yaml.safe_load(open("configs/carla.yaml"))
    assert config["env"]["id"] == ENV_ID
    cfg = build(CarlaEnvConfig, config["env"]["kwargs"])
    assert cfg.camera_size == (64, 64) and cfg.on_server_loss == "truncate"


# ==============================================================================================
# Imports
# ==============================================================================================


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_import_envs_does_not_import_carla() -> None:
    done = _python(
        "import sys, drive_attention.envs.carla.config, drive_attention.envs.carla.core\n"
        "import drive_attention.envs.carla.runtime\n"
        "assert 'carla' not in sys.modules, 'importing envs imported carla'"
    )
    assert done.returncode == 0, done.stderr


def test_missing_carla_package_says_how_to_install_it() -> None:
    done = _python(
        "import sys; sys.modules['carla'] = None\n"
        "import gymnasium as gym, drive_attention.envs\n"
        f"if {ENV_ID!r} not in gym.registry:\n"
        f"    gym.register(id={ENV_ID!r},\n"
        "        entry_point='drive_attention.envs.carla.env:CarlaDriveEnv')\n"
        f"gym.make({ENV_ID!r})"
    )
    assert done.returncode != 0 and "pip install -e '.[carla]'" in done.stderr
