"""Training throughput of the two engines on one config (``scripts/benchmark_train.py``).

Each engine trains a fresh model of the same config, seed and machine: a warm-up (one rollout
and update at least, so that allocation and first-call costs are not counted), then a timed
stretch; steps/s are environment steps (summed over the envs) per second of training wall time,
collection and updates together. Engines alternate over the repeats, so that load from other
processes falls on both alike.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field

import torch

from drive_attention.agent.engine import learner
from drive_attention.agent.run.build import make_algo, make_vec_env, probe_env, wrap_normalize
from drive_attention.agent.run.config import ExperimentConfig

ENGINES = ("sb3", "device")


@dataclass
class EngineSpeed:
    """The runs of one engine: env steps/s of each timed stretch."""

    engine: str
    steps_per_s: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.steps_per_s)


def with_engine(config: ExperimentConfig, engine: str) -> ExperimentConfig:
    """``config`` with ``train.engine`` set (validated again)."""
    train = dataclasses.replace(config.train, engine=engine)
    return dataclasses.replace(config, train=train)


def train_speed(config: ExperimentConfig, steps: int, warmup: int, device: str) -> float:
    """Env steps/s of ``config``'s engine over ``steps`` steps after ``warmup`` steps."""
    spec = probe_env(config.env)
    venv = wrap_normalize(
        make_vec_env(config.env, config.train.seed), config.env, config.algo.gamma
    )
    try:
        model = make_algo(config, venv, spec, device)
        loop = learner(model, config)
        loop.learn(total_timesteps=warmup)
        before = model.num_timesteps
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        loop.learn(total_timesteps=steps, reset_num_timesteps=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (model.num_timesteps - before) / (time.perf_counter() - started)
    finally:
        venv.close()


def compare(
    config: ExperimentConfig, steps: int, warmup: int, device: str, repeats: int
) -> dict[str, EngineSpeed]:
    """Both engines' :class:`EngineSpeed`, alternating ``repeats`` times."""
    if config.train.torch_threads:
        torch.set_num_threads(config.train.torch_threads)
    out = {engine: EngineSpeed(engine) for engine in ENGINES}
    for _ in range(repeats):
        for engine in ENGINES:
            speed = train_speed(with_engine(config, engine), steps, warmup, device)
            out[engine].steps_per_s.append(speed)
    return out
