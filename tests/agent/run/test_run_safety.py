"""Run folders and resume, tried the way a careless user or an attacker would.

A run folder is owned by one training process at a time (an OS lock), a name in use is never
reused silently, a refused resume writes nothing, the checkpoint's own config is the run's config,
an earlier checkpoint can be chosen explicitly, SIGTERM saves and exits 143, and write failures
(read-only root, full disk, planted links) are one line, not a traceback.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from drive_attention.agent.run.checkpoint import latest_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[3]
DEFAULT = ROOT / "configs" / "default.yaml"
PYTHON = sys.executable
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}

# A tiny PPO run of the default experiment: one env in-process, short episodes, no evaluation.
TINY = [
    "--wandb", "disabled", "--device", "cpu",
    "env.n_envs=1", "env.kwargs.duration=8", "algo.n_steps=64", "algo.batch_size=32",
    "algo.n_epochs=1", "model.dim=16", "train.eval_every=0", "train.checkpoint_every=64",
    "train.final_eval_episodes=0",
]  # fmt: skip
STEP_64 = "step_0000000064.safetensors"
STEP_128 = "step_0000000128.safetensors"


def train(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, str(ROOT / "scripts" / "train.py"), *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_training(root: Path, name: str, *extra: str) -> subprocess.Popen:
    """A long tiny run in the background (stopped by the test)."""
    return subprocess.Popen(
        [
            PYTHON,
            str(ROOT / "scripts" / "train.py"),
            "--config",
            str(DEFAULT),
            "--name",
            name,
            "--steps",
            "100000",
            f"logging.root={root}",
            *TINY,
            *extra,
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 600) -> None:
    """Until ``path`` exists (training has started), failing if the process ends first. (Seconds
    as a rule; the limit only turns a hang into a failure, with room for a busy machine.)"""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"training ended early: {process.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("training did not start in time")
        time.sleep(0.2)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode != 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    for word in words:
        assert word in line, line
    return line


def banner(stderr: str) -> list[str]:
    """The line a run prints when its training starts."""
    return [line for line in stderr.splitlines() if line.startswith("run ") and " steps " in line]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (but the lock file) with a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run with checkpoints at steps 64 and 128."""
    root = tmp_path_factory.mktemp("runs")
    result = train("--config", str(DEFAULT), "--name", "base", "--steps", "128",
                   f"logging.root={root}", *TINY)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (root / "base" / "checkpoints").iterdir()) == [STEP_64, STEP_128]
    return root / "base"


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished tiny run, to damage at will."""
    return Path(shutil.copytree(base_run, tmp_path / "runs" / "base"))


# ----------------------------------------------------------------------- 1. exclusive owner


def test_a_run_being_trained_is_refused_to_a_second_process(tmp_path: Path) -> None:
    first = start_training(tmp_path, "busy")
    try:
        wait_for(tmp_path / "busy" / "metrics.jsonl", first)
        before = (tmp_path / "busy" / "config.yaml").read_bytes()
        same_name = train("--config", str(DEFAULT), "--name", "busy", "--steps", "128",
                          f"logging.root={tmp_path}", *TINY)  # fmt: skip
        line = assert_one_line_error(same_name, "in use", str(first.pid))
        assert "busy" in line
        resumed = train("--resume", str(tmp_path / "busy"), "--steps", "256")
        assert_one_line_error(resumed, "in use", str(first.pid))
        # someone deletes the lock file: the lock on the folder itself still refuses a second
        (tmp_path / "busy" / ".lock").unlink()
        again = train("--resume", str(tmp_path / "busy"), "--steps", "256")
        assert_one_line_error(again, "in use")
        # refused before training, not after: none of them began (no banner); a wait for the
        # lock would end in train()'s time-out instead
        assert not banner(same_name.stderr + resumed.stderr + again.stderr)
        assert first.poll() is None, "the first run goes on"
        assert (tmp_path / "busy" / "config.yaml").read_bytes() == before
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130


def test_a_lock_held_by_another_process_refuses_resume(run: Path) -> None:
    before = snapshot(run)
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = train("--resume", str(run), "--steps", "192")
        assert_one_line_error(result, "in use")
    finally:
        os.close(fd)
    assert snapshot(run) == before


# ------------------------------------------------------------- 2. an existing name is refused


def test_a_new_run_never_reuses_an_existing_folder(tmp_path: Path) -> None:
    crashed = tmp_path / "crashed"  # a run that died before its first checkpoint
    crashed.mkdir()
    (crashed / "config.yaml").write_text("model:\n  dim: 16\n")
    (crashed / "metrics.jsonl").write_text('{"global_step": 10, "train/loss": 1.0}\n')
    (crashed / "run.json").write_text('{"wandb_id": "old-id"}\n')
    before = snapshot(crashed)
    result = train("--config", str(DEFAULT), "--name", "crashed", "--steps", "64",
                   f"logging.root={tmp_path}", *TINY)  # fmt: skip
    assert_one_line_error(result, "--name", "crashed")
    assert snapshot(crashed) == before

    other = tmp_path / "notes"  # someone's folder that happens to carry the name
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    result = train("--config", str(DEFAULT), "--name", "notes", "--steps", "64",
                   f"logging.root={tmp_path}", *TINY)  # fmt: skip
    assert_one_line_error(result, "--name", "notes")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_a_new_run_on_a_finished_one_names_resume(run: Path, tmp_path: Path) -> None:
    before = snapshot(run)
    result = train("--config", str(DEFAULT), "--name", "base", "--steps", "256",
                   f"logging.root={run.parent}", *TINY)  # fmt: skip
    assert_one_line_error(result, f"--resume {run}", "--name")
    assert snapshot(run) == before
    # a file where the run folder would be is not a run either
    (tmp_path / "runs" / "afile").write_text("x\n")
    result = train("--config", str(DEFAULT), "--name", "afile", "--steps", "64",
                   f"logging.root={run.parent}", *TINY)  # fmt: skip
    assert_one_line_error(result, "afile", "--name")
    assert (tmp_path / "runs" / "afile").read_text() == "x\n"


# ------------------------------------------------------------ 3. a refused resume writes nothing


def test_a_refused_resume_writes_nothing_and_plain_resume_still_works(run: Path) -> None:
    before = snapshot(run)
    # the checkpoint has no normalisation statistics: refused (after building the model today)
    result = train("--resume", str(run), "env.normalize_sensors=true")
    assert_one_line_error(result, "normalis")
    assert snapshot(run) == before, "a refused resume must leave every file as it was"
    result = train("--resume", str(run), "--steps", "192")
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(latest_checkpoint(run)).step == 192


# ------------------------------------------------------- 4. the checkpoint's config is the run's


def test_resume_ignores_an_edited_config_yaml_but_applies_overrides(run: Path) -> None:
    saved = load_checkpoint(latest_checkpoint(run)).config
    edited = yaml.safe_load((run / "config.yaml").read_text())
    edited["algo"]["learning_rate"] = 0.5
    edited["algo"]["n_epochs"] = 7
    edited["env"]["kwargs"]["duration"] = 3
    (run / "config.yaml").write_text(yaml.safe_dump(edited))
    result = train("--resume", str(run), "--steps", "192", "algo.ent_coef=0.02")
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if "config.yaml" in line]
    for key in ("algo.learning_rate", "algo.n_epochs", "env.kwargs.duration"):
        assert key in line, line
    assert "resuming with changed options" in result.stderr and "algo.ent_coef" in result.stderr
    config = load_checkpoint(latest_checkpoint(run)).config
    assert config["algo"]["learning_rate"] == saved["algo"]["learning_rate"]
    assert config["algo"]["n_epochs"] == saved["algo"]["n_epochs"]
    assert config["env"]["kwargs"] == saved["env"]["kwargs"]
    assert config["algo"]["ent_coef"] == 0.02  # the command line still applies
    assert yaml.safe_load((run / "config.yaml").read_text()) == config  # rewritten from it


@pytest.mark.parametrize(
    "content",
    [b"", b"\xff\xfe\x00\x01 not text", b"algo: [unclosed\n  - {", b"- just\n- a list\n"],
    ids=["empty", "binary", "invalid-yaml", "not-a-mapping"],
)
def test_resume_survives_an_emptied_or_corrupted_config_yaml(run: Path, content: bytes) -> None:
    saved = load_checkpoint(latest_checkpoint(run)).config
    (run / "config.yaml").write_bytes(content)
    result = train("--resume", str(run), "--steps", "192")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "config.yaml" in line]
    resumed = load_checkpoint(latest_checkpoint(run))
    assert resumed.step == 192
    assert resumed.config == {**saved, "train": {**saved["train"], "steps": 192}}


# ------------------------------------------------------------- 5. resume from an earlier checkpoint


def test_a_damaged_latest_checkpoint_names_the_exact_fallback(run: Path) -> None:
    latest = run / "checkpoints" / STEP_128
    latest.write_bytes(latest.read_bytes()[:-100])
    damaged = latest.read_bytes()
    result = train("--resume", str(run), "--steps", "192")
    line = assert_one_line_error(result, "corrupted", "--checkpoint", STEP_64)
    assert f"--resume {run}" in line

    chosen = run / "checkpoints" / STEP_64
    result = train("--resume", str(run), "--checkpoint", str(chosen), "--steps", "192")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "steps 64 -> 192" in result.stderr
    assert load_checkpoint(latest_checkpoint(run)).step == 192
    for path in (run / "checkpoints").glob("step_*.safetensors"):  # the new timeline only
        assert load_checkpoint(path).step <= 192
    moved = [p for p in run.rglob("*.safetensors") if p.read_bytes() == damaged]
    assert moved and moved[0].parent != run / "checkpoints", "set aside, not deleted"
    result = train("--resume", str(run), "--steps", "256")  # plain --resume goes on from there
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(latest_checkpoint(run)).step == 256


def test_a_checkpoint_from_outside_the_run_is_refused(run: Path, tmp_path: Path) -> None:
    before = snapshot(run)
    outside = tmp_path / STEP_64  # a checkpoint that does not belong to the run
    shutil.copy(run / "checkpoints" / STEP_64, outside)
    result = train("--resume", str(run), "--checkpoint", str(outside), "--steps", "192")
    assert_one_line_error(result, str(run / "checkpoints"))
    link = run / "checkpoints" / "step_0000000100.safetensors"  # nor does a link out of it
    link.symlink_to(outside)
    result = train("--resume", str(run), "--checkpoint", str(link), "--steps", "192")
    assert_one_line_error(result, str(run / "checkpoints"))
    link.unlink()
    assert snapshot(run) == before


def test_checkpoint_flag_needs_resume(tmp_path: Path, base_run: Path) -> None:
    result = train("--config", str(DEFAULT), "--name", "x", f"logging.root={tmp_path}",
                   "--checkpoint", str(base_run / "checkpoints" / STEP_64), *TINY)  # fmt: skip
    assert_one_line_error(result, "--resume")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------- 6. SIGTERM


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path: Path) -> None:
    process = start_training(tmp_path, "term", "train.checkpoint_every=0")
    wait_for(tmp_path / "term" / "metrics.jsonl", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    checkpoint = latest_checkpoint(tmp_path / "term")
    assert checkpoint is not None and 64 <= load_checkpoint(checkpoint).step < 100000
    assert "--resume" in stderr


# ----------------------------------------------------------------------- 7. the output folder


def test_a_read_only_root_is_refused_before_any_work(tmp_path: Path) -> None:
    root = tmp_path / "readonly"
    root.mkdir()
    root.chmod(0o500)
    try:
        if os.access(root, os.W_OK):
            pytest.skip("running as root: chmod does not make the folder read-only")
        result = train("--config", str(DEFAULT), "--name", "ro", "--steps", "64",
                       f"logging.root={root}", *TINY)  # fmt: skip
        assert_one_line_error(result, str(root))
        assert not banner(result.stderr), "nothing started"
        assert list(root.iterdir()) == []
    finally:
        root.chmod(0o700)


def test_a_root_that_is_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    result = train("--config", str(DEFAULT), "--name", "x", "--steps", "64",
                   f"logging.root={blocker / 'runs'}", *TINY)  # fmt: skip
    assert_one_line_error(result, str(blocker))
    assert not banner(result.stderr), "nothing started"
    assert blocker.read_text() == "not a folder\n"


def in_process(root: Path, name: str) -> dict[str, object]:
    """Overrides of a tiny run trained in this process: 128 steps, checkpoints every 64."""
    return {
        "logging.root": str(root), "logging.name": name, "logging.wandb": "disabled",
        "train.device": "cpu", "train.steps": 128, "env.n_envs": 1, "env.kwargs.duration": 8,
        "algo.n_steps": 64, "algo.batch_size": 32, "algo.n_epochs": 1, "model.dim": 16,
        "train.eval_every": 0, "train.checkpoint_every": 64, "train.final_eval_episodes": 0,
    }  # fmt: skip


@pytest.mark.parametrize("error", ["oserror", "safetensors", "inside-save"])
def test_a_full_disk_while_saving_is_one_line_and_keeps_what_was_saved(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: str,
) -> None:
    from safetensors import SafetensorError

    import drive_attention.agent.training
    from drive_attention.agent.run.admission import prepare
    from drive_attention.agent.run.cli import guarded
    from drive_attention.agent.training import Trainer

    real_save = drive_attention.agent.training.save_checkpoint
    saved: list[Path] = []

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save_until_full(path: Path, checkpoint: object) -> Path:
        if not saved:
            saved.append(real_save(path, checkpoint))
            return saved[-1]
        # the second checkpoint finds the disk full
        if error == "safetensors":  # what safetensors' save_file raises on a full disk
            raise SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )
        if error == "oserror":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        with monkeypatch.context() as patch:  # the real save, its last step failing
            patch.setattr(os, "replace", no_space)
            return real_save(path, checkpoint)

    monkeypatch.setattr(drive_attention.agent.training, "save_checkpoint", save_until_full)
    status = guarded(lambda: Trainer(prepare(DEFAULT, in_process(tmp_path, "full"))).run())
    err = capsys.readouterr().err
    assert status != 0, err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1, err[-3000:]
    line = lines[0]
    assert "disk full" in line and str(tmp_path / "full" / "checkpoints") in line, line
    assert saved and saved[0].name == STEP_64
    assert load_checkpoint(saved[0]).step == 64  # intact
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir()) == [STEP_64]


def test_the_final_checkpoint_never_takes_a_periodic_checkpoints_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Training ends on a checkpoint step: the periodic save there would hold the weights from
    before the last update under the final step's name, so a failed final save would leave it to
    pass for the final checkpoint. Every name is written once, and a failed final save leaves only
    the earlier checkpoints."""
    import drive_attention.agent.training
    from drive_attention.agent.run.admission import prepare
    from drive_attention.agent.run.cli import guarded
    from drive_attention.agent.training import Trainer

    real_save, real_periodic = (
        drive_attention.agent.training.save_checkpoint,
        Trainer._periodic_save,
    )
    written: list[str] = []
    periodic: list[bool] = [False]

    def save_but_the_final(path: Path, checkpoint: object) -> Path:
        written.append(path.name)
        if not periodic[0]:  # the final save finds the disk full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(path, checkpoint)

    def periodic_save(self: Trainer, step: int) -> None:
        periodic[0] = True
        try:
            real_periodic(self, step)
        finally:
            periodic[0] = False

    monkeypatch.setattr(drive_attention.agent.training, "save_checkpoint", save_but_the_final)
    monkeypatch.setattr(Trainer, "_periodic_save", periodic_save)
    status = guarded(lambda: Trainer(prepare(DEFAULT, in_process(tmp_path, "ends"))).run())
    err = capsys.readouterr().err
    assert len(written) == len(set(written)), written
    assert written[-1] == "step_0000000128.safetensors", written
    assert status != 0 and "disk full" in error_lines(err)[0], err[-3000:]
    names = sorted(p.name for p in (tmp_path / "ends" / "checkpoints").iterdir())
    assert names == [STEP_64], names


# ----------------------------------------------------------------------- 8. orphan temp files


def test_a_run_records_the_code_it_was_trained_with(run: Path) -> None:
    from drive_attention.agent.run.version import code_version, git_commit

    info = json.loads((run / "run.json").read_text())
    assert info["code"] == code_version() and len(info["code"]) == 16
    assert info["commit"] == git_commit()


def test_resume_removes_temp_files_left_by_a_hard_kill(run: Path) -> None:
    orphans = [
        run / "checkpoints" / ".step_64.safetensors.tmp-99999",
        run / ".run.json.tmp-99999",
    ]
    for orphan in orphans:
        orphan.write_bytes(b"half a file")
    (run / ".lock").write_text("99999\n")  # the lock file of a killed process: no lock held
    result = train("--resume", str(run), "--steps", "192")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any(orphan.exists() for orphan in orphans)
    assert load_checkpoint(latest_checkpoint(run)).step == 192


# --------------------------------------------------------------------- 9. no write through links


@pytest.mark.parametrize("planted", ["run.json", "config.yaml"])
def test_a_planted_link_in_the_run_folder_is_not_written_through(
    run: Path, tmp_path: Path, planted: str
) -> None:
    target = run / planted
    victim = tmp_path / "victim.txt"  # the link's target holds what the file held, and more
    victim.write_text(target.read_text() + "# precious\n")
    before = victim.read_text()
    target.unlink()
    target.symlink_to(victim)
    result = train("--resume", str(run), "--steps", "192")
    assert victim.read_text() == before
    if result.returncode != 0:  # refused is fine, as one line naming the link
        assert_one_line_error(result, planted)
    else:
        assert not target.is_symlink()


def test_final_json_is_written_atomically_not_through_a_link(tmp_path: Path, run: Path) -> None:
    victim = tmp_path / "victim.json"
    victim.write_text("{}\n")
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / "final.json").symlink_to(victim)
    result = train("--resume", str(run), "--steps", "192", "train.final_eval_episodes=1")
    assert victim.read_text() == "{}\n"
    if result.returncode != 0:
        assert_one_line_error(result, "final.json")
    else:
        assert json.loads((run / "eval" / "final.json").read_text())["step"] == 192


@pytest.mark.parametrize(
    ("config_name", "stem"),
    [("default.yaml", "default"), ("my experiment (v2).yaml", "my-experiment-v2"),
     (".hidden.yaml", "hidden"), ("ä.yaml", "run"), ("x" * 150 + ".yaml", "x" * 80)],
)  # fmt: skip
def test_the_default_run_name_of_any_config_file_is_a_valid_name(
    config_name: str, stem: str
) -> None:
    from drive_attention.agent.run.config import LoggingConfig
    from drive_attention.agent.run.rundir import default_run_name

    name = default_run_name(Path("configs") / config_name)
    assert name.startswith(f"{stem}-") and len(name) == len(stem) + 16
    LoggingConfig(name=name)  # the schema accepts it


def test_a_study_never_sets_aside_a_run_another_process_trains(tmp_path: Path) -> None:
    """A study (or sweep) retrying a job moves an earlier attempt's files aside; a run that
    another process is training right now (its lock held, no checkpoint yet) is refused, not
    moved."""
    from drive_attention.agent.run.rundir import RunDir, RunInUseError

    folder = tmp_path / "highway-attention-s0"
    folder.mkdir()
    (folder / "config.yaml").write_text("train: {steps: 10}\n")
    (folder / "metrics.jsonl").write_text('{"step": 1}\n')
    with RunDir(folder).lock():  # the live trainer
        with pytest.raises(RunInUseError, match="in use by another process"):
            RunDir(folder).set_aside()
        assert sorted(p.name for p in folder.iterdir()) == [".lock", "config.yaml", "metrics.jsonl"]
    aside = RunDir(folder).set_aside()  # once it has stopped, its attempt is moved
    assert aside is not None and (aside / "config.yaml").exists()
