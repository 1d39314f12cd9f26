"""The batched simulator's collisions follow highway-env's rule: the predictive test, the impact
push, the pair order, HighwayEnvFast's ego-only checks and obstacles (envs/batched/collision.py).

Every case is a hand-built state on highway-env's own road with real highway-env vehicles,
stepped by highway-env (``road.act()`` then ``road.step(dt)``, i.e. one simulation frame) and by
the batched simulator from the same state copied in with ``import_state``.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from highway_env import utils
from highway_env.vehicle.behavior import IDMVehicle
from highway_env.vehicle.kinematics import Vehicle
from highway_env.vehicle.objects import Obstacle

from drive_attention.envs.batched import BatchedDrive
from drive_attention.envs.batched.collision import pairs_colliding
from drive_attention.envs.batched.scenarios import empty_traffic, export_positions, import_state
from drive_attention.envs.batched.sim import EGO, IDM, OBSTACLE, Simulator
from drive_attention.envs.validation import REFERENCE_IDS, trajectory_error

DT = 0.1  # [s] one simulation frame
LANE = 4.0  # [m] lane width of the highway road


class Scene:
    """highway-env's highway road with hand-placed vehicles, and the batched twin of it."""

    def __init__(self, ego_only: bool = False) -> None:
        self.sim = gym.make(REFERENCE_IDS["highway"], action="continuous").unwrapped.sim
        self.sim.reset(seed=0)
        self.road = self.sim.road
        self.road.vehicles, self.road.objects = [], []
        self.ego_only = ego_only
        self.core = BatchedDrive(scenario="highway", action="continuous")

    def add(
        self,
        cls: type,
        x: float,
        lane: int,
        speed: float,
        heading: float = 0.0,
        ego: bool | None = None,
        **kw,
    ):
        """A ``cls`` at ``x`` [m] on ``lane``, appended to road.vehicles (road.objects for an
        obstacle); the ego is the first vehicle unless ``ego`` says otherwise."""
        v = cls(self.road, [x, lane * LANE], heading=heading, speed=speed, **kw)
        if isinstance(v, Obstacle):
            self.road.objects.append(v)
            return v
        self.road.vehicles.append(v)
        if ego or (ego is None and len(self.road.vehicles) == 1):
            self.sim.vehicle = v
        if self.ego_only:  # HighwayEnvFast: only the ego checks collisions
            for other in self.road.vehicles:
                other.check_collisions = other is self.sim.vehicle
        return v

    def batched(self) -> tuple[Simulator, object]:
        """The batched simulator and traffic (B = 1) of the current highway-env state."""
        sim = Simulator(self.core.road, all_collisions=not self.ego_only, discrete=False)
        return sim, import_state(self.sim, self.core.road)

    def frame(self) -> None:
        self.road.act()
        self.road.step(DT)

    def objects(self) -> list:
        """Vehicles then objects in the batched slot order (the ego first)."""
        ego = self.sim.vehicle
        others = [v for v in self.road.vehicles if v is not ego]
        return [ego, *others, *self.road.objects]


def _impacts(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(N,) pending-impact flags and (N, 2) impacts [m] of highway-env's vehicles and objects
    (an obstacle's zero impact is never applied: obstacles do not step)."""
    pending = [v.impact is not None and not isinstance(v, Obstacle) for v in scene.objects()]
    impact = [v.impact if p else np.zeros(2) for v, p in zip(scene.objects(), pending)]
    return np.array(pending), np.array(impact, dtype=float)


def _assert_same(scene: Scene, t, frame: int, atol: float = 1e-4) -> None:
    n = len(scene.objects())
    crashed = np.array([v.crashed for v in scene.objects()])
    np.testing.assert_array_equal(t.crashed[0, :n].numpy(), crashed, err_msg=f"frame {frame}")
    pending, impact = _impacts(scene)
    np.testing.assert_array_equal(t.has_impact[0, :n].numpy(), pending, err_msg=f"frame {frame}")
    np.testing.assert_allclose(t.impact[0, :n].double().numpy(), impact, atol=1e-5)
    mine = torch.stack([t.x[0, :n], t.y[0, :n]], -1).double().numpy()
    np.testing.assert_allclose(mine, export_positions(scene.sim), atol=atol, err_msg=f"{frame}")


def _run(scene: Scene, frames: int) -> list[bool]:
    """Step both simulators ``frames`` frames from the scene, checking every frame; returns
    highway-env's ego crash flag after each."""
    sim, t = scene.batched()
    return _run_on(scene, sim, t, frames)


def _run_on(scene: Scene, sim: Simulator, t, frames: int) -> list[bool]:
    """As :func:`_run`, from the batched twin ``sim``, ``t`` already in step with the scene."""
    ego = []
    for frame in range(frames):
        scene.frame()
        sim.step(t, DT)
        _assert_same(scene, t, frame)
        ego.append(bool(scene.road.vehicles[0].crashed))
    return ego


# ------------------------------------------------------------------ the box test itself
def test_pair_test_matches_are_polygons_intersecting_on_random_boxes() -> None:
    """Overlap now, overlap within the frame and the translation vector of 2000 random pairs of
    boxes close to each other, against highway-env's utils.are_polygons_intersecting."""
    rng = np.random.default_rng(0)
    k = 2000
    t = empty_traffic(k, 2, torch.device("cpu"))
    t.x[:, 1] = torch.as_tensor(rng.uniform(-7, 7, k), dtype=torch.float32)
    t.y[:, 1] = torch.as_tensor(rng.uniform(-4, 4, k), dtype=torch.float32)
    t.heading[:] = torch.as_tensor(rng.uniform(-math.pi, math.pi, (k, 2)), dtype=torch.float32)
    t.speed[:] = torch.as_tensor(rng.uniform(0, 40, (k, 2)), dtype=torch.float32)
    t.length[:, 1] = torch.as_tensor(rng.choice([2.0, 5.0], k), dtype=torch.float32)
    env = torch.arange(k)
    out = pairs_colliding(
        t, env, torch.zeros(k, dtype=torch.long), torch.ones(k, dtype=torch.long), DT
    )

    def body(i: int, slot: int) -> Vehicle:
        v = Vehicle(
            None,
            [float(t.x[i, slot]), float(t.y[i, slot])],
            float(t.heading[i, slot]),
            float(t.speed[i, slot]),
        )
        v.LENGTH, v.WIDTH = float(t.length[i, slot]), float(t.width[i, slot])
        return v

    kinds = {"intersecting": 0, "will_only": 0, "apart": 0}
    for i in range(k):
        a, b = body(i, 0), body(i, 1)
        inter, will, tr = utils.are_polygons_intersecting(
            a.polygon(), b.polygon(), a.velocity * DT, b.velocity * DT
        )
        assert bool(out.intersecting[i]) == inter and bool(out.will_intersect[i]) == will, i
        if will:
            np.testing.assert_allclose(out.translation[i].numpy(), tr, atol=1e-9, err_msg=str(i))
        kinds["intersecting" if inter else "will_only" if will else "apart"] += 1
    assert min(kinds.values()) > 100, kinds  # every outcome is exercised


# ------------------------------------------------------------------ whole frames
def test_rear_end_predicted_pushes_then_crashes_as_highway_env() -> None:
    """A fast car closing on a slow one: no overlap after the frame but within the next, so
    highway-env sets an impact (crashed only at the next frame); then the push, the braking and
    the following frames match highway-env frame by frame."""
    scene = Scene()
    scene.add(Vehicle, 20.0, 1, speed=30.0)  # the ego, no control (continuous action held)
    scene.add(IDMVehicle, 29.0, 1, speed=8.0)
    scene.add(IDMVehicle, 60.0, 0, speed=25.0)  # far away, untouched
    sim, t = scene.batched()
    scene.frame()
    sim.step(t, DT)
    ego, front = scene.road.vehicles[:2]
    assert not ego.crashed and ego.impact is not None and front.impact is not None, (
        "the scene must be a predicted, not yet overlapping, collision"
    )
    np.testing.assert_allclose(ego.impact, -front.impact)  # half each, opposite ways
    _assert_same(scene, t, 0)
    for frame in range(1, 12):
        scene.frame()
        sim.step(t, DT)
        _assert_same(scene, t, frame)
    assert ego.crashed and front.crashed and not scene.road.vehicles[2].crashed


def test_cut_in_crash_and_aftermath_match_highway_env() -> None:
    """A car cutting in at an angle from the next lane into the ego's path: crash flags, impacts
    and positions of every vehicle agree with highway-env for 20 frames."""
    scene = Scene()
    scene.add(Vehicle, 20.0, 1, speed=25.0)
    scene.add(IDMVehicle, 26.5, 0, speed=20.0, heading=0.35, target_lane_index=("0", "1", 1))
    scene.add(IDMVehicle, 45.0, 2, speed=22.0)
    ego = _run(scene, 20)
    assert any(ego) and ego[-1], "the scene must end in a crash"


def test_last_pair_in_road_order_sets_the_impact() -> None:
    """A car squeezed between one behind and one ahead gets impacts from two pairs; highway-env
    keeps the last one in its pair order ((1, 2) after (0, 1)), and so does the batched side."""
    scene = Scene()
    scene.add(Vehicle, 20.0, 1, speed=30.0)
    scene.add(IDMVehicle, 26.0, 1, speed=15.0)
    scene.add(IDMVehicle, 31.3, 1, speed=5.0)
    sim, t = scene.batched()
    scene.frame()
    sim.step(t, DT)
    a, b, c = scene.road.vehicles
    # the middle car's impact is the (1, 2) pair's, not the (0, 1) pair's nor their sum
    assert a.impact is not None and c.impact is not None
    np.testing.assert_allclose(b.impact, -c.impact)
    assert not np.allclose(b.impact, -a.impact)
    _assert_same(scene, t, 0)
    _run(scene, 8)


def test_pre_check_counts_only_the_first_vehicles_speed() -> None:
    """highway-env's spherical pre-check adds ``self.speed * dt`` of the pair's first vehicle
    only: a fast car closing on a slow ego from behind gets no impact the frame before they
    touch (it crashes on overlap instead), and the batched side skips it the same way."""
    scene = Scene()
    scene.add(Vehicle, 29.0, 1, speed=8.0)  # the ego, slot 0: its speed sets the reach
    scene.add(IDMVehicle, 20.0, 1, speed=30.0)
    sim, t = scene.batched()
    scene.frame()
    sim.step(t, DT)
    ego, rear = scene.road.vehicles
    gap = np.linalg.norm(rear.position - ego.position)  # [m] between centres
    assert gap > ego.diagonal + ego.speed * DT, "beyond the ego's reach"
    assert ego.impact is None and rear.impact is None and not ego.crashed
    _assert_same(scene, t, 0)
    assert _run_on(scene, sim, t, 6)[-1], "they crash on overlap"


def test_road_order_not_slot_order_picks_the_pairs_first_vehicle() -> None:
    """With the ego second in road.vehicles (slot 0 on the batched side), the fast car listed
    before it is the pair's ``self``: its speed widens the pre-check, so highway-env predicts
    the collision a frame early, and the batched side does the same through ``road_order``."""
    scene = Scene()
    scene.add(IDMVehicle, 20.0, 1, speed=30.0, ego=False)  # first in road.vehicles
    scene.add(Vehicle, 29.0, 1, speed=8.0, ego=True)
    sim, t = scene.batched()
    assert t.road_order[0, :2].tolist() == [1, 0]  # slot 0 (the ego) is second on the road
    scene.frame()
    sim.step(t, DT)
    rear, ego = scene.road.vehicles
    assert ego.impact is not None and rear.impact is not None and not ego.crashed
    _assert_same(scene, t, 0)
    assert _run_on(scene, sim, t, 6)[-1]


def test_highway_env_fast_only_the_ego_checks() -> None:
    """HighwayEnvFast: two traffic cars overlapping do not crash; the ego's collision crashes
    (and pushes) both sides; with every slot's own flags, all_collisions gives the same."""
    scene = Scene(ego_only=True)
    scene.add(Vehicle, 20.0, 1, speed=30.0)
    scene.add(IDMVehicle, 29.0, 1, speed=8.0)
    scene.add(IDMVehicle, 60.0, 0, speed=20.0)
    scene.add(IDMVehicle, 62.0, 0, speed=20.0)  # overlaps the one before: not checked
    sim, t = scene.batched()
    both = Simulator(scene.core.road, all_collisions=True, discrete=False)
    t_all = t.clone()
    for frame in range(6):
        scene.frame()
        sim.step(t, DT)
        both.step(t_all, DT)
        _assert_same(scene, t, frame)
        _assert_same(scene, t_all, frame)
    v = scene.road.vehicles
    assert v[0].crashed and v[1].crashed and not v[2].crashed and not v[3].crashed


def test_obstacle_takes_no_push_and_the_car_takes_all_of_it() -> None:
    """A car running into an obstacle: the car gets the whole translation, the obstacle none
    (it never moves) and is flagged crashed once the boxes overlap."""
    scene = Scene()
    scene.add(Vehicle, 20.0, 1, speed=20.0)
    scene.add(IDMVehicle, 40.0, 0, speed=20.0)
    scene.add(Obstacle, 26.0, 1, speed=0.0)
    sim, t = scene.batched()
    assert int(t.kind[0, 2]) == OBSTACLE and int(t.kind[0, 0]) == EGO and int(t.kind[0, 1]) == IDM
    scene.frame()
    sim.step(t, DT)
    ego, obstacle = scene.road.vehicles[0], scene.road.objects[0]
    assert ego.impact is not None and not ego.crashed, "a predicted collision first"
    _assert_same(scene, t, 0)
    start = obstacle.position.copy()
    for frame in range(1, 10):
        scene.frame()
        sim.step(t, DT)
        _assert_same(scene, t, frame)
    assert ego.crashed and obstacle.crashed
    np.testing.assert_array_equal(obstacle.position, start)


def test_pending_impact_is_imported_and_applied() -> None:
    """A state copied out of highway-env between a predicted collision and its push carries the
    impact over: the batched simulator applies it at its first frame, as highway-env does."""
    scene = Scene()
    scene.add(Vehicle, 20.0, 1, speed=30.0)
    scene.add(IDMVehicle, 29.0, 1, speed=8.0)
    scene.frame()  # highway-env only: the impact is now pending
    sim, t = scene.batched()
    assert bool(t.has_impact[0, 0]) and bool(t.has_impact[0, 1]) and not bool(t.crashed[0, 0])
    scene.frame()
    sim.step(t, DT)
    _assert_same(scene, t, 1)
    assert bool(t.crashed[0, 0]) and bool(t.crashed[0, 1])


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(("scenario", "policy"), [("highway", "random"), ("merge", "idle")])
def test_trajectory_error_compares_crash_flags_frame_by_frame(scenario: str, policy: str) -> None:
    """On seeds where the ego crashes, crash flags agree at every frame and the positions keep
    agreeing after the crash (the push and the braking are modelled)."""
    seeds = 8
    out = trajectory_error(scenario, seeds=seeds, steps=5, action="discrete", policy=policy)
    per_step = {"highway": 5, "merge": 10}[scenario]  # simulation frames per policy step
    assert out["frames"] == seeds * 5 * per_step
    assert out["episodes_with_ego_crash"] >= 1, "these seeds must include a crash"
    assert out["episodes_with_ego_crash_batched"] == out["episodes_with_ego_crash"]
    assert out["crash_flag_mismatch_frames"] == 0, out["first_crash_flag_mismatch"]
    errors = out["max_position_error_m"] + [out["max_position_error_any_frame_m"]]
    assert all(np.isfinite(errors)) and max(errors) < 1e-2, errors
