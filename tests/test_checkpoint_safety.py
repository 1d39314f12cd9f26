"""Checkpoints and evaluation output against careless users and crafted files (issue 14).

Every test plays someone who hands the program a damaged, edited or crafted checkpoint or run
folder, or a bad command line, and checks that the program refuses with one line (exit status 2)
without touching anything outside the run folder or the paths named on the command line. The
runs here are built in-process from an untrained tiny model (no training): 4-second episodes on
32 x 32 frames, so each evaluation takes a few seconds.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from agent.checkpoint import (
    FORMAT,
    Checkpoint,
    CheckpointError,
    algo_state,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from agent.config import ConfigError, load_config, save_config, to_dict

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "configs" / "default.yaml"
TINY = [
    "env.n_envs=1",
    "env.kwargs.duration=4",
    "env.kwargs.camera_size=[32, 32]",
    "algo.n_steps=64",
    "algo.batch_size=32",
    "model.dim=16",
    "train.torch_threads=0",  # leave this test process's torch threads alone
    "logging.wandb=disabled",
    "logging.video_scale=1",
]
ENV_SHORT = "Highway-v0"


def evaluate_main(*argv: object) -> int:
    """``scripts/evaluate.py`` in this process (its ``main``), as a user would call it."""
    spec = importlib.util.spec_from_file_location(
        "evaluate_script", ROOT / "scripts" / "evaluate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in argv])


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def tiny() -> tuple[dict, dict]:
    """The plain config and the (untrained) state of a tiny PPO attention agent."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agent.build import EnvFactory, make_algo, probe_env

    config = load_config(DEFAULT, [*TINY, "logging.name=tiny"])
    spec = probe_env(config.env)
    venv = DummyVecEnv([EnvFactory(config.env.id, dict(config.env.kwargs))])
    model = make_algo(config, venv, spec, "cpu")
    state = algo_state(model)
    venv.close()
    return to_dict(config), state


def make_run(root: Path, name: str, tiny: tuple[dict, dict], step: int = 64, **edits) -> Path:
    """A run folder as scripts/train.py leaves it: config.yaml and one checkpoint.

    ``edits`` (``section__key=value``) change the config stored in both, as a crafted run would.
    """
    from agent.config import resolve_config

    plain, state = tiny
    plain = json.loads(json.dumps(plain))
    plain["logging"]["name"] = name
    for key, value in edits.items():
        section, option = key.split("__")
        plain[section][option] = value
    run = root / name
    run.mkdir(parents=True)
    if "env" in {k.split("__")[0] for k in edits}:  # not a valid config: write it as is
        (run / "config.yaml").write_text(json.dumps(plain))
    else:
        save_config(resolve_config(plain), run / "config.yaml")
    save_checkpoint(checkpoint_path(run / "checkpoints", step), Checkpoint(step, plain, state))
    return run


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory, tiny: tuple[dict, dict]) -> Path:
    """A run that tests read but never write to."""
    return make_run(tmp_path_factory.mktemp("runs"), "tiny", tiny)


def _small_state() -> dict:
    return {"params": {"policy": {"w": torch.arange(12.0).reshape(3, 4)}}, "n": 3}


# ------------------------------------------------------------ 1. the checksum covers the header


@pytest.mark.parametrize(
    ("old", "new", "edited"),
    [
        (b'"step":"1024"', b'"step":"9024"', lambda meta: meta["step"] == "9024"),
        (  # inside the embedded config (JSON in JSON)
            b'\\"gamma\\": 0.9',
            b'\\"gamma\\": 0.1',
            lambda meta: json.loads(meta["config"])["algo"]["gamma"] == 0.1,
        ),
    ],
)
def test_edited_header_is_refused(tmp_path: Path, old: bytes, new: bytes, edited) -> None:
    from safetensors import safe_open

    config = to_dict(load_config(DEFAULT, TINY))
    path = save_checkpoint(tmp_path / "step.safetensors", Checkpoint(1024, config, _small_state()))
    data = path.read_bytes()
    assert data.count(old) == 1
    target = tmp_path / "edited.safetensors"
    target.write_bytes(data.replace(old, new))
    with safe_open(str(target), framework="pt") as f:  # still a valid safetensors file
        assert edited(f.metadata())
    with pytest.raises(CheckpointError, match="edited") as info:
        load_checkpoint(target)
    assert "train again" in str(info.value) or "another checkpoint" in str(info.value)


def _write_old_format(path: Path, step: int, config: dict, state: dict) -> Path:
    """A checkpoint as version 1 wrote it: the sha256 covers the tensors only."""
    from safetensors.torch import save_file

    tensors = {"state/params/policy/w": state["params"]["policy"]["w"].contiguous()}
    tree = {
        "__dict__": [
            [
                "params",
                {
                    "__dict__": [
                        ["policy", {"__dict__": [["w", {"__tensor__": "state/params/policy/w"}]]}]
                    ]
                },
            ],
            ["n", state["n"]],
        ]
    }
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    metadata = {
        "format": FORMAT,
        "version": "1",
        "step": str(step),
        "config": json.dumps(config),
        "tree": json.dumps(tree),
        "sha256": h.hexdigest(),
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_old_format_checkpoint_still_loads(tmp_path: Path) -> None:
    state = _small_state()
    path = _write_old_format(tmp_path / "old.safetensors", 1024, {"algo": {"gamma": 0.9}}, state)
    loaded = load_checkpoint(path)
    assert loaded.step == 1024 and loaded.config == {"algo": {"gamma": 0.9}}
    torch.testing.assert_close(
        loaded.state["params"]["policy"]["w"], state["params"]["policy"]["w"]
    )
    # damage to its tensors is still caught
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path / "flipped.safetensors")
    # Version 1 did not cover its header: an edit there cannot be detected. This pins the known
    # limit (documented in agent/checkpoint.py), so that changing it is a deliberate decision.
    (tmp_path / "edited.safetensors").write_bytes(
        path.read_bytes().replace(b'"step":"1024"', b'"step":"9024"')
    )
    assert load_checkpoint(tmp_path / "edited.safetensors").step == 9024


def test_new_checkpoint_cannot_pass_as_old_format(tmp_path: Path) -> None:
    """Relabelling a checkpoint as version 1 (whose header is unchecked) does not get an edited
    header through: the checksum no longer fits the tensors-only rule."""
    path = save_checkpoint(tmp_path / "new.safetensors", Checkpoint(1024, {}, _small_state()))
    data = path.read_bytes()
    assert b'"version":"1"' not in data
    version = re.search(rb'"version":"(\d+)"', data).group(0)
    edited = data.replace(b'"step":"1024"', b'"step":"9024"').replace(version, b'"version":"1"')
    (tmp_path / "relabelled.safetensors").write_bytes(edited)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path / "relabelled.safetensors")


# ------------------------------------------------- 2. a checkpoint's config cannot steer imports


@pytest.fixture
def evil_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``evilmod`` on sys.path; importing it creates the returned marker file."""
    marker = tmp_path / "evilmod-was-imported"
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "evilmod.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('code ran')\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "evilmod", raising=False)
    yield marker
    sys.modules.pop("evilmod", None)


def test_crafted_env_id_is_refused_before_any_import(
    tmp_path: Path, tiny: tuple[dict, dict], evil_module: Path, capsys: pytest.CaptureFixture
) -> None:
    from agent.loading import load_agent, run_config
    from agent.rundir import RunDir

    run = make_run(tmp_path / "runs", "crafted", tiny, env__id="evilmod:Env-v0")
    with pytest.raises((CheckpointError, ConfigError), match="evilmod"):
        load_agent(run, device="cpu")
    assert not evil_module.exists()
    with pytest.raises(ConfigError, match="evilmod"):
        run_config(RunDir(run))
    assert not evil_module.exists()

    ckpt = latest_checkpoint(run)
    loose = tmp_path / "loose.safetensors"
    shutil.copy(ckpt, loose)
    out = tmp_path / "out.json"
    for argv in (
        ["--run", run],
        ["--run", run, "--policy", "random"],
        ["--checkpoint", loose, "--json", out],
        ["--checkpoint", ckpt],
    ):
        assert evaluate_main(*argv, "--episodes", 1, "--device", "cpu") == 2, argv
        assert "evilmod" in one_error_line(capsys)
        assert not evil_module.exists(), argv
    assert not out.exists()


def test_env_flag_must_name_a_project_env(
    shared_run: Path, evil_module: Path, capsys: pytest.CaptureFixture
) -> None:
    for policy in ("trained", "idle"):
        code = evaluate_main(
            "--run", shared_run, "--policy", policy, "--env", "evilmod:Env-v0",
            "--episodes", 1, "--device", "cpu",
        )  # fmt: skip
        assert code == 2
        assert "evilmod" in one_error_line(capsys)
    assert not evil_module.exists()


# -------------------------------------------------- 3. output goes where the command line says


def test_checkpoint_logging_root_does_not_choose_output(
    tmp_path: Path, tiny: tuple[dict, dict], capsys: pytest.CaptureFixture
) -> None:
    elsewhere = tmp_path / "somewhere-else"
    run = make_run(tmp_path / "runs", "rooted", tiny, logging__root=str(elsewhere))
    loose = tmp_path / "loose" / "model.safetensors"
    loose.parent.mkdir()
    shutil.copy(latest_checkpoint(run), loose)
    # no run folder and no --json: nowhere to write, so it says so before any work
    assert (
        evaluate_main("--checkpoint", loose, "--episodes", 1, "--seed", 0, "--device", "cpu") == 2
    )
    assert "--json" in one_error_line(capsys)
    out = tmp_path / "out" / "eval.json"
    code = evaluate_main(
        "--checkpoint", loose, "--episodes", 1, "--seed", 0, "--video", "--json", out,
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["n_episodes"] == 1
    assert list((out.parent / "videos").glob("*.mp4")), "videos go beside the --json file"
    # the run folder given by --run
    code = evaluate_main("--run", run, "--episodes", 1, "--seed", 0, "--video", "--device", "cpu")
    assert code == 0, capsys.readouterr().err
    assert (run / "eval" / f"evaluate_trained_{ENV_SHORT}_seed0.json").is_file()
    assert list((run / "videos").glob("*.mp4"))
    assert not elsewhere.exists()


# ------------------------------------------------------------ 4. nothing written through a link


def test_symlinked_eval_json_is_refused(
    tmp_path: Path, tiny: tuple[dict, dict], capsys: pytest.CaptureFixture
) -> None:
    run = make_run(tmp_path / "runs", "linked", tiny)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run / "eval").mkdir()
    link = run / "eval" / f"evaluate_trained_{ENV_SHORT}_seed0.json"
    link.symlink_to(victim)
    assert evaluate_main("--run", run, "--episodes", 1, "--seed", 0, "--device", "cpu") == 2
    assert "symbolic link" in one_error_line(capsys)
    assert evaluate_main(
        "--run", run, "--episodes", 1, "--seed", 1, "--json", link, "--device", "cpu"
    ) == 2  # fmt: skip
    assert "symbolic link" in one_error_line(capsys)
    assert victim.read_text() == "precious\n"


def test_symlinked_video_folder_is_refused(
    tmp_path: Path, tiny: tuple[dict, dict], capsys: pytest.CaptureFixture
) -> None:
    run = make_run(tmp_path / "runs", "linked", tiny)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "videos").symlink_to(elsewhere)
    code = evaluate_main("--run", run, "--episodes", 1, "--seed", 0, "--video", "--device", "cpu")
    assert code == 2
    assert "symbolic link" in one_error_line(capsys)
    assert list(elsewhere.iterdir()) == []


def test_video_writer_never_writes_through_a_link(tmp_path: Path) -> None:
    import numpy as np

    from agent.video import VideoWriter

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / "ep00.mp4"
    link.symlink_to(victim)
    try:
        with VideoWriter(link, fps=4) as writer:
            for _ in range(3):
                writer.append(np.zeros((32, 32, 3), np.uint8))
    except OSError as err:
        assert "symbolic link" in str(err)
    assert victim.read_text() == "precious\n"


def test_metrics_log_never_appends_through_a_link(tmp_path: Path) -> None:
    from agent.wandb_logger import RunLogger

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").symlink_to(victim)
    with pytest.raises((ConfigError, OSError), match="symbolic link"):
        RunLogger(run, mode="disabled").log({"train/loss": 1.0}, step=1)
    assert victim.read_text() == "precious\n"


def test_checkpoint_never_written_into_a_linked_folder(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").symlink_to(elsewhere)
    with pytest.raises(CheckpointError, match="symbolic link"):
        save_checkpoint(
            checkpoint_path(tmp_path / "run" / "checkpoints", 64),
            Checkpoint(64, {}, _small_state()),
        )
    assert list(elsewhere.iterdir()) == []


# --------------------------------------------------------------- 5. options checked up front


@pytest.fixture
def no_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any evaluation that starts fails the test: these options must be refused before it."""
    import agent.evaluate_run

    def evaluate(*args, **kwargs):
        raise AssertionError("the evaluation ran before the options were checked")

    monkeypatch.setattr(agent.evaluate_run, "evaluate", evaluate)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--seed", "-5"], "--seed"),
        (["--episodes", "0"], "--episodes"),
        (["--video", "--video-episodes", "-1"], "--video-episodes"),
        (["--json", "{tmp}"], "--json"),  # an existing directory
        (["--json", "{tmp}/file.txt/eval.json"], "--json"),  # under a file: cannot be created
        (["--json", "{tmp}/file.txt"], "--json"),  # would overwrite a file that is not JSON
    ],
)
def test_bad_options_refused_before_evaluating(
    shared_run: Path,
    tmp_path: Path,
    extra: list[str],
    expected: str,
    no_evaluation: None,
    capsys: pytest.CaptureFixture,
) -> None:
    (tmp_path / "file.txt").write_text("notes\n")
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code = evaluate_main("--run", shared_run, "--episodes", 1, *extra, "--device", "cpu")
    assert code == 2
    assert expected in one_error_line(capsys)
    assert (tmp_path / "file.txt").read_text() == "notes\n"


# ------------------------------------------- 6. another run's checkpoint keeps its own results


def test_other_runs_checkpoint_does_not_overwrite_results(
    tmp_path: Path, tiny: tuple[dict, dict], capsys: pytest.CaptureFixture
) -> None:
    run = make_run(tmp_path / "runs", "mine", tiny)
    other = make_run(tmp_path / "runs", "other", tiny, step=128)
    assert evaluate_main("--run", run, "--episodes", 1, "--seed", 0, "--device", "cpu") == 0
    own = run / "eval" / f"evaluate_trained_{ENV_SHORT}_seed0.json"
    before = own.read_text()
    assert json.loads(before)["checkpoint"] == str(latest_checkpoint(run))
    foreign = latest_checkpoint(other)
    code = evaluate_main(
        "--run", run, "--checkpoint", foreign, "--episodes", 1, "--seed", 0, "--device", "cpu"
    )
    assert code == 0, capsys.readouterr().err
    assert own.read_text() == before, "the run's own results are untouched"
    (written,) = set((run / "eval").glob("*.json")) - {own}
    assert "other" in written.name and "128" in written.name
    assert json.loads(written.read_text())["checkpoint"] == str(foreign)
    assert not (other / "eval").exists(), "nor is the other run written to"


# ------------------------------------------------------------------ 7. a full disk while saving


@pytest.mark.parametrize("fails", ["write", "fsync"])
def test_full_disk_while_saving_keeps_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    folder = tmp_path / "checkpoints"
    first = save_checkpoint(checkpoint_path(folder, 64), Checkpoint(64, {}, _small_state()))
    original = first.read_bytes()

    def no_space(target: object, *args: object, **kwargs: object) -> None:
        if isinstance(target, Path):  # the disk fills up half way through the file
            with open(target, "wb") as f:
                f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    if fails == "write":
        monkeypatch.setattr(Path, "open", no_space)
    else:
        monkeypatch.setattr(os, "fsync", no_space)
    for step in (64, 128):  # over the same checkpoint, and a new one
        target = checkpoint_path(folder, step)
        with pytest.raises(CheckpointError) as info:
            save_checkpoint(target, Checkpoint(step, {}, _small_state()))
        message = str(info.value)
        assert str(target) in message and "full" in message
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == [first.name], "no temporary file left"
    assert first.read_bytes() == original
    assert load_checkpoint(first).step == 64


# ------------------------------------------------------------ 8. orphan temporaries are ignored


def test_latest_checkpoint_ignores_temporaries_and_folders(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    real = save_checkpoint(checkpoint_path(folder, 64), Checkpoint(64, {}, _small_state()))
    # what a killed save leaves behind, for a later step
    (folder / f".{checkpoint_path(folder, 128).name}.tmp-12345").write_bytes(b"half a file")
    (folder / f"{checkpoint_path(folder, 192).name}.tmp-12345").write_bytes(b"half a file")
    checkpoint_path(folder, 256).mkdir()  # a folder with a checkpoint's name
    assert latest_checkpoint(tmp_path / "run") == real
    assert latest_checkpoint(folder) == real
    assert load_checkpoint(tmp_path / "run").step == 64
