"""Writing the files of a run: atomically, never through a symbolic link.

Every file this project writes (checkpoints, configs, evaluation JSON, metrics, run info) goes
through here, so that a crash leaves the old file or the new one, never half of one, and a run
folder that holds a planted link cannot make the program overwrite the file the link points to.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TEMP_MARK = ".tmp-"  # temporary files are ".<name>.tmp-<pid>" beside their target


class UnsafePathError(OSError):
    """A path to write is a symbolic link, or a folder on the way is one."""


class IncompleteWriteError(OSError):
    """A file came out incomplete (a full disk, a file size limit) and was not put in place; the
    message names it and what to do. Scripts report it in one line."""


def check_writable(path: str | Path) -> Path:
    """``path`` if writing it cannot follow a link: neither it nor its folder is a symlink."""
    path = Path(path)
    if path.is_symlink():
        raise UnsafePathError(
            f"{path} is a symbolic link; refusing to write through it (remove the link, or "
            "choose another output path)"
        )
    if path.parent.is_symlink():
        raise UnsafePathError(
            f"{path.parent} is a symbolic link; refusing to write into it (remove the link, or "
            "choose another output folder)"
        )
    return path


def creation_problem(path: str | Path) -> str | None:
    """Why ``path`` (and the folders on its way) could not be created, or None: the nearest
    folder that exists is where creation starts, and it must be a writable folder."""
    folder = Path(path).parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder, so it cannot hold it"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def write_atomic(path: str | Path, write: Callable[[Path], None], sync: bool = False) -> Path:
    """Write ``path`` by calling ``write(temp)`` then renaming temp over it (same folder).

    ``sync``: flush the temporary file to disk before the rename (checkpoints), so that a power
    loss leaves the old file or the whole new one.
    """
    path = check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.unlink(missing_ok=True)  # a link planted at the temporary name is removed, not followed
    try:
        write(tmp)
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)  # replaces a link itself, never its target
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, refusing symbolic links."""

    def write(tmp: Path) -> None:
        with open(tmp, "x") as f:  # exclusive: fails rather than follow anything at that name
            f.write(text)

    return write_atomic(path, write)


def append_line(path: str | Path, line: str) -> None:
    """Append one line to ``path`` (created if missing), refusing to follow a symbolic link."""
    path = check_writable(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "a") as f:
        f.write(line.rstrip("\n") + "\n")


def remove_orphan_temps(folder: str | Path) -> list[Path]:
    """Delete temporary files left in ``folder`` by a process that was killed mid-write (call it
    only while holding the run's lock: then no other writer exists)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(f".*{TEMP_MARK}*"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
