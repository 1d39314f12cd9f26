"""What of an SB3 algorithm goes into a checkpoint, and back: state dicts, the tensors SB3 saves
beside them, counters and VecNormalize statistics, every mismatch explained as a
:class:`agent.run.checkpoint.CheckpointError`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from drive_attention.agent.run.checkpoint import CheckpointError


def check_state_dict(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, Any], what: str
) -> None:
    """Raise a CheckpointError listing missing, unexpected and mis-shaped entries."""
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    for key, tensor in expected.items():
        other = found.get(key)
        if isinstance(other, torch.Tensor) and tuple(other.shape) != tuple(tensor.shape):
            problems.append(
                f"{key}: shape {tuple(other.shape)} in the checkpoint, {tuple(tensor.shape)} here"
            )
        elif isinstance(other, torch.Tensor) and other.dtype != tensor.dtype:
            problems.append(f"{key}: {other.dtype} in the checkpoint, {tensor.dtype} here")
    if missing:
        problems.append(f"missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        extra = ", ".join(unexpected[:5])
        problems.append(f"unexpected: {extra}{' ...' if len(unexpected) > 5 else ''}")
    if problems:
        raise CheckpointError(
            f"the checkpoint's {what} does not fit this model: " + "; ".join(problems[:8])
        )


# ---------------------------------------------------------------------------------------------
# What of an SB3 algorithm goes into a checkpoint


def algo_state(model: Any, vec_normalize: Any | None = None) -> dict[str, Any]:
    """Everything needed to continue training ``model``: state dicts, extra tensors, counters.

    ``params`` holds SB3's ``get_parameters()`` (the policy and its optimizers' state dicts),
    ``variables`` the tensors SB3 saves beside them (SAC's entropy coefficient), and
    ``vec_normalize`` the running statistics of the observation and return normalisation.
    """
    _, variable_names = model._get_torch_save_params()
    state: dict[str, Any] = {
        "algo": type(model).__name__,
        "params": model.get_parameters(),
        "variables": {name: _getattr_path(model, name) for name in variable_names},
        "counters": {
            "num_timesteps": int(model.num_timesteps),
            "n_updates": int(getattr(model, "_n_updates", 0)),
            "episode_num": int(getattr(model, "_episode_num", 0)),
        },
    }
    if vec_normalize is not None:
        state["vec_normalize"] = vec_normalize_state(vec_normalize)
    return state


def vec_normalize_state(vec_normalize: Any) -> dict[str, Any]:
    """Running mean/var/count of VecNormalize's observation keys and return."""

    def rms(stats: Any) -> dict[str, Any]:
        return {
            "mean": np.asarray(stats.mean),
            "var": np.asarray(stats.var),
            "count": float(stats.count),
        }

    obs = vec_normalize.obs_rms if vec_normalize.norm_obs else {}
    obs = obs if isinstance(obs, dict) else {"": obs}
    return {
        "obs": {key: rms(value) for key, value in obs.items()},
        "ret": rms(vec_normalize.ret_rms),
    }


def restore_vec_normalize(vec_normalize: Any, state: Mapping[str, Any] | None) -> None:
    """Load statistics saved by :func:`vec_normalize_state` into ``vec_normalize``."""
    if vec_normalize is None:
        return
    if not state:
        raise CheckpointError(
            "the config normalises sensors or rewards (env.normalize_*) but the checkpoint holds "
            "no normalisation statistics; resume with the config it was trained with"
        )

    def load(stats: Any, saved: Mapping[str, Any], what: str) -> None:
        mean = np.asarray(saved["mean"], dtype=np.float64)
        if mean.shape != np.shape(stats.mean):
            raise CheckpointError(
                f"normalisation statistics of {what}: shape {mean.shape} in the checkpoint, "
                f"{np.shape(stats.mean)} here"
            )
        stats.mean = mean.copy()
        stats.var = np.asarray(saved["var"], dtype=np.float64).copy()
        stats.count = float(saved["count"])

    if vec_normalize.norm_obs:
        obs = (
            vec_normalize.obs_rms
            if isinstance(vec_normalize.obs_rms, dict)
            else {"": vec_normalize.obs_rms}
        )
        for key, stats in obs.items():
            if key not in state["obs"]:
                raise CheckpointError(f"the checkpoint has no normalisation statistics for {key!r}")
            load(stats, state["obs"][key], f"observation {key!r}")
    load(vec_normalize.ret_rms, state["ret"], "the return")


def restore_algo_state(
    model: Any, state: Mapping[str, Any], vec_normalize: Any | None = None
) -> None:
    """Load :func:`algo_state` output into ``model``; explains any mismatch."""
    algo = state.get("algo")
    if algo != type(model).__name__:
        raise CheckpointError(
            f"the checkpoint was written by {algo}, this run uses {type(model).__name__}; "
            "set algo.name to match the checkpoint's config"
        )
    params = state.get("params")
    if not isinstance(params, dict) or "policy" not in params:
        raise CheckpointError("the checkpoint holds no policy parameters")
    check_state_dict(model.policy.state_dict(), params["policy"], "policy")
    expected = set(model._get_torch_save_params()[0])
    if set(params) != expected:
        raise CheckpointError(
            f"the checkpoint holds state for {sorted(params)}, this model needs {sorted(expected)}"
        )
    try:
        model.set_parameters(params, exact_match=True, device=model.device)
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"the checkpoint's parameters do not fit this model: {err}") from None
    allowed = set(model._get_torch_save_params()[1])  # the tensors SB3 itself saves
    for name, value in state.get("variables", {}).items():
        if name not in allowed:
            raise CheckpointError(
                f"the checkpoint writes to {name!r}, which is not one of this algorithm's saved "
                f"tensors ({', '.join(sorted(allowed)) or 'none'}); refusing it"
            )
        target = _getattr_path(model, name)
        if tuple(target.shape) != tuple(value.shape):
            raise CheckpointError(
                f"{name}: shape {tuple(value.shape)} in the checkpoint, {tuple(target.shape)} here"
            )
        with torch.no_grad():
            target.copy_(value.to(target.device))
    counters = state.get("counters", {})
    values = {}
    for name in ("num_timesteps", "n_updates", "episode_num"):
        value = counters.get(name, 0) if isinstance(counters, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**53:
            raise CheckpointError(
                f"the checkpoint's counter {name} is {value!r}, not a count; the file is "
                "damaged: use another checkpoint from the run's checkpoints/ folder"
            )
        values[name] = value
    model.num_timesteps = values["num_timesteps"]
    model._n_updates = values["n_updates"]
    model._episode_num = values["episode_num"]
    restore_vec_normalize(vec_normalize, state.get("vec_normalize"))


def _getattr_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
