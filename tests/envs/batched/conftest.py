import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every batched-simulator test runs on one torch thread (tests/conftest.py)."""
    yield


@pytest.fixture
def lone_ego():
    """highway-env's highway (5 s) emptied but for the ego, set on its lane's centre line at
    30 m/s with 30 m/s its target speed: a state to import into the batched simulator
    (``envs.batched.scenarios.import_state(lone_ego.sim, ...)``)."""
    import gymnasium as gym

    from drive_attention import envs  # noqa: F401  (registers the ids)

    ref = gym.make("DriveAttention/Highway-v0", duration=5.0).unwrapped
    ref.reset(seed=0)
    ego = ref.ego
    ref.sim.road.vehicles = [ego]
    s, _ = ego.lane.local_coordinates(ego.position)
    ego.position, ego.heading = ego.lane.position(s, 0.0), ego.lane.heading_at(s)
    ego.speed = ego.target_speed = 30.0  # [m/s] the top target speed
    ego.speed_index = ego.speed_to_index(30.0)
    yield ref
    ref.close()
