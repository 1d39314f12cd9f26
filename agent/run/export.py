"""Export a run's checkpoint to other tools' formats (``scripts/export.py``).

``sb3``: the zip that ``stable_baselines3.PPO.load`` / ``SAC.load`` reads, made by SB3's own
``model.save`` from the algorithm the run's config builds, with the checkpoint's weights (policy,
optimizers, SAC's entropy coefficient) and counters. Its ``policy_kwargs`` name this project's
features extractor by import path (``models.extractors.CrossModalExtractor``, ...), so loading it
needs this package installed (``pip install -e .``): SB3 unpickles that reference.

When the run normalises sensors or rewards (``env.normalize_sensors``/``normalize_reward``), the
statistics are written beside the zip in SB3's own format, ``<out stem>_vecnormalize.pkl``
(``VecNormalize.load(path, venv)``; saved with ``training = False``): plain SB3 must normalise
observations with them, or the policy sees inputs it was not trained on.

The zip also carries, as plain JSON in SB3's ``data`` entry (attribute :data:`ZIP_KEY`), the
run's resolved config, the step and the normalisation statistics, so that
``scripts/evaluate.py --checkpoint FILE.zip --allow-pickle`` knows the env to evaluate on.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drive_attention.agent.run.build import probe_env
from drive_attention.agent.run.checkpoint import CheckpointError, load_checkpoint
from drive_attention.agent.run.config import ConfigError
from drive_attention.agent.run.files import (
    UnsafePathError,
    check_writable,
    creation_problem,
    write_atomic,
)
from drive_attention.agent.run.loading import ZIP_KEY, checkpoint_config, restore_model
from drive_attention.agent.run.rundir import RunDir

FORMATS: tuple[str, ...] = ("sb3",)


@dataclass
class ExportResult:
    """What :func:`export_sb3` wrote."""

    zip_path: Path
    vec_normalize_path: Path | None  # SB3's VecNormalize pickle, when the run normalises
    algo: str  # "PPO" | "SAC"
    step: int
    env_id: str
    checkpoint: Path


def vec_normalize_path(out: str | Path) -> Path:
    """Where the VecNormalize statistics of an export to ``out`` go: ``<stem>_vecnormalize.pkl``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_vecnormalize.pkl")


def _check_out(out: Path, force: bool) -> None:
    """Refuse an output path that SB3 would change, that holds a file already (unless ``force``)
    or that cannot be written (before any work)."""
    if out.suffix.lower() != ".zip":
        raise ConfigError(
            f"--out {out}: must end in .zip (SB3's save adds .zip to any other name, and its "
            f"load looks for it); e.g. --out {out.with_suffix('.zip')}"
        )
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name, e.g. {out / 'model.zip'}")
    if not force and (out.exists() or vec_normalize_path(out).exists()):
        there = out if out.exists() else vec_normalize_path(out)
        raise ConfigError(
            f"--out {out}: {there} exists already; choose another --out, or add --force to "
            "replace it"
        )
    for path in (out, vec_normalize_path(out)):
        try:
            check_writable(path)
        except UnsafePathError as err:
            raise ConfigError(f"--out: {err}") from None
    problem = creation_problem(out)
    if problem is not None:
        raise ConfigError(f"--out {out}: {problem}; choose another --out")


def _checkpoint_of(run_dir: str | Path | None, checkpoint: str | Path | None) -> Path:
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.exists():
            raise CheckpointError(f"--checkpoint {path} does not exist")
        return path
    if run_dir is None:
        raise ConfigError("give --run runs/<name> (or --checkpoint PATH)")
    run = RunDir(Path(run_dir))
    if not run.path.is_dir():
        raise ConfigError(f"--run {run.path}: no such run folder (runs/<name>, made by train.py)")
    found = run.latest_checkpoint()
    if found is None:
        raise CheckpointError(
            f"--run {run.path}: no checkpoint in {run.checkpoints}; train first (scripts/train.py)"
        )
    return found


def _plain_stats(state: Any) -> Any:
    """VecNormalize statistics (agent.run.checkpoint.vec_normalize_state) as JSON data."""
    if isinstance(state, dict):
        return {str(k): _plain_stats(v) for k, v in state.items()}
    if isinstance(state, np.ndarray):
        return state.tolist()
    return state


def export_sb3(
    run_dir: str | Path | None,
    out: str | Path,
    checkpoint: str | Path | None = None,
    fmt: str = "sb3",
    force: bool = False,
) -> ExportResult:
    """Write the run's checkpoint (default: its latest) as an SB3 zip at ``out``.

    Every input is checked before anything is built (format, output path, run, checkpoint); an
    existing file at ``out`` (or its VecNormalize file) is replaced only with ``force``. Both
    files are written atomically (a temporary file renamed into place).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not supported; formats: {', '.join(FORMATS)}")
    out = Path(out)
    _check_out(out, force)
    ckpt = load_checkpoint(_checkpoint_of(run_dir, checkpoint))
    config = checkpoint_config(ckpt)
    model, vec_normalize = restore_model(config, probe_env(config.env), ckpt, "cpu")
    if hasattr(model, "buffer_size"):  # SAC: no buffer was allocated; SAC.load sets it up
        model.buffer_size = config.algo.buffer_size
    stats = ckpt.state.get("vec_normalize") if vec_normalize is not None else None
    setattr(
        model,
        ZIP_KEY,
        json.dumps(
            {"config": ckpt.config, "step": ckpt.step, "vec_normalize": _plain_stats(stats)}
        ),
    )
    buffer = io.BytesIO()
    model.save(buffer, include=[ZIP_KEY])
    # what VecNormalize.save writes (the env is not part of it)
    pickled_stats = pickle.dumps(vec_normalize) if vec_normalize is not None else None

    stats_path = vec_normalize_path(out) if pickled_stats is not None else None
    try:
        write_atomic(out, lambda tmp: tmp.write_bytes(buffer.getvalue()), sync=True)
        if pickled_stats is not None:
            write_atomic(stats_path, lambda tmp: tmp.write_bytes(pickled_stats), sync=True)
    except OSError as err:
        raise ConfigError(
            f"could not write {out} ({err.strerror or err}); free some space or choose another "
            "--out"
        ) from None
    return ExportResult(
        zip_path=out,
        vec_normalize_path=stats_path,
        algo=type(model).__name__,
        step=ckpt.step,
        env_id=config.env.id,
        checkpoint=Path(ckpt.path) if ckpt.path else Path(),
    )


__all__ = ["FORMATS", "ExportResult", "export_sb3"]
