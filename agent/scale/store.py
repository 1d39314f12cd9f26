"""Run directories that live on the driver's machine while their runs train on other nodes.

No shared filesystem is assumed. A job or trial trains in a scratch folder on its own node; a
:class:`RunStore` actor, pinned to the driver's node, holds the real run directories (under the
study's or sweep's runs folder). :class:`RunMirror` copies every new checkpoint to the store, with
the run's other files as they are at that moment, and everything once more when the run ends.
A job retried on another node (its node died) first copies the run directory back from the store
and resumes from its last checkpoint, exactly as a local resume would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drive_attention.agent.run.files import TEMP_MARK, write_atomic
from drive_attention.agent.run.rundir import LOCK_FILE


def _skipped(relative: Path) -> bool:
    """Files that belong to one process only: the run's lock and half-written temporaries."""
    return relative.name == LOCK_FILE or TEMP_MARK in relative.name


def _inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing a path that leaves ``root``."""
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()) or Path(relative).is_absolute():
        raise ValueError(f"refusing a path outside the run: {relative!r}")
    return target


def list_files(folder: Path) -> dict[str, tuple[int, int]]:
    """``relative path -> (size, mtime_ns)`` of the plain files under ``folder``."""
    out = {}
    if not folder.is_dir():
        return out
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if path.is_file() and not path.is_symlink() and not _skipped(relative):
            stat = path.stat()
            out[relative.as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return out


class RunStore:
    """The driver-side run directories (a Ray actor: ``ray.remote(RunStore)``)."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def put(self, run: str, files: dict[str, bytes]) -> int:
        """Write ``files`` (relative path -> content) into ``<root>/<run>/``, each atomically."""
        folder = _inside(self.root, run)
        for relative, data in files.items():
            target = _inside(folder, relative)
            write_atomic(target, lambda tmp, data=data: tmp.write_bytes(data))
        return len(files)

    def get(self, run: str) -> dict[str, bytes]:
        """Every file of ``<root>/<run>/`` (empty for a run not started yet)."""
        folder = _inside(self.root, run)
        return {relative: (folder / relative).read_bytes() for relative in list_files(folder)}


def pull(store: Any, run: str, folder: Path) -> int:
    """Copy the store's files of ``run`` into ``folder``; how many."""
    import ray

    files = ray.get(store.get.remote(run))
    for relative, data in files.items():
        target = _inside(folder, relative)
        write_atomic(target, lambda tmp, data=data: tmp.write_bytes(data))
    return len(files)


class RunMirror:
    """Copies a local run folder to the store: at every new checkpoint (polled in a thread) and
    once more at :meth:`close`. Only files that changed since the last copy travel."""

    def __init__(
        self,
        store: Any,
        run: str,
        folder: Path,
        transform: Callable[[str, bytes], bytes] | None = None,
        every: float = 0.5,
    ) -> None:
        self.store, self.run, self.folder = store, run, folder
        self.transform = transform  # applied to every file on its way (e.g. paths in text)
        self.every = every
        self.sent: dict[str, tuple[int, int]] = list_files(folder)  # what the store has already
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name=f"mirror-{run}", daemon=True)

    def __enter__(self) -> RunMirror:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _checkpoints(self) -> dict[str, tuple[int, int]]:
        return list_files(self.folder / "checkpoints")  # the poll reads only this folder

    def _watch(self) -> None:
        seen = self._checkpoints()
        while not self._stop.wait(self.every):
            now = self._checkpoints()
            if now != seen:
                seen = now
                self.push()

    def push(self) -> int:
        """Send every file that changed since the last push; how many."""
        import ray

        with self._lock:
            current = list_files(self.folder)
            changed = [k for k, v in current.items() if self.sent.get(k) != v]
            files = {}
            for relative in changed:
                data = (self.folder / relative).read_bytes()
                files[relative] = self.transform(relative, data) if self.transform else data
            if files:
                ray.get(self.store.put.remote(self.run, files))
            self.sent.update({k: current[k] for k in changed})
            return len(files)

    def close(self) -> int:
        """Stop watching and send what is left."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.push()


def start_store(ray: Any, root: Path) -> Any:
    """A :class:`RunStore` actor on this (the driver's) node, holding ``root``; its handle travels
    with every job or trial."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0, max_concurrency=8)(RunStore)
    return actor.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    ).remote(str(root.resolve()))
