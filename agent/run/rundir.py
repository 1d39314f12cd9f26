"""The run directory ``runs/<name>/`` and what lives in it.

::

    runs/<name>/
        .lock              held (flock) by the process training the run; holds its pid
        config.yaml        resolved config (every option spelled out)
        run.json           W&B run id, start times, the commands that wrote it
        checkpoints/       step_<N>.safetensors
        videos/            attention videos (mp4)
        eval/              evaluation JSON (periodic, final, evaluate.py)
        metrics.jsonl      every logged metric, one JSON object per line
        wandb/             the W&B run files (offline runs: upload with `wandb sync`)

One process at a time trains a run: :meth:`RunDir.lock` takes an OS lock on ``.lock`` and on the
run folder itself (released by the OS when the process ends, however it ends, so a crash never
leaves a stale lock); a second process is refused with :class:`RunInUseError`, even when someone
deleted ``.lock`` while the run trains (the folder's lock still holds).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drive_attention.agent.run.checkpoint import CheckpointError, latest_checkpoint
from drive_attention.agent.run.files import check_writable, write_text
from drive_attention.envs.configuration import ConfigError

LOCK_FILE = ".lock"
STEP_FILE = re.compile(r"^step_(\d+)\.safetensors$")
# what a training run writes at the top of its folder (a folder holding any of these is a run)
RUN_ENTRIES = (
    "config.yaml", "run.json", "metrics.jsonl", "checkpoints", "videos", "eval", "wandb",
)  # fmt: skip


class RunDirError(ConfigError):
    """A run folder cannot be used: it exists already, is not writable, holds a planted link, or
    a write failed (disk full). The message says what to do. (A ConfigError, so every script's
    :func:`agent.run.cli.guarded` reports it as one line.)"""


class RunInUseError(RunDirError):
    """Another process holds the run's lock: it is training that run right now."""


class RunLock:
    """Exclusive ``flock`` locks on ``<run>/.lock`` and on the run folder, held until
    :meth:`release` (or process end)."""

    def __init__(self, path: Path, *fds: int) -> None:
        self.path = path
        self._fds: tuple[int, ...] = fds

    @property
    def held(self) -> bool:
        return bool(self._fds)

    def release(self) -> None:
        fds, self._fds = self._fds, ()
        for fd in fds:
            os.close(fd)  # closing the descriptor drops its flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # at interpreter exit the OS drops the lock anyway
            pass


def _lock_folder(folder: Path, mode: int) -> int | None:
    """``flock(mode | LOCK_NB)`` on the folder itself: its descriptor (holding the lock), None
    where the file system cannot lock a folder; BlockingIOError when another process holds it."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    except OSError:
        os.close(fd)
        return None
    return fd


def _lock_holder(path: Path) -> str:
    """`` (pid N)`` from the lock file's content, when it names one."""
    try:
        text = path.read_text()[:32].strip()
    except (OSError, ValueError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""


@dataclass(frozen=True)
class RunDir:
    """Paths of one run."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def videos(self) -> Path:
        return self.path / "videos"

    @property
    def eval(self) -> Path:
        return self.path / "eval"

    @property
    def info_path(self) -> Path:
        return self.path / "run.json"

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.checkpoints)

    def checkpoint_files(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every ``checkpoints/step_<N>.safetensors``, by step."""
        if not self.checkpoints.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.checkpoints.iterdir()
            if (m := STEP_FILE.match(p.name)) and not p.is_dir()
        ]
        return sorted(found)

    def own_checkpoint(self, path: str | Path) -> Path:
        """``path`` if it is one of this run's checkpoints (``checkpoints/step_<N>.safetensors``,
        not a link out of it); a bare file name is looked up in ``checkpoints/``."""
        given = Path(path)
        if not given.exists() and given.parent == Path(".") and (self.checkpoints / given).exists():
            given = self.checkpoints / given
        if not given.exists():
            raise CheckpointError(
                f"--checkpoint {path}: no such file; pick one of {self.checkpoints}/step_*."
                "safetensors"
            )
        resolved = given.resolve()
        if resolved.parent != self.checkpoints.resolve() or not STEP_FILE.match(resolved.name):
            raise CheckpointError(
                f"--checkpoint {path} is not one of this run's checkpoints: with --resume "
                f"{self.path}, give a file of {self.checkpoints} (step_<N>.safetensors). To "
                "evaluate another checkpoint use scripts/evaluate.py --checkpoint"
            )
        return self.checkpoints / resolved.name

    def contents(self) -> list[str]:
        """Names at the top of the folder, but the lock file and empty folders."""
        if not self.path.is_dir():
            return []
        names = []
        for entry in sorted(self.path.iterdir()):
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink() and not any(entry.iterdir()):
                continue
            names.append(entry.name)
        return names

    # ------------------------------------------------------------------ checks (write nothing)
    def check_writable(self) -> None:
        """Refuse (before any work) a run folder that cannot be written: a read-only or missing
        parent, a file in the way, or a symbolic link where the run writes."""
        where = "choose another logging.root or --name"
        if self.path.is_symlink():
            raise RunDirError(
                f"{self.path} is a symbolic link; refusing to write through it (remove the link, "
                f"or {where})"
            )
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a folder; {where}")
        folder = self.path
        while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise RunDirError(
                f"cannot create the run folder {self.path}: {folder} is not a folder; {where}"
            )
        folders = [folder] + [f for f in (self.checkpoints, self.videos, self.eval) if f.is_dir()]
        for f in folders:
            if not os.access(f, os.W_OK | os.X_OK):
                raise RunDirError(
                    f"cannot write to {f} (permission denied or a read-only file system), where "
                    f"the run {self.path} is written; {where}, or make it writable"
                )
        writes = (self.config, self.info_path, self.metrics, self.checkpoints, self.videos)
        for path in (*writes, self.eval, self.eval / "final.json"):
            try:
                check_writable(path)
            except OSError as err:
                raise RunDirError(str(err)) from None

    def check_not_in_use(self) -> None:
        """Refuse when another process holds the lock (without creating the lock file)."""
        if self.path.is_dir() and not self.path.is_symlink():
            try:
                folder = _lock_folder(self.path, fcntl.LOCK_SH)
            except BlockingIOError:
                raise self._in_use() from None
            if folder is not None:
                os.close(folder)
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as err:
            raise RunDirError(
                f"{self.lock_path}: cannot open the lock file ({err.strerror}); remove it if it is "
                "not a plain file"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._in_use() from None
        finally:
            os.close(fd)

    def set_aside(self, extra: tuple[str, ...] = (), prefix: str = "failed-attempt") -> Path | None:
        """Move the files of an earlier attempt that left no checkpoint (and ``extra`` names)
        into ``<run>/<prefix>-<time>/``, so a new run can start in this folder; returns that
        folder, or None when there was nothing to move. Holds the run's lock while it moves
        anything: a run another process is training is never moved (:class:`RunInUseError`)."""
        names = [n for n in (*RUN_ENTRIES, *extra) if (self.path / n).exists()]
        if not names:
            return None
        with self.lock():
            names = [n for n in names if (self.path / n).exists()]
            if not names or self.checkpoint_files():
                return None
            aside = self.path / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
            aside.mkdir()
            for name in names:
                (self.path / name).rename(aside / name)
        return aside

    def check_new(self, strict: bool = True) -> None:
        """Refuse to start a new run in a folder that holds one (or, ``strict``, anything at all:
        a run never mixes its files with others; the lock file and empty folders do not count)."""
        contents = self.contents()
        if not strict:
            contents = [name for name in contents if name in RUN_ENTRIES]
        if not contents:
            return
        steps = self.checkpoint_files()
        if steps:
            raise RunDirError(
                f"logging.name: {self.path} already holds a run (checkpoints up to step "
                f"{steps[-1][0]}); continue it with --resume {self.path}, or pick another --name"
            )
        shown = ", ".join(contents[:4]) + (" ..." if len(contents) > 4 else "")
        raise RunDirError(
            f"logging.name: {self.path} already exists and is not empty ({shown}), but holds no "
            f"checkpoint to continue with --resume {self.path}; pick another --name (or remove "
            "the folder to reuse the name)"
        )

    def _in_use(self) -> RunInUseError:
        return RunInUseError(
            f"{self.path} is in use by another process{_lock_holder(self.lock_path)} that is "
            "training it now; wait for it to end or stop it (Ctrl-C or kill -TERM saves a "
            f"checkpoint, then --resume {self.path}), or pick another --name"
        )

    # ------------------------------------------------------------------ the lock
    def lock(self) -> RunLock:
        """Take the run's lock (creating the folder if needed), or raise :class:`RunInUseError`.

        The lock is an ``flock`` on ``.lock`` and one on the folder itself: the OS drops them when
        the process ends, however it ends, so a crash never leaves a stale lock, and the folder's
        lock holds when ``.lock`` is deleted while the run trains. The file holds the owner's pid
        (a hint for the message a second process prints); it is never deleted.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(
                self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
            )
        except OSError as err:
            raise RunDirError(
                f"cannot create the lock file {self.lock_path} ({err.strerror}); choose another "
                "logging.root or --name, or make the folder writable"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            folder = _lock_folder(self.path, fcntl.LOCK_EX)
        except BlockingIOError:
            os.close(fd)
            raise self._in_use() from None
        except OSError as err:
            os.close(fd)
            raise RunDirError(f"cannot lock {self.lock_path} ({err.strerror})") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the pid is only a hint for the message of a refused process
        return RunLock(self.lock_path, fd, *([] if folder is None else [folder]))

    # ------------------------------------------------------------------ writes (lock held)
    def create(self) -> RunDir:
        for folder in (self.path, self.checkpoints, self.videos, self.eval):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def read_info(self) -> dict[str, Any]:
        if not self.info_path.is_file():
            return {}
        try:
            return json.loads(self.info_path.read_text())
        except ValueError:
            return {}

    def update_info(self, **entries: Any) -> None:
        info = self.read_info()
        info.update(entries)
        info.setdefault("commands", []).append(
            {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv}
        )
        write_text(self.info_path, json.dumps(info, indent=2) + "\n")


def default_run_name(config_path: str | Path) -> str:
    """``<config stem>-<YYYYmmdd-HHMMSS>``, the stem reduced to what a run name may hold
    (letters, digits, ``_.-``; at most 80 characters), so any config file gives a valid name."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(config_path).stem).strip("._-")[:80] or "run"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
