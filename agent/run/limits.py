"""Upper bounds on the sizes of a run, so that a typo is one line instead of minutes of
allocation and an out-of-memory traceback (or a hang).

Fixed caps here, checked when the experiment config is built, wherever the value comes from (a
file, an override, a checkpoint's config on ``--resume``, the dataclasses called directly): the
same on every machine, so a config valid here is valid everywhere, and generous (each is far
beyond what this project's configs use; every message says so). What a run needs of *this*
machine's memory is estimated from the same sizes and checked before anything is allocated, by
:mod:`agent.run.memory`. The model's own caps live with its schema (:mod:`models.config`), the
batched simulator's with its options (:mod:`envs.limits`).
"""

from __future__ import annotations

from drive_attention.envs.configuration import ConfigError
from drive_attention.envs.limits import MAX_BATCHED_ENVS

MAX_PROCESS_ENVS = 256
"""``env.n_envs`` of the backends that run one Python process per env (highway-env, CARLA):
each is at least ~100 MB of memory and a process of its own."""
MAX_N_STEPS = 2**20  # algo.n_steps: steps per env in one PPO rollout (this project's: 8-128)
MAX_ROLLOUT = 2**24  # algo.n_steps * env.n_envs: transitions of one rollout (the default's 2,048)
MAX_BATCH_SIZE = 2**20  # algo.batch_size: samples of one minibatch (this project's: 64-256)
MAX_BUFFER_SIZE = 2**24  # algo.buffer_size: transitions SAC keeps (this project's: 30,000)
MAX_NET_WIDTH = 16_384  # units of one layer of algo.net_arch (this project's: 64-256)
MAX_NET_DEPTH = 16  # layers of algo.net_arch (this project's: 2)
MAX_EPISODES = 100_000
"""Episodes of one evaluation (``--episodes``, ``train.eval_episodes``, the studies'
``evaluation.episodes``): each is one at a time and seconds long (this project's: 5-50)."""

__all__ = [
    "MAX_BATCHED_ENVS",
    "MAX_BATCH_SIZE",
    "MAX_BUFFER_SIZE",
    "MAX_EPISODES",
    "MAX_NET_DEPTH",
    "MAX_NET_WIDTH",
    "MAX_N_STEPS",
    "MAX_PROCESS_ENVS",
    "MAX_ROLLOUT",
    "check_at_most",
    "check_batch_size",
    "check_episodes",
    "check_n_envs",
    "check_net_arch",
    "check_ppo_sizes",
    "check_rollout",
    "check_sac_sizes",
]


def check_at_most(key: str, value: int | float, limit: int | float, why: str) -> None:
    """``<key>: <value> is above the limit of <limit> (<why>); give a smaller one``."""
    if value > limit:
        raise ConfigError(
            f"{key}: {value} is above the limit of {limit:,} ({why}); give a smaller one"
        )


def check_n_envs(key: str, n_envs: int, batched: bool) -> None:
    """At most :data:`MAX_BATCHED_ENVS` environments of the batched simulator (one process),
    else at most :data:`MAX_PROCESS_ENVS` (one process each)."""
    if batched:
        check_at_most(
            key,
            n_envs,
            MAX_BATCHED_ENVS,
            "batched environments: 4 times the GPU benchmark's largest batch, and each keeps its "
            "frames",
        )
    else:
        check_at_most(
            key,
            n_envs,
            MAX_PROCESS_ENVS,
            "environments of this backend, each a Python process of at least ~100 MB; the "
            "batched simulator (env.id DriveAttention/Batched...) runs more in one process",
        )


def check_ppo_sizes(n_steps: int, batch_size: int) -> None:
    """``n_steps`` and ``batch_size`` of PPO (its schema's keys, without ``algo.``)."""
    check_at_most(
        "n_steps",
        n_steps,
        MAX_N_STEPS,
        "steps per env in one rollout, all kept in memory; this project's configs use 8-128",
    )
    check_batch_size(batch_size)


def check_sac_sizes(buffer_size: int, batch_size: int) -> None:
    """``buffer_size`` and ``batch_size`` of SAC (its schema's keys, without ``algo.``)."""
    check_at_most(
        "buffer_size",
        buffer_size,
        MAX_BUFFER_SIZE,
        "transitions kept in memory with their frames; this project's configs use 30,000",
    )
    check_batch_size(batch_size)


def check_batch_size(batch_size: int) -> None:
    """At most :data:`MAX_BATCH_SIZE` samples in one minibatch (PPO and SAC)."""
    check_at_most(
        "batch_size",
        batch_size,
        MAX_BATCH_SIZE,
        "samples in one minibatch, on the learner's device at once; this project's configs use "
        "64-256",
    )


def check_rollout(n_steps: int, n_envs: int) -> None:
    """One PPO rollout: at most :data:`MAX_ROLLOUT` transitions (SB3 allocates them all up
    front; ``algo.n_steps`` alone is capped by :data:`MAX_N_STEPS` in its schema)."""
    rollout = n_steps * n_envs
    if rollout > MAX_ROLLOUT:
        raise ConfigError(
            f"algo.n_steps: a rollout of algo.n_steps * env.n_envs = {n_steps:,} * {n_envs:,} = "
            f"{rollout:,} transitions is above the limit of {MAX_ROLLOUT:,} (all kept in memory "
            "with their frames; the default's is 2,048); lower algo.n_steps or env.n_envs"
        )


def check_net_arch(net_arch: list[int]) -> None:
    """The policy and value heads: at most :data:`MAX_NET_DEPTH` layers of at most
    :data:`MAX_NET_WIDTH` units."""
    if len(net_arch) > MAX_NET_DEPTH:
        raise ConfigError(
            f"net_arch: {len(net_arch)} layers are above the limit of {MAX_NET_DEPTH} (layers of "
            "the policy and value heads; this project's configs use 2); give fewer"
        )
    for i, width in enumerate(net_arch):
        check_at_most(f"net_arch[{i}]", width, MAX_NET_WIDTH, "units of one layer of the heads")


def check_episodes(key: str, episodes: int) -> None:
    """At most :data:`MAX_EPISODES` episodes in one evaluation."""
    check_at_most(
        key,
        episodes,
        MAX_EPISODES,
        "episodes of one evaluation, run one at a time, each seconds long",
    )
