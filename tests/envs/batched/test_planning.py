"""Copies of the batched core's environments (``planning_batch``): what a planner's copies do
is what the originals then do under the same actions."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from drive_attention.envs.batched.core import BatchedDrive
from drive_attention.envs.batched.sim import IDM, PEDESTRIAN

# float state may differ in its last bits: the same operations, vectorised for another batch size
FLOAT_TOLERANCE = {"atol": 1e-3, "rtol": 1e-5}


def _traffic_rows(t, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    return {f.name: getattr(t, f.name)[rows] for f in dataclasses.fields(t)}


@pytest.mark.parametrize(
    ("scenario", "options"),
    [
        ("highway", {}),
        # lights, arrivals and pedestrians in every step: each copy must draw what its original
        # draws (each episode's own random stream)
        ("signalized", {"sim": {"spawn_probability": 0.9, "pedestrian_probability": 0.9}}),
    ],
)
def test_copies_roll_forward_as_the_originals_and_leave_them_alone(
    scenario: str, options: dict
) -> None:
    b, k, steps = 4, 3, 8
    core = BatchedDrive(scenario=scenario, num_envs=b, **options)
    core.seed(5)
    core.reset()
    gen = torch.Generator().manual_seed(0)
    core.step(torch.randint(5, (b,), generator=gen))  # mid-episode, not at the start
    copies = core.planning_batch(k)
    assert len(copies) == b * k
    other = copies.select(torch.arange(0, b * k, k))  # a copy of copies, stepped differently
    before = core.traffic.clone()
    for _ in range(3):  # the copies' own steps change nothing of the original
        other.step(torch.full((b,), 3))
    for name, value in _traffic_rows(before, slice(None)).items():
        assert torch.equal(value, getattr(core.traffic, name)), name
    spawned = 0
    for _ in range(steps):
        action = torch.randint(5, (b,), generator=gen)
        kinds = core.traffic.kind.clone()
        out = core.step(action)
        plan = copies.step(action.repeat_interleave(k))
        spawned += int(((core.traffic.kind != kinds) & (core.traffic.kind != 3)).sum())
        mine = torch.arange(b).repeat_interleave(k)  # row env * k + j copies env
        for name, value in _traffic_rows(core.traffic, mine).items():
            copied = getattr(copies.traffic, name)
            if value.dtype.is_floating_point:
                torch.testing.assert_close(copied, value, **FLOAT_TOLERANCE, msg=name)
            else:
                assert torch.equal(copied, value), f"{name} differs after the same actions"
        assert torch.equal(plan.done, (out.terminated | out.truncated)[mine])
        torch.testing.assert_close(plan.distance, out.episode["distance"][mine], **FLOAT_TOLERANCE)
    if scenario == "signalized":
        t = core.traffic
        assert spawned > 0 and bool((t.kind == PEDESTRIAN).any()) and bool((t.kind == IDM).any())
