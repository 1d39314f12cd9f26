"""The batched merge draws its initial traffic from the same distribution as highway-env's
``MergeEnv._make_vehicles`` (docs/batched.md, the merge's own initial states)."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from drive_attention.envs.batched import BatchedDrive
from drive_attention.envs.batched.scenarios import import_state
from drive_attention.envs.batched.sim import IDLE, Traffic
from drive_attention.envs.validation import REFERENCE_IDS

DRAWS = 600
KS_CRITICAL = 1.95  # two-sample Kolmogorov-Smirnov, alpha = 0.001: D > c * sqrt(2 / n) rejects
# fields of the initial state that the simulation reads (the timer of the ego and of the
# obstacle is never read: MDPVehicle has no MOBIL timer and obstacles do not act)
FIELDS = (
    "x",
    "y",
    "heading",
    "speed",
    "lane",
    "target_lane",
    "target_speed",
    "delta",
    "timer",
    "kind",
    "length",
    "width",
    "crashed",
    "check_collisions",
    "has_impact",
)
READS_TIMER = (1, 2, 3, 4)  # merge slots of IDM vehicles


@pytest.fixture(scope="module")
def starts() -> tuple[Traffic, Traffic]:
    """(highway-env's, the batched scenario's) initial merge traffic, ``DRAWS`` each."""
    ref = gym.make(REFERENCE_IDS["merge"], action="discrete").unwrapped
    core = BatchedDrive(scenario="merge", action="discrete", num_envs=DRAWS)
    n = core.traffic_spec.n_slots()
    rows = []
    for seed in range(DRAWS):
        ref.reset(seed=seed)
        rows.append(import_state(ref.sim, core.road, n))
    theirs = Traffic(
        **{
            f.name: torch.cat([getattr(r, f.name) for r in rows])
            for f in dataclasses.fields(Traffic)
        }
    )
    core.seed(0)
    core.reset()
    return theirs, core.traffic.clone()


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.concatenate([a, b])
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def test_merge_initial_states_have_highway_envs_distribution(starts) -> None:
    """Slot by slot, every field the simulation reads: constants equal, random ones (the three
    highway cars' position, lane and speed, every IDM timer) the same distribution by a KS test
    and their means within 4 standard errors."""
    theirs, mine = starts
    checked_random = 0
    for name in FIELDS:
        a_all = getattr(theirs, name).double().numpy()
        b_all = getattr(mine, name).double().numpy()
        for slot in range(a_all.shape[1]):
            if name == "timer" and slot not in READS_TIMER:
                continue
            a, b = a_all[:, slot], b_all[:, slot]
            where = f"{name}[{slot}]"
            if a.std() == 0:
                np.testing.assert_allclose(b, a[0], atol=1e-4, err_msg=where)
                continue
            checked_random += 1
            d = _ks(a, b)
            assert d < KS_CRITICAL * np.sqrt(2 / DRAWS), f"{where}: KS D = {d:.3f}"
            se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
            assert abs(a.mean() - b.mean()) < 4 * se, (
                f"{where}: {a.mean():.3f} against {b.mean():.3f} (standard error {se:.3f})"
            )
    assert checked_random >= 12  # x, y, speed, lane ... of three cars, four timers


def test_merge_initial_states_are_as_hard(starts) -> None:
    """The idle ego's mean return from the batched scenario's own starts and from highway-env's
    starts (both run on the batched simulator) agree within 4 standard errors."""
    theirs, mine = starts
    core = BatchedDrive(scenario="merge", action="discrete", num_envs=DRAWS)
    returns = []
    for start in (theirs, mine):
        core.restart_from(start.clone())
        total, done = torch.zeros(DRAWS), torch.zeros(DRAWS, dtype=torch.bool)
        while not done.all():
            out = core.step(torch.full((DRAWS,), IDLE))
            total += torch.where(done, 0.0, out.reward)
            done |= out.terminated | out.truncated
        returns.append(total.double().numpy())
    a, b = returns
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert abs(a.mean() - b.mean()) < 4 * se, f"{a.mean():.3f} against {b.mean():.3f} ({se:.3f})"
