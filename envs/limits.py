"""Upper bounds on sizes, checked before anything is allocated: the machine's memory, and what
the batched simulator keeps per environment.

A size option that can ask for more memory than a machine has is refused with one
:class:`ConfigError` that names the key, the limit and why, instead of allocating for a minute and
then failing with a traceback (or being killed). Two kinds of bound:

- a generous fixed cap per option (:data:`MAX_BATCHED_ENVS`), the same on every machine, so that
  a config valid here is valid everywhere;
- a memory estimate (:func:`check_memory`) against :func:`machine_memory`, for what a machine
  actually holds. The estimates count what is certainly allocated (a lower bound), so nothing
  that fits is refused.

Importable without torch (the experiment config reads it).
"""

from __future__ import annotations

import os
from pathlib import Path

from drive_attention.envs.configuration import ConfigError

MAX_BATCHED_ENVS = 2**18  # B of one batched simulator: 4 times the GPU benchmark's 65,536
BATCHED_FRAME_COPIES = 8
"""Copies of one env's camera frame that a batched simulator holds at least (the label maps,
the coloured frame, the numpy observation, a vector env's observation-space bounds; measured:
9 to 11 per env through ``gymnasium.make_vec`` on CPU)."""
BATCHED_ENV_BYTES = 4096  # [bytes] traffic state, sensors and episode statistics of one env
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def gib(n_bytes: float) -> str:
    """``n_bytes`` in GiB, for messages (``'12.5 GiB'``)."""
    return f"{n_bytes / 2**30:,.1f} GiB"


def machine_memory() -> int | None:
    """[bytes] this machine's physical memory, or its container's limit where that is lower;
    None where neither can be read."""
    try:
        total: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        total = None
    for path in _CGROUP_LIMITS:
        try:
            limit = int(Path(path).read_text().strip())  # "max" (no limit) is not a number
        except (OSError, ValueError):
            continue
        total = limit if total is None else min(total, limit)
    return total


def check_memory(key: str, need: float, what: str, fix: str) -> None:
    """Refuse ``need`` bytes (an estimate of ``what`` the option ``key`` asks for) when this
    machine has less memory than that: ``<key>: <what> needs at least N GiB, more than this
    machine's M GiB of memory; <fix>``."""
    total = machine_memory()
    if total is not None and need > total:
        raise ConfigError(
            f"{key}: {what} needs at least {gib(need)}, more than this machine's {gib(total)} "
            f"of memory (the limit); {fix}"
        )


def batched_env_bytes(camera_size: tuple[int, int], frame_stack: int) -> int:
    """[bytes] at least what one env of a batched simulator holds (:data:`BATCHED_FRAME_COPIES`
    of its ``(H, W, 3 * frame_stack)`` frame, and its state)."""
    h, w = camera_size
    return BATCHED_FRAME_COPIES * h * w * 3 * frame_stack + BATCHED_ENV_BYTES


def check_batched_envs(
    key: str, num_envs: int, camera_size: tuple[int, int], frame_stack: int
) -> None:
    """Refuse a batch of more than :data:`MAX_BATCHED_ENVS` environments, or one whose frames
    alone need more memory than this machine has (before the simulator allocates any)."""
    if num_envs > MAX_BATCHED_ENVS:
        raise ConfigError(
            f"{key}: {num_envs} is above the limit of {MAX_BATCHED_ENVS:,} batched environments "
            f"(4 times the GPU benchmark's largest batch; each env keeps its frames, so this "
            f"many would need at least "
            f"{gib(num_envs * batched_env_bytes(camera_size, frame_stack))}); use fewer"
        )
    h, w = camera_size
    check_memory(
        key,
        num_envs * batched_env_bytes(camera_size, frame_stack),
        f"{num_envs:,} batched environments of {h}x{w} frames",
        "use fewer environments or smaller frames (camera_size)",
    )
