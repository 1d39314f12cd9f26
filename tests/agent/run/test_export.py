"""Interop with plain SB3: ``scripts/export.py --format sb3`` and ``evaluate.py --allow-pickle``.

One tiny real run (batched highway, sensors normalised) is trained and exported once per module;
the exported zip is loaded in a separate Python process by a plain SB3 script (the
snippet of docs/interop.md), which must act as the run's own policy does on the same observations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from drive_attention.agent.run.checkpoint import CheckpointError
from drive_attention.agent.run.config import ConfigError
from drive_attention.agent.run.export import export_sb3, vec_normalize_path

ROOT = Path(__file__).resolve().parents[3]
PYTHON = sys.executable
ENV = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
ENV_ID = "DriveAttention/BatchedHighway-v0"

TINY = [
    "--steps", "64", "--wandb", "disabled", "--device", "cpu", "env.n_envs=4",
    "algo.n_steps=16", "algo.batch_size=32", "algo.n_epochs=1", "model.dim=16",
    "env.kwargs.duration=8", "train.eval_every=0", "train.checkpoint_every=0",
    "train.final_eval_episodes=0", "env.normalize_sensors=true", "logging.video=false",
]  # fmt: skip

# What a plain SB3 user runs (docs/interop.md): SB3, numpy, gymnasium and drive_attention.envs
# for the env; the policy's extractor is imported by SB3's unpickling (this package installed).
PLAIN = """
import json, sys
import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from drive_attention import envs  # registers the ids

zip_path, stats_path, obs_path, out_path, env_id = sys.argv[1:6]
model = PPO.load(zip_path, device="cpu")
venv = VecNormalize.load(stats_path, DummyVecEnv([lambda: gym.make(env_id)]))
venv.training = False
raw = dict(np.load(obs_path))
obs = venv.normalize_obs(raw)
actions, _ = model.predict(obs, deterministic=True)
with torch.no_grad():
    probs = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0]).distribution.probs
    raw_probs = model.policy.get_distribution(
        model.policy.obs_to_tensor(raw)[0]
    ).distribution.probs
np.savez(out_path, actions=actions, probs=probs.numpy(), raw_probs=raw_probs.numpy())
print(json.dumps(sorted(sys.modules)))
"""


@pytest.fixture(scope="module")
def exported(run_script, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, exported zip) of a tiny real run."""
    root = tmp_path_factory.mktemp("export")
    batched = str(ROOT / "configs" / "batched.yaml")
    result = run_script(
        "train.py",
        "--config",
        batched,
        "--name",
        "tiny",
        "--wandb",
        "disabled",
        f"logging.root={root}",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = root / "out" / "model.zip"
    result = run_script(
        "export.py", "--run", str(root / "tiny"), "--format", "sb3", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PPO" in result.stdout and str(out) in result.stdout
    return root / "tiny", out


def _observations() -> dict[str, np.ndarray]:
    """24 raw observations of the run's env: 4 seeded starts and 5 steps of each."""
    env = gym.make(ENV_ID, duration=8)
    rows = []
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        rows.append(obs)
        for action in (3, 3, 0, 4, 2):
            obs, *_ = env.step(action)
            rows.append(obs)
    env.close()
    return {key: np.stack([r[key] for r in rows]) for key in ("camera", "sensors")}


def test_exported_zip_acts_as_the_run_in_plain_sb3(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    from drive_attention.agent.run.loading import load_agent

    run, zip_path = exported
    stats = vec_normalize_path(zip_path)
    assert stats.is_file(), "the run normalises sensors: SB3's VecNormalize file goes beside"
    obs = _observations()
    np.savez(tmp_path / "obs.npz", **obs)
    result = subprocess.run(
        [PYTHON, "-c", PLAIN, str(zip_path), str(stats), str(tmp_path / "obs.npz"),
         str(tmp_path / "plain.npz"), ENV_ID],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert "drive_attention.agent.run.loading" not in loaded  # plain SB3, not our loader
    # the extractor came from the one import name; no generic top-level name was claimed
    assert "drive_attention.models.extractors" in loaded
    assert not {"agent", "envs", "models"} & set(loaded)
    plain = np.load(tmp_path / "plain.npz")

    agent = load_agent(run, device="cpu")  # the run's own policy, from its safetensors
    own_actions = agent.policy.act(obs)
    with torch.no_grad():
        policy = agent.model.policy
        tensor = policy.obs_to_tensor(agent.policy.prepare(obs))[0]
        own_probs = policy.get_distribution(tensor).distribution.probs.numpy()
    np.testing.assert_array_equal(plain["actions"], own_actions)
    np.testing.assert_allclose(plain["probs"], own_probs, rtol=1e-5, atol=1e-6)
    # the statistics matter: without them the same policy gives other probabilities
    assert np.abs(plain["raw_probs"] - own_probs).max() > 1e-4


def test_sb3_zip_is_evaluated_only_with_allow_pickle(
    run_script, exported: tuple[Path, Path], tmp_path: Path
) -> None:
    _, zip_path = exported
    out = tmp_path / "eval.json"
    common = ["--checkpoint", str(zip_path), "--episodes", "1", "--json", str(out)]
    refused = run_script("evaluate.py", *common)
    assert refused.returncode == 2 and not out.exists()
    assert "--allow-pickle" in refused.stderr and "execute any code" in refused.stderr
    result = run_script("evaluate.py", *common, "--allow-pickle", "--attention", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["checkpoint"] == str(zip_path) and report["step"] == 64
    assert set(report["attention"]["class_mass"]) and report["attention"]["occlusion_ratio"] > 0


def test_zip_of_a_policy_without_attention_is_refused_for_attention(tmp_path: Path) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from drive_attention.agent.evaluate.command import EvaluationRequest, run_evaluation
    from drive_attention.agent.run.loading import load_agent

    zip_path = tmp_path / "plain.zip"
    venv = DummyVecEnv([lambda: gym.make(ENV_ID)])
    PPO("MultiInputPolicy", venv, n_steps=8, batch_size=8, device="cpu").save(zip_path)
    venv.close()
    with pytest.raises(ConfigError, match=r"names no env.*--env ID"):
        load_agent(None, zip_path, allow_pickle=True, device="cpu")
    loaded = load_agent(None, zip_path, env_id=ENV_ID, allow_pickle=True, device="cpu")
    assert not loaded.policy.has_attention and "CombinedExtractor" in loaded.source
    request = EvaluationRequest(
        run=None, checkpoint=zip_path, env_id=ENV_ID, episodes=1, attention=True,
        allow_pickle=True, json_path=tmp_path / "e.json", device="cpu",
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"CombinedExtractor.*has no attention maps"):
        run_evaluation(request)
    with pytest.raises(ConfigError, match=r"does not fit DriveAttention/BatchedMerge-v0.*sensors"):
        load_agent(None, zip_path, env_id="DriveAttention/BatchedMerge-v0", allow_pickle=True)


def test_export_refuses_bad_input_before_any_work(
    run_script, exported: tuple[Path, Path], tmp_path: Path
) -> None:
    run, _ = exported
    out = tmp_path / "m.zip"
    with pytest.raises(ConfigError, match="no such run folder"):
        export_sb3(tmp_path / "missing", out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no checkpoint in .*train first"):
        export_sb3(tmp_path / "empty", out)
    with pytest.raises(ConfigError, match="'onnx' is not supported; formats: sb3"):
        export_sb3(run, out, fmt="onnx")
    with pytest.raises(ConfigError, match=r"must end in \.zip"):
        export_sb3(run, tmp_path / "m.pt")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        export_sb3(run, tmp_path / "file" / "m.zip")
    with pytest.raises(ConfigError, match="is a folder"):
        export_sb3(run, Path(tmp_path / "empty.zip").mkdir() or tmp_path / "empty.zip")
    (tmp_path / "link.zip").symlink_to(tmp_path / "elsewhere.zip")
    with pytest.raises(ConfigError, match="symbolic link"):
        export_sb3(run, tmp_path / "link.zip")
    assert not out.exists() and not (tmp_path / "elsewhere.zip").exists()
    result = run_script("export.py", "--run", str(run), "--format", "onnx", "--out", str(out))
    assert result.returncode == 2 and result.stderr.startswith("error: --format")


def test_export_replaces_an_existing_file_only_with_force(
    run_script, exported: tuple[Path, Path], tmp_path: Path
) -> None:
    run, _ = exported
    out = tmp_path / "photos.zip"
    out.write_bytes(b"someone's photos")
    result = run_script("export.py", "--run", str(run), "--format", "sb3", "--out", str(out))
    assert result.returncode == 2 and "exists already" in result.stderr, result.stderr
    assert "--force" in result.stderr and out.read_bytes() == b"someone's photos"
    export_sb3(run, out, force=True)
    assert zipfile.is_zipfile(out)


# A run as the default is made: only rewards normalised, and env options that are not the env's
# defaults (object rows), so a plain SB3 user who made the env with defaults would fail.
DEFAULT_LIKE = [
    "--steps", "64", "--wandb", "disabled", "--device", "cpu", "env.n_envs=4",
    "algo.n_steps=16", "algo.batch_size=32", "algo.n_epochs=1", "model.dim=16",
    "env.kwargs.duration=8", "env.kwargs.n_objects=2", "env.normalize_reward=true",
    "train.eval_every=0", "train.checkpoint_every=0", "train.final_eval_episodes=0",
    "logging.video=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def exported_default_like(
    run_script, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(run folder, exported zip) of a tiny run that normalises only its rewards."""
    root = tmp_path_factory.mktemp("export_default_like")
    batched = str(ROOT / "configs" / "batched.yaml")
    result = run_script(
        "train.py", "--config", batched, "--name", "tiny", f"logging.root={root}", *DEFAULT_LIKE
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = root / "out" / "model.zip"
    result = run_script(
        "export.py", "--run", str(root / "tiny"), "--format", "sb3", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "tiny", out


def _interop_snippet() -> str:
    """The plain-SB3 Python block of docs/interop.md, as printed."""
    text = (ROOT / "docs" / "interop.md").read_text()
    section = text.split("## Export to plain stable-baselines3", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_documented_snippet_runs_as_printed_on_a_run_with_its_own_env_options(
    exported_default_like: tuple[Path, Path], tmp_path: Path
) -> None:
    _, zip_path = exported_default_like
    for path in zip_path.parent.iterdir():  # model.zip and model_vecnormalize.pkl, as exported
        (tmp_path / path.name).write_bytes(path.read_bytes())
    snippet = _interop_snippet()
    assert "make_exported_env" in snippet
    probe = snippet + "\nprint(venv.observation_space['sensors'].shape, int(action[0]))\n"
    result = subprocess.run(
        [PYTHON, "-c", probe], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from drive_attention import envs

    env_id, options = envs.exported_env_options(zip_path)
    assert env_id == ENV_ID and options["n_objects"] == 2
    width = len(envs.sensor_names(env_id, **options))
    assert width != len(envs.sensor_names(env_id)), "the run's options change the sensors"
    assert result.stdout.split("\n")[-2].startswith(f"({width},)")


def test_evaluate_accepts_the_export_of_a_run_that_normalises_only_rewards(
    run_script, exported_default_like: tuple[Path, Path], tmp_path: Path
) -> None:
    run, zip_path = exported_default_like
    common = ("--episodes", "2", "--seed", "11", "--device", "cpu")
    from_zip = run_script(
        "evaluate.py", "--checkpoint", str(zip_path), "--allow-pickle", *common,
        "--json", str(tmp_path / "zip.json"),
    )  # fmt: skip
    assert from_zip.returncode == 0, from_zip.stderr[-3000:]
    from_run = run_script(
        "evaluate.py", "--run", str(run), *common, "--json", str(tmp_path / "run.json")
    )
    assert from_run.returncode == 0, from_run.stderr[-3000:]
    zipped = json.loads((tmp_path / "zip.json").read_text())["episodes"]
    own = json.loads((tmp_path / "run.json").read_text())["episodes"]
    assert [e["return"] for e in zipped] == pytest.approx([e["return"] for e in own])


def test_a_zip_not_exported_here_has_no_env_options_to_read(tmp_path: Path) -> None:
    from drive_attention import envs

    with pytest.raises(ConfigError, match=r"not a zip exported by scripts/export\.py"):
        envs.exported_env_options(tmp_path / "missing.zip")
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("data", json.dumps({"n_epochs": 10}))
    with pytest.raises(ConfigError, match=r"gymnasium\.make"):
        envs.make_exported_env(plain)


def test_a_zip_that_names_the_old_top_level_modules_still_loads(
    exported_default_like: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zips exported before the package took its one import name pickle the extractor class as
    ``models.extractors.X``; the loader reads them, and claims the old names only while it
    unpickles."""
    from stable_baselines3 import PPO

    from drive_attention import models
    from drive_attention.agent.run.loading import ZIP_KEY, load_agent
    from drive_attention.models import extractors

    _, zip_path = exported_default_like
    model = PPO.load(zip_path, device="cpu")
    cls = type(model.policy.features_extractor)
    with monkeypatch.context() as old:  # save as the package's old layout pickled its classes
        old.setattr(cls, "__module__", "models.extractors")
        old.setitem(sys.modules, "models", models)
        old.setitem(sys.modules, "models.extractors", extractors)
        old_zip = tmp_path / "old.zip"
        model.save(old_zip, include=[ZIP_KEY])
    assert b"models.extractors" in zipfile.ZipFile(old_zip).read("data")
    assert "models" not in sys.modules  # outside a checkout plain SB3 cannot import it
    # (tests/test_package.py: an installed wheel leaves the name models free)

    legacy = load_agent(None, old_zip, allow_pickle=True, device="cpu")
    assert type(legacy.model.policy.features_extractor) is cls  # the class itself, not a copy
    assert legacy.source.startswith("the zip's model")  # read as ours: its model config too
    weights, loaded = model.policy.state_dict(), legacy.model.policy.state_dict()
    assert weights.keys() == loaded.keys()
    assert all(torch.equal(weights[k], loaded[k]) for k in weights)
    assert not {"models", "models.extractors", "agent", "envs"} & set(sys.modules)
