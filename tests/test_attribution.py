"""Attention attribution, the occlusion (faithfulness) check and modality ablations."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical

import envs  # noqa: F401  (registers the ids)
from agent.attribution import (
    Attribution,
    ModalityAblation,
    SB3Probe,
    attention_to_pixels,
    blank_patches,
    class_mass,
    occlusion_test,
    patch_pixels,
)
from envs.contract import CLASS_ID, ROAD_CLASSES

ROAD, VEHICLE = CLASS_ID["road"], CLASS_ID["vehicle"]


def test_class_mass_and_lift_by_hand() -> None:
    # 4x4 frame, 2x2 patches; the top-left patch (half the attention) is all vehicle
    camera_map = np.array([[0.5, 0.1], [0.2, 0.2]])
    labels = np.full((4, 4), ROAD, np.uint8)
    labels[:2, :2] = VEHICLE
    attribution = Attribution()
    row = attribution.add(camera_map, labels)
    assert row["vehicle"] == pytest.approx(0.5) and row["road"] == pytest.approx(0.5)
    summary = attribution.summary()
    assert summary["class_lift"]["vehicle"] == pytest.approx(0.5 / (4 / 16))
    assert summary["class_lift"]["road"] == pytest.approx(0.5 / (12 / 16))
    assert set(summary["class_mass"]) == {"road", "vehicle"}  # classes never present left out

    # one vehicle pixel inside the top-left patch gets a quarter of that patch's mass
    labels = np.full((4, 4), ROAD, np.uint8)
    labels[1, 0] = VEHICLE
    attribution = Attribution()
    attribution.add(camera_map * 3.0, labels)  # the total does not matter: normalised
    summary = attribution.summary()
    assert summary["class_mass"]["vehicle"] == pytest.approx(0.5 / 4)
    assert summary["class_lift"]["vehicle"] == pytest.approx((0.5 / 4) / (1 / 16))


def test_attribution_averages_frames_and_groups_sensors() -> None:
    labels_a = np.full((4, 4), ROAD, np.uint8)
    labels_b = labels_a.copy()
    labels_b[:, :2] = VEHICLE  # left half
    uniform = np.full((2, 2), 0.25)
    attribution = Attribution()
    attribution.add(
        uniform,
        labels_a,
        camera_total=0.6,
        sensor_map=np.array([0.1, 0.2, 0.1]),
        sensor_token_names=("ego", "rays.00", "rays.01"),
    )
    lead = np.zeros((4, 4), bool)
    lead[0, 0] = True
    attribution.add(uniform, labels_b, lead_mask=lead, camera_total=0.2)
    summary = attribution.summary()
    assert summary["class_mass"]["vehicle"] == pytest.approx((0.0 + 0.5) / 2)
    # uniform attention has no preference: lift 1 for every class
    assert summary["class_lift"]["vehicle"] == pytest.approx(1.0)
    assert summary["class_lift"]["road"] == pytest.approx(1.0)
    assert summary["camera_share"] == pytest.approx(0.4)
    assert summary["sensor_group_mass"]["rays"] == pytest.approx(0.75 / 2)
    assert summary["lead_vehicle_mass"] == pytest.approx(1 / 16)
    assert summary["lead_vehicle_lift"] == pytest.approx(1.0)


def test_attribution_normalises_each_frame_before_lead_mass_and_lift() -> None:
    """Maps of any total (a layer's raw weights, a head sum) count as their share per frame."""
    labels = np.full((4, 4), ROAD, np.uint8)
    labels[:, 2:] = VEHICLE  # right half
    lead = np.zeros((4, 4), bool)
    lead[0, 0:2] = True  # two pixels of the top-left patch
    raw = np.array([[3.0, 1.0], [0.0, 0.0]])  # total 4: patch (0, 0) holds 3/4 of the attention
    attribution = Attribution()
    row = attribution.add(
        raw,
        labels,
        lead_mask=lead,
        sensor_map=np.array([1.0, 2.0, 1.0]),
        sensor_token_names=("ego", "rays.00", "rays.01"),
    )
    assert row["vehicle"] == pytest.approx(1 / 4) and row["road"] == pytest.approx(3 / 4)
    summary = attribution.summary()
    # the top-left patch's 3/4 spread over its 4 pixels: 3/16 per pixel, 2 lead pixels
    assert summary["lead_vehicle_mass"] == pytest.approx(6 / 16)
    assert summary["lead_vehicle_lift"] == pytest.approx((6 / 16) / (2 / 16))
    assert summary["class_lift"]["road"] == pytest.approx((3 / 4) / (1 / 2))
    assert summary["sensor_group_mass"] == pytest.approx({"ego": 0.25, "rays": 0.75})
    # a second frame with ten times the raw weight counts the same as the first
    attribution.add(raw * 10, labels, lead_mask=lead)
    assert attribution.summary()["lead_vehicle_mass"] == pytest.approx(6 / 16)


def test_patch_pixels_tile_uneven_frames_and_keep_mass() -> None:
    index = patch_pixels((2, 2), 5, 5)
    assert index[0, 0] == 0 and index[4, 4] == 3 and index[2, 3] == 1 and index[3, 0] == 2
    grid = np.random.default_rng(0).random((8, 8))
    pixels = attention_to_pixels(grid, 70, 90)
    assert pixels.sum() == pytest.approx(grid.sum())
    labels = np.zeros((70, 90), np.int64)
    assert class_mass(pixels, labels, len(ROAD_CLASSES))[0] == pytest.approx(1.0)


def test_blank_patches_blanks_exactly_those_patches() -> None:
    camera = np.full((2, 8, 8, 3), 200, np.uint8)
    out = blank_patches(camera, (4, 4), np.array([[0], [5]]))
    assert (
        (out[0, :2, :2] == 0).all() and (out[0, 2:] == 200).all() and (out[0, :, 2:] == 200).all()
    )
    assert (out[1, 2:4, 2:4] == 0).all() and (out[1] == 0).sum() == 2 * 2 * 3
    assert (camera == 200).all(), "input left untouched"


class PatchProbe:
    """A policy whose action depends on the mean brightness of some camera patches."""

    def __init__(self, weights: np.ndarray, grid: tuple[int, int] = (8, 8)) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float32).reshape(-1)  # per patch
        self.grid = grid

    def outputs(self, obs: dict[str, np.ndarray]):
        camera = torch.as_tensor(obs["camera"], dtype=torch.float32) / 255.0  # (B, H, W, C)
        index = torch.as_tensor(patch_pixels(self.grid, *camera.shape[1:3]))
        onehot = torch.nn.functional.one_hot(index, self.weights.numel()).float()  # (H, W, P)
        feature = torch.einsum("bhwc,hwp,p->b", camera, onehot, self.weights)
        sensors = torch.as_tensor(obs["sensors"], dtype=torch.float32).sum(-1)
        logits = torch.stack([feature + sensors, -feature, sensors], -1)
        return Categorical(logits=logits), feature + sensors


def _frames(batch: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "camera": rng.integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8),
        "sensors": rng.uniform(-1, 1, (batch, 6)).astype(np.float32),
    }


def test_occlusion_ratio_near_one_when_camera_is_ignored() -> None:
    obs = _frames()
    maps = np.random.default_rng(2).random((16, 8, 8))
    result = occlusion_test(PatchProbe(np.zeros((8, 8))), obs, maps)
    assert result["top_kl"] == 0.0 and result["random_kl"] == 0.0
    assert result["occlusion_ratio"] == pytest.approx(1.0)


def test_occlusion_ratio_near_one_for_an_unrelated_map() -> None:
    """A policy that reads every patch alike, explained by a random map: no better than random."""
    obs = _frames(32)
    maps = np.random.default_rng(3).random((32, 8, 8))
    result = occlusion_test(PatchProbe(np.full((8, 8), 0.05)), obs, maps, random_draws=20)
    assert 0.6 < result["occlusion_ratio"] < 1.6


def test_occlusion_ratio_high_when_the_map_shows_the_patch_that_matters() -> None:
    obs = _frames()
    weights = np.zeros((8, 8))
    weights[2, 5] = 30.0
    maps = np.full((16, 8, 8), 0.01)
    maps[:, 2, 5] = 1.0
    result = occlusion_test(PatchProbe(weights), obs, maps)
    assert result["occlusion_ratio"] > 5.0
    assert result["least_kl"] < result["top_kl"]
    assert result["occlusion_ratio_value"] > 5.0


@pytest.mark.parametrize("mode", ["camera_blanked", "sensors_zeroed", "sensor_noise"])
def test_modality_ablation_on_the_real_env(mode: str) -> None:
    plain = gym.make("DriveAttention/Highway-v0")
    ablated = ModalityAblation(gym.make("DriveAttention/Highway-v0"), mode)
    obs, _ = plain.reset(seed=0)
    obs_a, _ = ablated.reset(seed=0)
    assert ablated.observation_space.contains(obs_a)
    if mode == "camera_blanked":
        assert not obs_a["camera"].any() and obs["camera"].any()
        np.testing.assert_array_equal(obs_a["sensors"], obs["sensors"])
    elif mode == "sensors_zeroed":
        assert not obs_a["sensors"].any()
        np.testing.assert_array_equal(obs_a["camera"], obs["camera"])
    else:
        assert 0.05 < np.abs(obs_a["sensors"] - obs["sensors"]).mean() < 0.5
        assert np.abs(obs_a["sensors"]).max() <= 1.0


def test_sb3_probe_on_a_real_policy() -> None:
    from stable_baselines3 import PPO

    from models import ExtractorConfig, attention_from_policy, policy_kwargs

    env = gym.make("DriveAttention/Highway-v0", camera_size=(64, 64))
    names = env.unwrapped.sensor_names
    model = PPO(
        "MultiInputPolicy",
        env,
        n_steps=16,
        batch_size=16,
        policy_kwargs=policy_kwargs(ExtractorConfig(), names),
        device="cpu",
        seed=0,
    )
    obs, _ = env.reset(seed=0)
    batch = {k: np.stack([v, v]) for k, v in obs.items()}
    dist, value = SB3Probe(model).outputs(batch)
    assert dist.probs.shape == (2, 5) and value.shape == (2,)
    maps = attention_from_policy(model, batch).camera_map().numpy()
    result = occlusion_test(SB3Probe(model), batch, maps, random_draws=2)
    assert np.isfinite(result["occlusion_ratio"]) and result["occlusion_ratio"] > 0


def test_cells_follow_the_convolution_stem() -> None:
    """With a cell size, patches tile the top-left of the frame; the rest is in no patch."""
    index = patch_pixels((2, 2), 5, 5, cell=(2, 2))
    assert index[1, 1] == 0 and index[1, 2] == 1 and index[3, 3] == 3
    assert (index[4] == -1).all() and (index[:, 4] == -1).all()
    pixels = attention_to_pixels(np.array([[0.4, 0.1], [0.2, 0.3]]), 5, 5, cell=(2, 2))
    assert pixels[0, 0] == pytest.approx(0.1) and pixels[4, 4] == 0.0
    assert pixels.sum() == pytest.approx(1.0)
    camera = np.full((1, 5, 5, 3), 9, np.uint8)
    out = blank_patches(camera, (2, 2), np.array([[3]]), cell=(2, 2))
    assert (out[0, 2:4, 2:4] == 0).all() and (out == 0).sum() == 12


def test_lift_counts_area_only_where_attention_can_fall() -> None:
    """A 5x5 frame with 2x2-pixel patches: the last row and column are in no patch, so their
    pixels count neither for mass nor for area; uniform attention then has lift 1 everywhere."""
    labels = np.full((5, 5), ROAD, np.uint8)
    labels[4, :] = VEHICLE  # only outside the grid
    labels[0, 0] = VEHICLE  # and one pixel inside
    attribution = Attribution()
    attribution.add(np.full((2, 2), 0.25), labels, cell=(2, 2))
    summary = attribution.summary()
    assert summary["class_share"]["vehicle"] == pytest.approx(1 / 16)
    assert summary["class_lift"]["vehicle"] == pytest.approx(1.0)
    assert summary["class_lift"]["road"] == pytest.approx(1.0)


class _CameraReader:
    """Slows down when its camera is black, else keeps lane and speed: what each modality
    ablation should make of it is known without running it."""

    name = "camera_reader"

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> int:
        return 4 if obs["camera"].max() == 0 else 1

    def attention(self, obs: dict[str, np.ndarray]) -> None:
        return None


class _Constant(_CameraReader):
    def __init__(self, action: int) -> None:
        self.action = action

    def act(self, obs: dict[str, np.ndarray]) -> int:
        return self.action


def test_modality_ablations_give_the_figures_of_the_policy_they_leave() -> None:
    """camera_blanked turns the camera reader into a constant "slower" driver; the sensor
    ablations leave it the idle driver: their reports must be those policies' reports."""
    from agent.attention_report import evaluate_ablations
    from agent.build import make_env
    from agent.evaluation import evaluate

    env_id, kwargs, episodes, seed = "DriveAttention/Highway-v0", {"duration": 6.0}, 2, 11
    reports = evaluate_ablations(_CameraReader(), env_id, kwargs, episodes, seed)

    def reference(action: int) -> dict:
        env = make_env(env_id, kwargs)
        try:
            return evaluate(env, _Constant(action), episodes, seed, env_id=env_id).summary()
        finally:
            env.close()

    slower, idle = reference(4), reference(1)
    assert slower["mean_length"] != idle["mean_length"] or slower["mean_speed"] != pytest.approx(
        idle["mean_speed"]
    ), "the two reference drivers must differ for this test to mean anything"
    expected = {"camera_blanked": slower, "sensors_zeroed": idle, "sensor_noise": idle}
    for mode, (report, _) in reports.items():
        got = report.summary()
        for key in ("mean_return", "success_rate", "collision_rate", "mean_speed", "mean_length"):
            assert got[key] == pytest.approx(expected[mode][key]), (mode, key)
