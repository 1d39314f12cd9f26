"""Attention attribution, the occlusion (faithfulness) check and modality ablations."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Normal

from drive_attention import envs  # noqa: F401  (registers the ids)
from drive_attention.agent.evaluate.attribution import (
    Attribution,
    ModalityAblation,
    SB3Probe,
    attention_to_pixels,
    blank_patches,
    class_mass,
    occlusion_test,
    patch_pixels,
)
from drive_attention.envs.contract import CLASS_ID, ROAD_CLASSES

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

    from drive_attention.models import ExtractorConfig, attention_from_policy, policy_kwargs

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
    from drive_attention.agent.evaluate.attention_report import evaluate_ablations
    from drive_attention.agent.evaluate.rollout import evaluate
    from drive_attention.agent.run.build import make_env

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


# ----------------------------------------------------------------------------- worked by hand
def test_patch_pixels_with_non_square_cells() -> None:
    """2x3-pixel cells on a 4x6 frame: patch (i, j) covers rows 2i..2i+1, columns 3j..3j+2."""
    index = patch_pixels((2, 2), 4, 6, cell=(2, 3))
    expected = np.array(
        [
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [2, 2, 2, 3, 3, 3],
            [2, 2, 2, 3, 3, 3],
        ]
    )
    np.testing.assert_array_equal(index, expected)


def test_attention_to_pixels_one_pixel_per_patch_is_the_map_itself() -> None:
    grid = np.array([[0.4, 0.1], [0.2, 0.3]])
    np.testing.assert_allclose(attention_to_pixels(grid, 2, 2), grid)
    np.testing.assert_allclose(attention_to_pixels(grid, 2, 2, cell=(1, 1)), grid)


def test_attention_to_pixels_with_patches_past_the_frame_edge() -> None:
    """A 3x3 grid of 2x2 cells on a 4x4 frame: the last patch row and column hold no pixels;
    the four patches inside spread their weight over their four pixels each."""
    grid = np.arange(9, dtype=float).reshape(3, 3)
    pixels = attention_to_pixels(grid, 4, 4, cell=(2, 2))
    expected = np.repeat(np.repeat(np.array([[0.0, 1.0], [3.0, 4.0]]) / 4, 2, 0), 2, 1)
    np.testing.assert_allclose(pixels, expected)


@pytest.mark.parametrize(
    ("grid", "frame", "cell", "rows", "cols"),
    [
        # a 4x4 grid on an 8x8 frame: patch (0, 2) is rows 0-1, columns 4-5
        ((4, 4), (8, 8), None, slice(0, 2), slice(4, 6)),
        # a 2x4 grid on a 6x8 frame (3x2-pixel patches): rows 0-2, columns 4-5
        ((2, 4), (6, 8), None, slice(0, 3), slice(4, 6)),
        # a 3x4 grid of 2x2-pixel cells on a 7x9 frame (the last row and column in no patch)
        ((3, 4), (7, 9), (2, 2), slice(0, 2), slice(4, 6)),
    ],
)
def test_a_patch_off_the_diagonal_lands_in_its_own_row_and_column(
    grid: tuple[int, int],
    frame: tuple[int, int],
    cell: tuple[int, int] | None,
    rows: slice,
    cols: slice,
) -> None:
    """All attention on patch (0, 2), the first patch row's third column: it is spread over
    exactly that patch's pixels, in the frame's top rows, two patches in from the left; a map
    read transposed would put it in the left columns, lower down."""
    grid_map = np.zeros(grid)
    grid_map[0, 2] = 1.0
    expected = np.zeros(frame)
    expected[rows, cols] = 1.0 / expected[rows, cols].size
    np.testing.assert_allclose(attention_to_pixels(grid_map, *frame, cell), expected)
    index = patch_pixels(grid, *frame, cell)
    assert (index[rows, cols] == 2).all() and (index == 2).sum() == expected[rows, cols].size
    # the patch one row down, first column: row-major index gw
    down = np.zeros(frame, bool)
    down[rows.stop : 2 * rows.stop, 0 : cols.stop - cols.start] = True
    assert (index[down] == grid[1]).all() and (index == grid[1]).sum() == down.sum()


def test_empty_attribution_summary() -> None:
    assert Attribution().summary() == {"frames": 0, "class_mass": {}, "class_lift": {}}


def test_lead_vehicle_lift_averages_frames_that_show_one() -> None:
    """Uniform attention over three frames: lead vehicle of 2 pixels, of 4 pixels, and none.
    The frame without one is left out of the lead figures, and lift stays 1 (no preference)."""
    uniform = np.full((2, 2), 0.25)
    labels = np.full((4, 4), ROAD, np.uint8)
    small, large = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    small[0, :2] = True
    large[2:, 2:] = True
    attribution = Attribution()
    attribution.add(uniform, labels, lead_mask=small)
    attribution.add(uniform, labels, lead_mask=large)
    attribution.add(uniform, labels, lead_mask=np.zeros((4, 4), bool))
    summary = attribution.summary()
    assert summary["frames"] == 3
    assert summary["lead_vehicle_frames"] == 2
    assert summary["lead_vehicle_mass"] == pytest.approx((2 / 16 + 4 / 16) / 2)
    assert summary["lead_vehicle_lift"] == pytest.approx(1.0)


def test_attribution_keeps_each_frames_row() -> None:
    labels = np.full((4, 4), ROAD, np.uint8)
    labels[:2, :2] = VEHICLE
    attribution = Attribution()
    first = attribution.add(np.array([[0.5, 0.1], [0.2, 0.2]]), labels)
    second = attribution.add(np.array([[0.0, 1.0], [0.0, 0.0]]), labels)
    assert attribution.per_frame == [first, second]
    assert second["vehicle"] == 0.0 and second["road"] == pytest.approx(1.0)
    assert set(first) == set(ROAD_CLASSES)


def test_sensor_groups_use_the_name_before_the_first_dot() -> None:
    """The env's sensor names (``rays.00.distance``): a group is everything up to the first dot."""
    names = (
        "ego.speed",
        "rays.00.distance",
        "rays.00.closing_speed",
        "rays.01.distance",
        "route.x",
    )
    attribution = Attribution()
    labels = np.full((4, 4), ROAD, np.uint8)
    attribution.add(
        np.full((2, 2), 0.25),
        labels,
        sensor_map=np.array([1.0, 1, 1, 1, 4]),
        sensor_token_names=names,
    )
    summary = attribution.summary()
    assert summary["sensor_group_mass"] == pytest.approx(
        {"ego": 1 / 8, "rays": 3 / 8, "route": 1 / 2}
    )


def test_sensor_names_without_a_sensor_map_add_nothing() -> None:
    attribution = Attribution()
    labels = np.full((4, 4), ROAD, np.uint8)
    attribution.add(np.full((2, 2), 0.25), labels, sensor_token_names=("ego.speed", "rays.00"))
    assert attribution.summary()["sensor_group_mass"] == {}


# the four patches of a 2x2 grid of 2x2-pixel cells (the same pixels on a 4x4 or a 5x5 frame)
REGIONS = [
    (slice(0, 2), slice(0, 2)),
    (slice(0, 2), slice(2, 4)),
    (slice(2, 4), slice(0, 2)),
    (slice(2, 4), slice(2, 4)),
]


class LinearProbe:
    """A policy linear in the mean brightness of its four patches: action means (or logits)
    ``W @ brightness``, value ``v @ brightness``. On a white frame, blanking patch ``p`` moves
    the means by ``W[:, p]`` and the value by ``v[p]``."""

    def __init__(self, w: np.ndarray, v: np.ndarray, categorical: bool = False) -> None:
        self.w = torch.as_tensor(w, dtype=torch.float64)
        self.v = torch.as_tensor(v, dtype=torch.float64)
        self.categorical = categorical

    def outputs(self, obs: dict[str, np.ndarray]):
        camera = obs["camera"].astype(np.float64) / 255.0
        brightness = torch.as_tensor(
            np.stack([camera[:, r, c].mean(axis=(1, 2, 3)) for r, c in REGIONS], -1)
        )  # (B, 4)
        means = brightness @ self.w.T  # (B, A)
        if self.categorical:
            return Categorical(logits=means), brightness @ self.v
        return Normal(means, torch.ones_like(means)), brightness @ self.v


# columns: what blanking each patch does to the 3 action means. With unit-variance normals the
# KL is |dmean|^2 / 2: 0.5, 1.0, 0.0, 2.0 for patches 0..3
W = np.array([[1.0, 1.0, 0.0, 2.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
V = np.array([0.25, 0.0, 1.0, 0.5])
# frame 0 ranks patches 0 > 1 > 2 > 3, frame 1 ranks 1 > 2 > 3 > 0
MAPS = np.array([[[4.0, 3.0], [2.0, 1.0]], [[1.0, 4.0], [3.0, 2.0]]])


def _white(size: int, batch: int = 2) -> dict[str, np.ndarray]:
    return {
        "camera": np.full((batch, size, size, 3), 255, np.uint8),
        "sensors": np.zeros((batch, 2), np.float32),
    }


@pytest.mark.parametrize(("size", "cell"), [(4, None), (5, (2, 2))])
def test_occlusion_figures_by_hand_for_independent_action_dimensions(size, cell) -> None:
    result = occlusion_test(LinearProbe(W, V), _white(size), MAPS, fraction=0.25, cell=cell)
    assert result["patches_blanked"] == 1
    # top: patch 0 in frame 0, patch 1 in frame 1; least: patch 3 in frame 0, patch 0 in frame 1
    assert result["top_kl"] == pytest.approx((0.5 + 1.0) / 2)
    assert result["least_kl"] == pytest.approx((2.0 + 0.5) / 2)
    assert result["top_value_change"] == pytest.approx((0.25 + 0.0) / 2)
    assert result["least_value_change"] == pytest.approx((0.5 + 0.25) / 2)
    floor = 1e-6
    assert result["occlusion_ratio"] == pytest.approx(
        (result["top_kl"] + floor) / (result["random_kl"] + floor)
    )
    assert result["occlusion_ratio_value"] == pytest.approx(
        (result["top_value_change"] + floor) / (result["random_value_change"] + floor)
    )


def _categorical_kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    p = np.exp(p_logits) / np.exp(p_logits).sum()
    q = np.exp(q_logits) / np.exp(q_logits).sum()
    return float((p * np.log(p / q)).sum())


def test_occlusion_kl_is_the_mean_over_frames_for_a_discrete_policy() -> None:
    result = occlusion_test(LinearProbe(W, V, categorical=True), _white(4), MAPS, fraction=0.25)
    base = W.sum(1)  # logits of the white frame
    top = (_categorical_kl(base, base - W[:, 0]) + _categorical_kl(base, base - W[:, 1])) / 2
    least = (_categorical_kl(base, base - W[:, 3]) + _categorical_kl(base, base - W[:, 0])) / 2
    assert result["top_kl"] == pytest.approx(top)
    assert result["least_kl"] == pytest.approx(least)


def test_occlusion_random_draws_when_every_patch_counts_alike() -> None:
    """Each patch moves one action mean by 1 and the value by 0.5: any k patches give the same
    change, so the random figures are known and the ratios are 1."""
    w = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    v = np.full(4, 0.5)
    result = occlusion_test(LinearProbe(w, v), _white(4), MAPS, fraction=0.5, random_draws=3)
    assert result["patches_blanked"] == 2
    for name in ("top", "random", "least"):
        assert result[f"{name}_kl"] == pytest.approx(2 * 0.5)
        assert result[f"{name}_value_change"] == pytest.approx(2 * 0.5)
    assert result["occlusion_ratio"] == pytest.approx(1.0)
    assert result["occlusion_ratio_value"] == pytest.approx(1.0)


def test_occlusion_blanks_at_least_one_patch_and_a_fraction_of_them() -> None:
    probe = LinearProbe(W, V)
    assert occlusion_test(probe, _white(4), MAPS, fraction=0.1)["patches_blanked"] == 1
    assert occlusion_test(probe, _white(4), MAPS, fraction=0.75)["patches_blanked"] == 3
    obs = _frames(2)
    maps = np.random.default_rng(0).random((2, 8, 8))
    result = occlusion_test(PatchProbe(np.zeros((8, 8))), obs, maps, fraction=0.1, random_draws=1)
    assert result["patches_blanked"] == 6  # round(0.1 * 64)


def test_least_attended_patches_are_only_the_bottom_k() -> None:
    """The probe reads only patch 2, ranked second and third of four: blanking the least attended
    patch (3, then 0) leaves it unchanged."""
    w = np.zeros((3, 4))
    w[0, 2] = 1.0
    result = occlusion_test(LinearProbe(w, np.zeros(4)), _white(4), MAPS, fraction=0.25)
    assert result["least_kl"] == 0.0 and result["top_kl"] == 0.0


def test_occlusion_value_ratio_is_one_when_nothing_moves() -> None:
    obs = _frames(4)
    maps = np.random.default_rng(2).random((4, 8, 8))
    result = occlusion_test(PatchProbe(np.zeros((8, 8))), obs, maps, random_draws=1)
    assert result["top_value_change"] == 0.0 and result["random_value_change"] == 0.0
    assert result["least_value_change"] == 0.0
    assert result["occlusion_ratio_value"] == pytest.approx(1.0)


def test_occlusion_random_draws_follow_the_seed() -> None:
    """The random baseline is reproducible for a seed and changes with it."""
    probe = LinearProbe(W, V)
    maps = np.repeat(MAPS, 4, 0)
    runs = [
        occlusion_test(probe, _white(4, 8), maps, fraction=0.25, seed=s, random_draws=2)
        for s in (7, 7, 8)
    ]
    assert runs[0] == runs[1]
    assert runs[0]["random_kl"] != runs[2]["random_kl"]


def test_occlusion_breaks_ties_in_row_major_order() -> None:
    """Equally attended patches are taken top-left first (a stable order, the same on every
    machine): with half of the 64 patches tied at the top, the top 6 are patches 0, 2, .., 10."""
    maps = np.zeros((1, 8, 8))
    maps.reshape(1, -1)[:, ::2] = 1.0
    weights = np.zeros((8, 8))
    weights.reshape(-1)[8] = 30.0  # the fifth of the tied patches
    result = occlusion_test(PatchProbe(weights), _frames(1), maps, fraction=0.1, random_draws=1)
    assert result["patches_blanked"] == 6
    assert result["top_kl"] > 0.0


class _FakeEnv(gym.Env):
    """Sensors at their bounds and the middle, a grey camera."""

    observation_space = gym.spaces.Dict(
        {
            "camera": gym.spaces.Box(0, 255, (4, 4, 3), np.uint8),
            "sensors": gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
        }
    )
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return self._obs(), {}

    def step(self, action):
        return self._obs(), 0.0, False, False, {}

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "camera": np.full((4, 4, 3), 128, np.uint8),
            "sensors": np.array([-1.0, 0.0, 1.0], np.float32),
        }


def test_sensor_noise_stays_in_the_sensor_range() -> None:
    env = ModalityAblation(_FakeEnv(), "sensor_noise", noise_std=5.0, seed=0)
    sensors = np.stack([env.step(0)[0]["sensors"] for _ in range(50)])
    assert sensors.min() == -1.0 and sensors.max() == 1.0
    assert sensors.dtype == np.float32
    assert (np.abs(sensors) < 1.0).any()  # noise, not a saturated constant


def test_sensor_noise_follows_the_seed() -> None:
    def run(seed: int) -> np.ndarray:
        env = ModalityAblation(_FakeEnv(), "sensor_noise", noise_std=0.1, seed=seed)
        return np.stack([env.reset()[0]["sensors"], env.step(0)[0]["sensors"]])

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_unknown_ablation_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="camera_blanked, sensors_zeroed, sensor_noise"):
        ModalityAblation(_FakeEnv(), "lidar_off")  # type: ignore[arg-type]


class _StubPolicy:
    """An SB3-like actor-critic policy with known outputs: logits = sensors, value = sum."""

    def __init__(self) -> None:
        self.training = True
        self.modes: list[bool] = []

    def set_training_mode(self, mode: bool) -> None:
        self.modes.append(mode)
        self.training = mode

    def obs_to_tensor(self, obs):
        return torch.as_tensor(obs["sensors"]), True

    def get_distribution(self, obs_tensor):
        class _Wrapped:
            distribution = Categorical(logits=obs_tensor)

        return _Wrapped()

    def predict_values(self, obs_tensor):
        return obs_tensor.sum(-1, keepdim=True)


class _StubModel:
    def __init__(self) -> None:
        self.policy = _StubPolicy()


@pytest.mark.parametrize("wrap", [False, True])
def test_sb3_probe_takes_a_policy_or_a_model(wrap: bool) -> None:
    model = _StubModel()
    probe = SB3Probe(model if wrap else model.policy)
    obs = {"sensors": np.array([[0.0, np.log(3.0)], [1.0, 2.0]], np.float32)}
    dist, value = probe.outputs(obs)
    np.testing.assert_allclose(dist.probs[0].numpy(), [0.25, 0.75], rtol=1e-6)
    np.testing.assert_allclose(value.numpy(), [np.log(3.0), 3.0], rtol=1e-6)
    assert model.policy.modes == [False, True] and model.policy.training
