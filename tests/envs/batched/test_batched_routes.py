"""The batched roundabout and intersection: any-direction lanes, routes, the intersection's
rules and arrivals, held to highway-env itself (its networks, vehicles and roads)."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch

from drive_attention import envs
from drive_attention.envs.batched import BatchedDrive
from drive_attention.envs.batched.road import lane_table
from drive_attention.envs.batched.scenarios import (
    BATCHED,
    export_positions,
    import_state,
    slot_order,
)
from drive_attention.envs.batched.sim import EMPTY, IDM
from drive_attention.envs.configuration import ConfigError
from drive_attention.envs.scenarios import SCENARIOS

ROUTES = ("roundabout", "intersection")


def _no_arrivals(name: str) -> dict:
    """Options without the intersection's arrivals (random draws on each side)."""
    return {"sim": {"spawn_probability": 0.0}} if name == "intersection" else {}


def _network(name: str):
    spec = SCENARIOS[name]
    env = spec.simulator_class()(config={**spec.sim_config, "vehicles_count": 0})
    env.reset(seed=0)
    return env.road.network


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_lane_geometry_is_highway_envs(name: str) -> None:
    """Local coordinates, headings and positions of every lane kind (straight, sine, arc)."""
    network = _network(name)
    road = lane_table(network)
    lanes = network.lanes_list()
    rng = np.random.default_rng(0)
    box = np.array([[-120.0, 220.0], [-120.0, 120.0]]) if name in ROUTES else None
    if box is None:
        box = np.array([[0.0, 500.0], [-5.0, 20.0]])
    points = rng.uniform(box[:, 0], box[:, 1], (60, 2))
    x, y = (torch.tensor(points[:, k], dtype=torch.float32) for k in (0, 1))
    s, lat = road.coordinates(x, y)
    for li, lane in enumerate(lanes):
        expected = np.array([lane.local_coordinates(p) for p in points])
        np.testing.assert_allclose(s[:, li], expected[:, 0], atol=2e-3)
        np.testing.assert_allclose(lat[:, li], expected[:, 1], atol=2e-3)
        index = torch.full((len(points),), li)
        heading = road.heading_at(index, s[:, li])
        ref = np.array([lane.heading_at(v) for v in expected[:, 0]])
        np.testing.assert_allclose(np.cos(heading.numpy() - ref), 1.0, atol=1e-6)
        px, py = road.position(index, s[:, li], lat[:, li])
        np.testing.assert_allclose(np.stack([px, py], 1), points, atol=2e-3)
    assert road.arcs == any(type(lane).__name__ == "CircularLane" for lane in lanes)


@pytest.mark.parametrize("name", ROUTES)
def test_route_table_is_highway_envs_next_lane(name: str) -> None:
    """At every lane end, the next lane towards every destination is the one highway-env's
    next_lane picks for a vehicle planning its route there (and without a route: at a fork
    whose branches start at one point that pick depends on where exactly the vehicle is; the
    table takes the lane end, and in these scenarios only vehicles with routes meet forks)."""
    network = _network(name)
    road = lane_table(network)
    for row, index in enumerate(road.indexes):
        lane = network.get_lane(index)
        end = lane.position(lane.length, 0.0)
        for v, node in enumerate(road.nodes):
            path = network.shortest_path(index[1], node) if index[1] != node else []
            route = [(a, b, None) for a, b in itertools.pairwise(path)]
            expected = network.next_lane(index, route=list(route), position=end)
            if not route:
                expected = network.next_lane(index, position=end)
            assert road.indexes[road.next_lane[row, v]] == tuple(expected), (index, node)


def _compare_frames(name: str, seed: int, frames: int, action: int = 1) -> tuple[float, int]:
    """Max position error [m] and yield-flag mismatches, frame by frame from one state."""
    ref = gym.make(envs.env_id(name), **_no_arrivals(name)).unwrapped
    ref.reset(seed=seed)
    core = BatchedDrive(scenario=name, **_no_arrivals(name))
    core.restart_from(
        import_state(ref.sim, core.road, core.traffic_spec.n_slots(), ref.destination)
    )
    sim = ref.sim
    fps = sim.config["simulation_frequency"]
    ego = sim.vehicle
    vehicles = slot_order(sim)
    worst, mismatches = 0.0, 0
    for frame in range(frames):
        if frame % fps == 0:
            sim.action_type.act(action)
        sim.road.act()
        sim.road.step(1 / fps)
        core.sim.step(core.traffic, 1 / fps, torch.tensor([action]) if frame % fps == 0 else None)
        t = core.traffic
        mine = torch.stack([t.x[0], t.y[0]], -1)[: len(vehicles)].double().numpy()
        worst = max(worst, float(np.abs(mine - [v.position for v in vehicles]).max()))
        flags = np.array([bool(getattr(v, "is_yielding", False)) for v in vehicles])
        mismatches += int((t.yielding[0, : len(vehicles)].numpy() != flags).sum())
        if ego.crashed:
            break
    return worst, mismatches


def test_intersection_priorities_and_yielding_match_highway_env() -> None:
    """RegulatedRoad's rules: the same vehicles yield on the same frames, and all vehicles
    (turning ones on arcs among them) drive the same paths."""
    yields = 0
    # seeds 37 and 47: an ego and a vehicle coming head-on, equally far from each other, where
    # the later of the pair in highway-env's list yields
    for seed in (*range(6), 37, 47):
        worst, mismatches = _compare_frames("intersection", seed, 50)
        assert mismatches == 0 and worst < 1e-3, (seed, worst, mismatches)
    # the comparison is not empty: traffic does yield in these episodes
    ref = gym.make(envs.env_id("intersection"), **_no_arrivals("intersection")).unwrapped
    for seed in range(6):
        ref.reset(seed=seed)
        for _ in range(4):
            ref.step(1)
            yields += sum(bool(getattr(v, "is_yielding", False)) for v in ref.sim.road.vehicles)
    assert yields > 0


@pytest.mark.parametrize("action", [0, 2, 3, 4])
def test_roundabout_lane_changes_and_speeds_match_highway_env(action: int) -> None:
    """The ego changing lanes on the ring, speeding up or slowing down among the traffic."""
    for seed in range(3):
        worst, _ = _compare_frames("roundabout", seed, 30, action)
        assert worst < 0.02, (seed, worst)


@pytest.mark.parametrize("name", ROUTES)
@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_route_sensors_and_arrival_match_highway_env(name: str, action: str) -> None:
    """Turn, look-ahead point, rewards and the end of each episode, step by step (a
    continuous-action ego has no route of its own: its exit is imported from the env)."""
    act = 3 if action == "discrete" else np.array([0.0, 0.3], np.float32)
    for seed in range(4):
        ref = gym.make(envs.env_id(name), action=action, **_no_arrivals(name)).unwrapped
        obs, _ = ref.reset(seed=seed)
        core = BatchedDrive(scenario=name, action=action, **_no_arrivals(name))
        core.restart_from(
            import_state(ref.sim, core.road, core.traffic_spec.n_slots(), ref.destination)
        )
        sensors = core.observe()[1][0].numpy()
        for _ in range(20):
            np.testing.assert_allclose(sensors, obs["sensors"], atol=0.02)
            obs, reward, terminated, truncated, info = ref.step(act)
            out = core.step(
                torch.as_tensor(act)[None] if action == "continuous" else torch.tensor([act])
            )
            sensors = out.sensors[0].numpy()
            assert abs(float(out.reward[0]) - reward) < 1e-3
            assert bool(out.terminated[0]) == terminated and bool(out.truncated[0]) == truncated
            if terminated or truncated:
                assert bool(out.episode["success"][0]) == info["success"]
                break


def test_routes_reach_every_exit() -> None:
    """Driven by the ego's own lane controller (idle), episodes end at each of the scenario's
    exits: the route table, the turn sensors and arrival agree on the way out."""
    for name in ROUTES:
        core = BatchedDrive(scenario=name, num_envs=48, duration=40.0, **_no_arrivals(name))
        core.seed(1)
        core.reset()
        turns = core.turn.clone()
        destinations = core.traffic.destination[:, 0].clone()
        arrived = torch.zeros(48, dtype=torch.bool)
        active = torch.ones(48, dtype=torch.bool)
        for _ in range(40):
            out = core.step(torch.full((48,), 3))
            done = (out.terminated | out.truncated) & active
            arrived |= done & out.episode["success"]
            active &= ~done
            if not active.any():
                break
        names = [core.road.nodes[d] for d in destinations[arrived].tolist()]
        assert set(names) == set(SCENARIOS[name].destinations), (name, names)
        assert (turns.sum(1) == 1).all()
        assert len({tuple(r) for r in turns[arrived].tolist()}) >= 2, name


def test_initial_traffic_resembles_highway_envs() -> None:
    """Spawn distributions: roundabout slot by slot (mean and spread of speed and position
    along the lane), intersection vehicle counts and the ego's start, over many draws."""
    n = 400
    core = BatchedDrive(scenario="roundabout", num_envs=n)
    core.seed(0)
    core.reset()
    mine = core.traffic
    ref = gym.make(envs.env_id("roundabout")).unwrapped
    speeds, xs = [], []
    for seed in range(120):
        ref.reset(seed=seed)
        speeds.append([v.speed for v in ref.sim.road.vehicles])
        xs.append(export_positions(ref.sim)[:, 0])
    speeds, xs = np.array(speeds), np.array(xs)
    for slot in range(5):
        for a, b in ((speeds[:, slot], mine.speed[:, slot]), (xs[:, slot], mine.x[:, slot])):
            b = b.numpy()
            se = np.hypot(a.std() / np.sqrt(len(a)), b.std() / np.sqrt(len(b))) + 1e-6
            assert abs(a.mean() - b.mean()) < 4 * se, slot
            assert abs(a.std() - b.std()) < 0.3 * max(a.std(), 0.05) + 1e-6, slot

    core = BatchedDrive(scenario="intersection", num_envs=n)
    core.seed(0)
    core.reset()
    counts = ((core.traffic.kind == IDM).sum(1)).float().numpy()
    ref = gym.make(envs.env_id("intersection")).unwrapped
    ref_counts, ego_s = [], []
    for seed in range(120):
        ref.reset(seed=seed)
        ref_counts.append(len(ref.sim.road.vehicles) - 1)
        ego_s.append(ref.ego.lane.local_coordinates(ref.ego.position)[0])
    se = np.hypot(np.std(ref_counts) / np.sqrt(120), counts.std() / np.sqrt(n))
    assert abs(np.mean(ref_counts) - counts.mean()) < 4 * se
    s, _ = core.road.coordinates_on(
        core.traffic.lane[:, 0], core.traffic.x[:, 0], core.traffic.y[:, 0]
    )
    se = np.hypot(np.std(ego_s) / np.sqrt(120), float(s.std()) / np.sqrt(n))
    assert abs(np.mean(ego_s) - float(s.mean())) < 4 * se


def test_intersection_traffic_leaves_and_arrives() -> None:
    """Vehicles leaving through an exit free their slot; new ones arrive on the approaches
    at highway-env's rate (0.6 per second, unless the spot is taken); the default slots never
    fill up while an episode runs, so no arrival is dropped."""
    core = BatchedDrive(scenario="intersection", num_envs=64)
    core.seed(0)
    core.reset()
    spec = core.traffic_spec
    approaches = {core.road.indexes.index((f"o{i}", f"ir{i}", 0)) for i in range(4)}
    arrivals, fullest = 0, 0
    running = torch.ones(64, dtype=torch.bool)  # episodes not over yet
    for _ in range(15):  # an episode's length
        before = core.traffic.kind.clone()
        out = core.step(torch.ones(64, dtype=torch.long))
        t = core.traffic
        if running.any():
            fullest = max(fullest, int(t.alive.sum(1)[running].max()))
        running &= ~(out.terminated | out.truncated)
        new = (before == EMPTY) & (t.kind == IDM)
        arrivals += int(new.sum())
        assert all(lane in approaches for lane in t.lane[new].tolist())
        s, _ = core.road.coordinates_on(t.lane, t.x, t.y)
        leaving = torch.tensor([a.startswith("il") for a, _, _ in core.road.indexes])[t.lane]
        gone = leaving & (s >= core.road.length[t.lane] - 4 * t.length) & (t.kind == IDM)
        assert not gone.any()
    rate = arrivals / (15 * 64)
    assert fullest < spec.n_slots(), "the default slots filled up: arrivals were dropped"
    assert 0.3 < rate <= spec.settings.spawn_probability + 0.05


def test_intersection_initial_states_are_seeded() -> None:
    """The pool of warmed-up starts is drawn anew after seeding: same seed, same starts."""

    def starts(seed: int) -> torch.Tensor:
        core = BatchedDrive(scenario="intersection", num_envs=8)
        core.seed(seed)
        core.reset()
        core.seed(seed)  # a reseed drops what was drawn ahead
        core.reset()
        return torch.stack([core.traffic.x, core.traffic.y])

    assert torch.equal(starts(3), starts(3))
    assert not torch.equal(starts(3), starts(4))
    assert BATCHED["intersection"].regulated and not BATCHED["roundabout"].regulated


def test_intersection_settings_and_their_limits() -> None:
    """The initial traffic ignores spawn_probability (highway-env spawns it at its own 0.6);
    more initial traffic or arrivals get more slots; a simulation rate below the rules' clock
    is refused before anything runs; the core runs under torch.inference_mode."""
    counts = {}
    for p in (0.0, 1.0):
        core = BatchedDrive(scenario="intersection", num_envs=64, sim={"spawn_probability": p})
        core.seed(0)
        core.reset()
        counts[p] = float((core.traffic.kind == IDM).sum(1).float().mean())
    assert abs(counts[0.0] - counts[1.0]) < 1.0 and counts[0.0] > 3.0, counts
    busy = BatchedDrive(scenario="intersection", sim={"initial_vehicle_count": 50})
    assert busy.traffic_spec.n_slots() >= 50
    with pytest.raises(ConfigError, match="simulation_frequency"):
        BatchedDrive(scenario="intersection", sim={"simulation_frequency": 1})
    with torch.inference_mode():
        core = BatchedDrive(scenario="roundabout", num_envs=4)
        core.reset()
        out = core.step(torch.ones(4, dtype=torch.long))
    assert out.sensors.shape[0] == 4
