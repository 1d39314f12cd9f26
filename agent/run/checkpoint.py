"""Checkpoints: tensors in a safetensors file, everything else as JSON in its metadata.

A checkpoint holds the algorithm's state dicts (policy, optimizers), its extra tensors (SAC's
entropy coefficient), the VecNormalize statistics, the step counters and the resolved config.
Nothing is pickled, so loading one never executes code from the file. What of an SB3 algorithm
goes in, and back: :mod:`agent.run.algo_state`. Files are written to a
temporary name and renamed, so a crash never leaves half a checkpoint under the real name.

Layout of the metadata (all strings): ``format`` (= :data:`FORMAT`), ``version``, ``step``,
``config`` (JSON of the resolved config), ``tree`` (JSON of the nested state, in which every
tensor is replaced by ``{"__tensor__": key}``) and ``sha256``.

The checksum (version 2) covers the whole checkpoint: the header fields
``format``, ``version``, ``step``, ``config`` and ``tree``, and every tensor's name, dtype, shape
and bytes; so damage anywhere, or a hand edit of the step or the config, is refused. Version 1
checkpoints (written before) hashed the tensors only; they still load, by their own rule, but an
edit of their header cannot be detected (re-save them to protect it). The checksum catches damage
and careless edits, not a forger (there is no secret key: anyone can recompute it), which is why
loading also never runs code from the file and the caller validates the config it carries.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from drive_attention.agent.run.files import UnsafePathError, write_atomic

FORMAT = "drive-attention/checkpoint"
VERSION = 2  # the version written; the checksum covers the header and the tensors
TENSORS_ONLY_VERSION = 1  # still read: its checksum covers the tensors only (header unprotected)
_HEADER_FIELDS: tuple[str, ...] = ("format", "version", "step", "config", "tree")
_METADATA_KEYS = frozenset({*_HEADER_FIELDS, "sha256"})
MAX_STEP = 2**53  # steps a checkpoint may record (a float64 still counts them exactly)
_STEP_FILE = re.compile(r"^step_(\d+)\.safetensors$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted, unsafe or does not fit the model."""


@dataclass
class Checkpoint:
    """The contents of one checkpoint, as plain data and tensors."""

    step: int  # environment steps trained when it was written
    config: dict[str, Any]  # the resolved experiment config (agent.run.config_files.to_dict)
    state: dict[str, Any]  # nested plain data and tensors (see agent.run.algo_state.algo_state)
    path: Path | None = None


# ---------------------------------------------------------------------------------------------
# Encoding nested state into (JSON tree, tensors)


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        tensors[key] = torch.from_numpy(np.array(value, order="C"))  # keeps 0-d shapes
        return {"__ndarray__": key}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint key {key}/{k!r}: only str and int keys can be stored")
            items.append([k, _encode(v, f"{key}/{k}", tensors)])
        return {"__dict__": items}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{key}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{key}/{i}", tensors) for i, v in enumerate(value)]
    raise TypeError(
        f"checkpoint entry {key} is a {type(value).__name__}; only tensors, arrays and plain "
        "data (numbers, strings, lists, dicts) can be stored"
    )


def _decode(node: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if len(node) != 1:
        raise CheckpointError(f"unexpected entry {sorted(node)} in the checkpoint's state tree")
    ((tag, payload),) = node.items()
    if tag in ("__tensor__", "__ndarray__"):
        if payload not in tensors:
            raise CheckpointError(f"tensor {payload!r} is listed in the metadata but missing")
        tensor = tensors[payload]
        return tensor.numpy() if tag == "__ndarray__" else tensor
    if tag == "__dict__":
        return {k: _decode(v, tensors) for k, v in payload}
    if tag == "__tuple__":
        return tuple(_decode(v, tensors) for v in payload)
    raise CheckpointError(f"unknown entry type {tag!r} in the checkpoint's state tree")


def _digest(tensors: Mapping[str, torch.Tensor], header: Mapping[str, str] | None = None) -> str:
    """SHA-256 over the header fields (version 2; ``None`` for the version 1 rule) and the
    names, dtypes, shapes and bytes of ``tensors``, in sorted name order.

    Each header field is hashed as ``name:length:value`` so that no two headers give the same
    byte stream. Raises KeyError when ``header`` lacks a field.
    """
    h = hashlib.sha256()
    if header is not None:
        for name in _HEADER_FIELDS:
            value = header[name].encode()
            h.update(f"{name}:{len(value)}:".encode())
            h.update(value)
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Saving and loading


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temporary file, fsync, rename).

    Never writes through a symbolic link. On any failure (a full disk, a folder that cannot be
    written) raises :class:`CheckpointError`; then no temporary file is left and a checkpoint
    already at ``path`` is untouched.
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(checkpoint.state, "state", tensors)
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "step": str(int(checkpoint.step)),
        "config": json.dumps(checkpoint.config),
        "tree": json.dumps(tree),
    }
    metadata["sha256"] = _digest(tensors, metadata)
    data = save(tensors, metadata=metadata)  # in memory: every write error is an OSError below
    try:
        write_atomic(path, lambda tmp: _write_new(tmp, data), sync=True)
    except UnsafePathError as err:
        raise CheckpointError(f"cannot save the checkpoint: {err}") from None
    except OSError as err:
        reason = err.strerror or str(err)
        raise CheckpointError(
            f"could not write the checkpoint {path} ({reason}): the disk may be full or the "
            "folder not writable; free some space (or fix the folder's permissions) and save "
            "again. Checkpoints saved before are untouched."
        ) from None
    return path


def _write_new(tmp: Path, data: bytes) -> None:
    """Create ``tmp`` and write ``data``; never through a link planted at the temporary name."""
    tmp.unlink(missing_ok=True)  # left by a killed save of a process with the same id
    with tmp.open("xb") as f:  # exclusive creation: fails on anything already there
        f.write(data)


def is_sb3_zip(path: str | Path) -> bool:
    """Whether ``path`` is an SB3 model zip (``model.save``): a zip with SB3's ``data`` and
    ``policy.pth`` entries. Reads the zip's directory only; nothing is unpickled."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
    return {"data", "policy.pth"} <= names


ALLOW_PICKLE_ADVICE = (
    "If you trust the file (you made it, or it comes from someone you trust), pass "
    "--allow-pickle to scripts/evaluate.py to load it with SB3: that unpickles the file, which "
    "can execute any code its author put in it."
)


def _refuse_pickle(path: Path, head: bytes) -> None:
    is_zip = head.startswith(b"PK\x03\x04")  # torch.save (zip) and SB3 model.zip
    is_pickle = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # raw pickle protocol
    if is_zip or is_pickle:
        kind = "a zip archive (torch.save or an SB3 .zip)" if is_zip else "a Python pickle"
        advice = f" {ALLOW_PICKLE_ADVICE}" if is_zip and is_sb3_zip(path) else ""
        raise CheckpointError(
            f"{path} is {kind}, not a drive-attention checkpoint. Pickled files can execute code "
            "when loaded, so they are refused; use a .safetensors checkpoint written by "
            f"scripts/train.py (runs/<name>/checkpoints/step_*.safetensors).{advice}"
        )


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; never unpickles anything."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"no step_*.safetensors checkpoint in {path}")
        path = found
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    _refuse_pickle(path, head)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is corrupted or not a safetensors file ({err}); use another checkpoint "
            "from the run's checkpoints/ folder or train again"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a drive-attention checkpoint (metadata format "
            f"{metadata.get('format')!r}, expected {FORMAT!r})"
        )
    version = metadata.get("version", "?")
    if version not in (str(VERSION), str(TENSORS_ONLY_VERSION)):
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this code reads versions "
            f"{TENSORS_ONLY_VERSION} and {VERSION} (a newer drive-attention wrote it? update this "
            "checkout)"
        )
    _check_digest(path, version, metadata, tensors)
    try:
        step = int(metadata["step"])
        config = json.loads(metadata["config"])
        tree = json.loads(metadata["tree"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({err!r})") from None
    except RecursionError:
        raise CheckpointError(
            f"{path}: damaged checkpoint metadata (nested too deeply to be a config or state)"
        ) from None
    if not 0 <= step <= MAX_STEP:
        raise CheckpointError(
            f"{path}: damaged checkpoint metadata (step {step} is not in 0..{MAX_STEP})"
        )
    try:
        state = _decode(tree, tensors)
    except CheckpointError as err:  # a tree that names what is not there: say which file
        raise CheckpointError(f"{path}: {err}") from None
    except (TypeError, ValueError, KeyError, IndexError) as err:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({err!r})") from None
    except RecursionError:
        raise CheckpointError(
            f"{path}: damaged checkpoint metadata (state nested too deeply)"
        ) from None
    if not isinstance(state, dict) or not isinstance(config, dict):
        raise CheckpointError(
            f"{path}: damaged checkpoint metadata (state or config not a mapping)"
        )
    _check_finite(path, step, tensors)
    return Checkpoint(step=step, config=config, state=state, path=path)


def _check_finite(path: Path, step: int, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse NaN or infinite weights: what a run that diverged saves, which no policy can act
    on (its action distribution is undefined)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{path}: {name} holds NaN or infinite values: the run diverged by step {step}; "
                "use an earlier checkpoint from its checkpoints/ folder, or train again with a "
                "lower algo.learning_rate"
            )


def _check_digest(
    path: Path, version: str, metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor]
) -> None:
    """Refuse a checkpoint whose checksum does not match (the rule of its ``version``)."""
    advice = (
        "use another checkpoint from the run's checkpoints/ folder (or the original file), or "
        "train again"
    )
    if version == str(TENSORS_ONLY_VERSION):
        # Version 1 hashed the tensors only: its header (step, config, tree) is not protected,
        # so an edit there cannot be detected. Loading it is kept for runs saved before.
        if metadata.get("sha256") != _digest(tensors):
            raise CheckpointError(
                f"{path} is corrupted: its tensor data does not match the checksum written "
                f"with it; {advice}"
            )
        return
    extra = sorted(set(metadata) - _METADATA_KEYS)
    try:
        expected = _digest(tensors, metadata)
    except KeyError as err:
        raise CheckpointError(
            f"{path} is corrupted or was edited: its metadata lacks {err}; {advice}"
        ) from None
    if extra or metadata.get("sha256") != expected:
        what = f"unknown metadata {', '.join(extra)}" if extra else "its contents"
        raise CheckpointError(
            f"{path} is corrupted or was edited: {what} (header: step, config, state tree; or "
            f"tensor data) does not match the checksum written with it; {advice}"
        )


def checkpoint_path(directory: str | Path, step: int) -> Path:
    """``<directory>/step_<step>.safetensors`` (zero-padded, so names sort by step)."""
    return Path(directory) / f"step_{int(step):010d}.safetensors"


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``directory`` (or its ``checkpoints/``), if any."""
    directory = Path(directory)
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if not directory.is_dir():
        return None
    # Only step_<N>.safetensors files: a save in progress or killed mid-write leaves a
    # temporary ".step_<N>.safetensors.tmp-<pid>" (agent.run.files.temp_path), which never counts,
    # and neither does a folder that merely has a checkpoint's name.
    found = [
        (int(m.group(1)), p)
        for p in directory.iterdir()
        if (m := _STEP_FILE.match(p.name)) and p.is_file()
    ]
    return max(found)[1] if found else None
