"""Ground-truth relevance: the objects whose removal changes the teacher's decision."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from drive_attention import envs  # noqa: F401  (registers the ids)
from drive_attention.agent.policies.relevance import relevance
from drive_attention.agent.policies.teacher import Teacher
from drive_attention.envs.batched.sim import EGO, EMPTY, IDM

INTERSECTION = "DriveAttention/BatchedIntersection-v0"
SIGNALIZED = "DriveAttention/BatchedSignalized-v0"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _place(core, slot: int, arm: int, s: float, speed: float) -> None:
    """An IDM vehicle in ``slot`` on the approach lane of ``arm``, ``s`` [m] along it, going
    straight across (as the intersection's arrivals are made)."""
    t, tables = core.traffic, core.traffic_spec._lanes(core.road)
    lane = tables["approach"][arm].reshape(1)
    core.traffic_spec._put(t, core.sim, slot, lane, torch.tensor([s]), torch.tensor([speed]))
    t.kind[0, slot] = IDM
    t.delta[0, slot] = 4.0
    t.route_lock[0, slot] = True
    t.destination[0, slot] = tables["destination"][(arm + 2) % 4]
    t.length[0, slot], t.width[0, slot] = 5.0, 2.0
    t.check_collisions[0, slot] = True
    t.crashed[0, slot] = False
    t.road_order[0, slot] = slot
    core.sim.update_lanes(t)
    t.target_lane[0, slot] = t.lane[0, slot]


def _yield_situation(cross_s: float = 70.0):
    """The ego 50 m before the junction at 10 m/s, going straight, alone but for a vehicle
    crossing from its left (the priority road) timed to meet it there, and one 40 m behind it
    on its own approach; no arrivals."""
    env = gym.make(INTERSECTION, sim={"spawn_probability": 0.0})
    env.reset(seed=0)
    core = env.unwrapped.core
    core.traffic.kind[:, 1:] = EMPTY
    _place(core, 1, arm=1, s=cross_s, speed=8.0)  # crossing: reaches the junction with the ego
    _place(core, 2, arm=0, s=20.0, speed=5.0)  # far behind the ego, slower
    return env, core


def test_relevance_marks_the_vehicle_to_yield_to_and_not_one_far_behind() -> None:
    env, core = _yield_situation()
    # the situation is what it says: driving on at idle, the ego meets the crossing vehicle
    probe = core.planning_batch(1)
    crashed = False
    for _ in range(8):
        crashed |= bool(probe.step(torch.tensor([1])).failed[0])
    assert crashed, "idle should run into the crossing vehicle"

    before = core.traffic.clone()
    rel = relevance(Teacher(core))
    assert rel.slots(0) == [1]
    assert bool(rel.tested[0, 2]) and not bool(rel.relevant[0, 2])
    assert not bool(rel.tested[0, 0]), "the ego is never one of the objects"
    assert not bool(rel.light_tested[0]), "no light on the plain intersection"
    # asking changed nothing in the environment
    for name in ("x", "y", "speed", "kind"):
        assert torch.equal(getattr(core.traffic, name), getattr(before, name))
    env.close()


def test_a_crossing_vehicle_that_has_passed_is_not_relevant() -> None:
    # the same vehicle far enough ahead of the ego's arrival: it is gone before the ego comes
    env, core = _yield_situation(cross_s=100.0)
    rel = relevance(Teacher(core))
    assert not bool(rel.relevant[0, 1])
    env.close()


def test_a_saved_state_is_judged_as_the_live_one_and_radius_limits_the_objects() -> None:
    env, core = _yield_situation()
    teacher = Teacher(core)
    state = core.planning_batch(1)
    env.step(1)  # the live environment moves on; the saved copy does not
    saved = relevance(teacher, state=state)
    assert saved.slots(0) == [1]
    near = relevance(teacher, radius=1.0, state=state)
    assert not near.tested.any() and not near.relevant.any()
    env.close()


def test_the_light_is_one_element_and_flipping_it_can_matter() -> None:
    env = gym.make(SIGNALIZED)
    faced = flipped = 0
    for seed in range(2):
        env.reset(seed=seed)
        core = env.unwrapped.core
        teacher = Teacher(core)
        for _ in range(3):
            rel = relevance(teacher)
            faced += int(rel.light_tested[0])
            flipped += int(rel.light[0])
            assert not rel.tested[0][core.traffic.kind[0] == EGO].any()
            env.step(int(rel.action[0]))
    assert faced > 0, "the ego starts before its stop line"
    assert flipped > 0, "a light the ego faces should sometimes decide its choice"
    env.close()


def test_object_ids_and_slots_trace_the_frame_to_the_simulator() -> None:
    env = gym.make(SIGNALIZED, road_labels=True, n_objects=6)
    obs, info = env.reset(seed=3)
    for _ in range(6):
        obs, _, terminated, truncated, info = env.step(1)
        core = env.unwrapped.core
        t = core.traffic
        ids, labels, slots = info["object_ids"], info["road_labels"], info["object_slots"]
        shown = np.isin(labels, [3, 5])  # vehicle, pedestrian
        assert ((ids >= 0) == shown).all(), "every object pixel, and only those, has a slot"
        for slot in np.unique(ids[ids >= 0]):
            assert int(t.kind[0, slot]) not in (EGO, EMPTY)
        # token k describes slot slots[k]: its row of the sensor vector says where that is
        names = core.sensor_names
        for k, slot in enumerate(slots):
            present = obs["sensors"][names.index(f"objects.{k:02d}.present")]
            assert present == (1.0 if slot >= 0 else 0.0)
            if slot >= 0:
                dx = float(t.x[0, slot] - t.x[0, 0])
                dy = float(t.y[0, slot] - t.y[0, 0])
                c, s = np.cos(float(t.heading[0, 0])), np.sin(float(t.heading[0, 0]))
                along = obs["sensors"][names.index(f"objects.{k:02d}.x")]
                assert along == pytest.approx((c * dx + s * dy) / core.config.ray_range, abs=1e-4)
        if terminated or truncated:
            break
    env.close()
