"""What a run needs of this machine's memory, estimated from its sizes before anything is
allocated (:func:`check_run_memory`): the environments, PPO's rollout or SAC's replay buffer, one
minibatch, and the model with its gradients and Adam's moments.

Each part is a lower bound (what is certainly allocated; activations and copies made along the
way come on top), so a run that fits is never refused; one that cannot fit is refused in one line
that names the option asking for most of it. The fixed caps of :mod:`agent.run.limits` hold on
every machine; this check is about the one it runs on (:func:`envs.limits.machine_memory`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gymnasium import spaces

from drive_attention import envs
from drive_attention.agent.run.config import ExperimentConfig
from drive_attention.envs.limits import batched_env_bytes, check_memory, gib

PROCESS_ENV_BYTES = 100 * 2**20  # [bytes] one env in a process of its own, at least
TRAIN_BYTES_PER_PARAM = 16  # float32 weights, gradients and Adam's two moments
STEP_BYTES = 32  # [bytes] a PPO transition besides its observation (action, reward, value, ...)


@dataclass
class Need:
    """A part of what a run allocates: the option that sizes it, what it is and its bytes."""

    key: str
    what: str
    n_bytes: float
    fix: str


def run_needs(
    config: ExperimentConfig,
    observation_space: spaces.Dict,
    n_envs: int | None = None,
    envs_too: bool = True,
    replay: bool = True,
) -> list[Need]:
    """The parts of :func:`check_run_memory`, largest first."""
    n_envs = config.env.n_envs if n_envs is None else n_envs
    camera = observation_space["camera"].shape  # (H, W, 3 S) uint8
    values = sum(math.prod(space.shape) for space in observation_space.values())
    stored = sum(
        math.prod(space.shape) * space.dtype.itemsize for space in observation_space.values()
    )  # [bytes] one observation as the buffers keep it
    needs = []
    if envs_too and config.env.id in envs.BATCHED_IDS:
        h, w, channels = camera
        needs.append(
            Need(
                "env.n_envs",
                f"{n_envs:,} batched environments of {h}x{w} frames",
                n_envs * batched_env_bytes((h, w), channels // 3),
                "lower env.n_envs or env.kwargs.camera_size",
            )
        )
    elif envs_too and n_envs > 1:
        needs.append(
            Need(
                "env.n_envs",
                f"{n_envs} environment processes of ~100 MB each",
                n_envs * PROCESS_ENV_BYTES,
                "lower env.n_envs",
            )
        )
    algo = config.algo
    if algo.name == "ppo":
        rollout = algo.n_steps * n_envs
        needs.append(
            Need(
                "algo.n_steps",
                f"a rollout of algo.n_steps * env.n_envs = {rollout:,} transitions of "
                f"{stored:,} bytes, kept and then copied once",
                2 * rollout * (stored + STEP_BYTES),
                "lower algo.n_steps or env.n_envs",
            )
        )
    elif replay:
        needs.append(
            Need(
                "algo.buffer_size",
                f"a replay buffer of {algo.buffer_size:,} transitions of {2 * stored:,} bytes",
                algo.buffer_size * 2 * stored,
                "lower algo.buffer_size",
            )
        )
    per_sample = 4 * values * (1 if algo.name == "ppo" else 2)  # float32, SAC: next obs too
    needs.append(
        Need(
            "algo.batch_size",
            f"a minibatch of {algo.batch_size:,} samples of {per_sample:,} bytes (float32)",
            algo.batch_size * per_sample,
            "lower algo.batch_size",
        )
    )
    params = config.model.estimated_params()
    needs.append(
        Need(
            "model.dim",
            f"the model's ~{params:,} parameters with their gradients and Adam's moments",
            params * TRAIN_BYTES_PER_PARAM,
            "lower model.dim or model.layers",
        )
    )
    return sorted(needs, key=lambda need: -need.n_bytes)


def check_run_memory(
    config: ExperimentConfig,
    observation_space: spaces.Dict,
    n_envs: int | None = None,
    envs_too: bool = True,
    replay: bool = True,
) -> None:
    """Refuse a run whose parts (:func:`run_needs`) need more memory than this machine has,
    naming the option behind the largest part. ``n_envs``: the envs the algorithm steps (default
    ``env.n_envs``); ``envs_too``: count the environments (False once they are made);
    ``replay``: count SAC's replay buffer (False for an agent loaded to be evaluated)."""
    needs = run_needs(config, observation_space, n_envs, envs_too, replay)
    largest = needs[0]
    check_memory(
        largest.key,
        sum(need.n_bytes for need in needs),
        f"the run, mostly {largest.what} ({gib(largest.n_bytes)}),",
        largest.fix,
    )
