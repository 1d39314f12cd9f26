"""Random draws of the batched simulator: one shared generator, or one stream per environment.

Initial states (a pool of starts, their warm-up) draw from the core's ``torch.Generator``: one
stream for the batch, seeded by ``seed()``. What an episode draws while it runs (the
intersection's arrivals, the signalised intersection's pedestrians) comes from a stream of its
own, held in the traffic state (``Traffic.rng``, a (B,) int64 counter): each draw advances every
environment's counter by one and hashes it (splitmix64), so an environment's draws depend on its
own state only, never on the batch around it. A copy of an environment (``Traffic.select``,
``clone``) therefore draws what the original will draw: a planner's copies foresee the arrivals.

Both kinds offer the same calls (:class:`GeneratorDraws`, :class:`StreamDraws`), one value per
environment each, so the scenarios' spawning code is written once.
"""

from __future__ import annotations

import math

import torch

# splitmix64's constants, as signed int64 (torch has no uint64 arithmetic)
_GAMMA = 0x9E3779B97F4A7C15 - 2**64
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64
KEY_RANGE = 2**62  # stream keys are drawn in [0, KEY_RANGE)


def _shift(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 ``z`` by ``k`` bits (``>>`` is arithmetic on signed ints)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's output function (int64 multiplication wraps, as uint64's would)."""
    z = (z ^ _shift(z, 30)) * _MIX1
    z = (z ^ _shift(z, 27)) * _MIX2
    return z ^ _shift(z, 31)


class GeneratorDraws:
    """Draws for ``k`` environments from one shared ``torch.Generator`` (initial states)."""

    def __init__(self, gen: torch.Generator, k: int, device: torch.device) -> None:
        self.gen, self.k, self.device = gen, k, device

    def rand(self) -> torch.Tensor:
        """(k,) uniform in [0, 1)."""
        return torch.rand(self.k, generator=self.gen, device=self.device)

    def randint(self, n: int) -> torch.Tensor:
        """(k,) long, uniform in 0 .. n - 1."""
        return torch.randint(n, (self.k,), generator=self.gen, device=self.device)

    def randn(self) -> torch.Tensor:
        """(k,) standard normal."""
        return torch.randn(self.k, generator=self.gen, device=self.device)

    def rand_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows),) uniform in [0, 1) for the environments ``rows`` only."""
        return torch.rand(len(rows), generator=self.gen, device=self.device)

    def skip(self) -> None:
        """What :meth:`rand_rows` would have drawn when no row needs it: nothing here."""


class StreamDraws:
    """Draws from each environment's own stream (``t.rng``, advanced in place): the values of
    environment ``i`` depend only on its counter, so any copy of it draws the same."""

    def __init__(self, t) -> None:  # t: envs.batched.sim.Traffic
        self.t = t

    def _next(self) -> torch.Tensor:
        self.t.rng = self.t.rng + _GAMMA
        return _mix(self.t.rng)

    def rand(self) -> torch.Tensor:
        return _shift(self._next(), 40).float() * 2.0**-24  # 24 bits: exact in float32

    def randint(self, n: int) -> torch.Tensor:
        return (self.rand() * n).long().clamp(max=n - 1)

    def randn(self) -> torch.Tensor:
        """Box-Muller from two uniforms (two draws)."""
        u1, u2 = self.rand(), self.rand()
        return torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2 * math.pi * u2)

    def rand_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self.rand()[rows]  # every environment draws, so every stream moves alike

    def skip(self) -> None:
        self._next()


def stream_keys(gen: torch.Generator, k: int, device: torch.device) -> torch.Tensor:
    """(k,) int64 keys of new environments' streams, drawn from the shared generator."""
    return torch.randint(KEY_RANGE, (k,), generator=gen, device=device)
