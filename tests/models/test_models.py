"""Tests of models/: tokenizers, the attention encoder, the baselines and the SB3 adapters."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from safetensors.torch import load_file, save_file
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.logger import Logger
from torch.testing import assert_close

from drive_attention.envs.configuration import ConfigError, build
from drive_attention.models import (
    ATTENTION_NAMES,
    EXTRACTOR_NAMES,
    AttentionMaps,
    CameraTokenizer,
    CrossModalExtractor,
    ExtractorConfig,
    SensorLayout,
    SensorTokenizer,
    attention_from_policy,
    make_extractor,
    policy_kwargs,
)

RAY_QUANTITIES = ("distance", "closing_speed")
NAMES: tuple[str, ...] = (
    "ego.speed",
    "ego.heading",
    *(f"rays.{k:02d}.{q}" for k in range(4) for q in RAY_QUANTITIES),
    "route.exit_left",
    "route.exit_right",
)
NO_RAYS = ("ego.speed", "ego.heading", "ego.lateral_offset", "route.exit_left", "lane.left")
ONLY_RAYS = tuple(f"rays.{k:02d}.distance" for k in range(7))
SMALL = {"dim": 16, "heads": 2, "features_dim": 24}


def contract_space(camera_shape: tuple[int, int, int] = (40, 40, 3), num_sensors: int = len(NAMES)):
    return spaces.Dict(
        camera=spaces.Box(0, 255, camera_shape, np.uint8),
        sensors=spaces.Box(-np.inf, np.inf, (num_sensors,), np.float32),
    )


def sample_obs(space: spaces.Dict, batch: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch as SB3 hands it to the extractor (float tensors, camera in the space's layout)."""
    rng = np.random.default_rng(seed)
    camera = rng.integers(0, 256, (batch, *space["camera"].shape), dtype=np.uint8)
    sensors = rng.uniform(-1, 1, (batch, *space["sensors"].shape)).astype(np.float32)
    return {"camera": torch.as_tensor(camera).float(), "sensors": torch.as_tensor(sensors)}


def make(name: str, space=None, names=NAMES, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = ExtractorConfig(name=name, **{**SMALL, **overrides})
    return make_extractor(space or contract_space(num_sensors=len(names)), config, names)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """These tensors are small: one thread (tests/conftest.py) is faster."""
    yield


# --- configuration ---------------------------------------------------------------------------


def test_config_builds_from_yaml_mapping():
    config = build(ExtractorConfig, {"name": "late_fusion", "dim": 48, "heads": 4}, prefix="model.")
    assert config.name == "late_fusion" and config.dim == 48 and config.layers == 2
    assert ExtractorConfig().name == "attention" and set(EXTRACTOR_NAMES) >= set(ATTENTION_NAMES)


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"dim": 30, "heads": 4}, "model.dim"),
        ({"layers": 0}, "model.layers"),
        ({"patch": 7}, "model.patch"),
        ({"modality_dropout_camera": 1.5}, "model.modality_dropout_camera"),
        ({"modality_dropout_camera": 0.6, "modality_dropout_sensors": 0.6}, "model.modality"),
        ({"name": "combined", "separate_critic_query": True}, "model.separate_critic_query"),
        ({"name": "transformer"}, "model.name"),
        ({"layer": 3}, "did you mean 'layers'"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(mapping, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        build(ExtractorConfig, mapping, prefix="model.")


# --- tokenizers ------------------------------------------------------------------------------


def test_sensor_layout_reads_groups_and_rays_from_names():
    layout = SensorLayout.from_names(NAMES)
    assert layout.token_names == ("ego", "rays.00", "rays.01", "rays.02", "rays.03", "route")
    assert layout.type_names == ("ego", "rays", "route")
    assert layout.index[0] == (0, 1)  # ego.speed, ego.heading
    assert layout.index[2] == (
        NAMES.index("rays.01.distance"),
        NAMES.index("rays.01.closing_speed"),
    )
    assert layout.index[5] == (NAMES.index("route.exit_left"), NAMES.index("route.exit_right"))
    assert layout.item_slots == (-1, 0, 1, 2, 3, -1)


def test_sensor_layout_sectors_and_missing_quantities():
    names = [*ONLY_RAYS, "rays.07.closing_speed"]  # ray 7 has no distance
    layout = SensorLayout.from_names(names, rays_per_token=3)
    assert layout.token_names == ("rays.00-02", "rays.03-05", "rays.06-07")
    # Slots: (ray, quantity) for 3 rays x (distance, closing_speed); -1 where absent.
    assert layout.index[0] == (0, -1, 1, -1, 2, -1)
    assert layout.index[2] == (6, -1, -1, 7, -1, -1)


def test_sensor_layout_gives_one_token_per_object_of_the_radar_list():
    from drive_attention.envs.scenarios import OBJECT_QUANTITIES, ScenarioConfig, sensor_names

    names = sensor_names(ScenarioConfig(n_objects=3, n_rays=4))
    layout = SensorLayout.from_names(names, rays_per_token=2)
    assert layout.token_names == ("ego", "rays.00-01", "rays.02-03", "objects.00",
                                  "objects.01", "objects.02")  # fmt: skip
    assert layout.item_slots == (-1, 0, 1, 2, 3, 4)
    obj = layout.token_names.index("objects.01")
    width = len(OBJECT_QUANTITIES)
    assert layout.index[obj][:width] == tuple(
        names.index(f"objects.01.{q}") for q in OBJECT_QUANTITIES
    )
    assert set(layout.index[obj][width:]) <= {-1}
    # each object token moves with its own row only
    torch.manual_seed(0)
    tokenizer = SensorTokenizer(layout, len(names), dim=8)
    sensors = torch.rand(2, len(names))
    changed = sensors.clone()
    changed[:, names.index("objects.02.vx")] += 1.0
    moved = (tokenizer(changed) - tokenizer(sensors)).abs().amax(dim=(0, 2)) > 0
    assert moved.tolist() == [False, False, False, False, False, True]
    # other groups with numbered names (CARLA's route points) stay one token
    carla = SensorLayout.from_names(["ego.speed", "route.00.x", "route.00.y", "route.01.x"])
    assert carla.token_names == ("ego", "route") and carla.item_slots == (-1, -1)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["objects.00.x", "objects.near"], "objects.<k>.<quantity>"),
        (["ego.speed", "ego.speed"], "unique"),
        (["rays.00.distance", "rays.count"], "rays.<k>.<quantity>"),
        ([], "sensor_names"),
    ],
)
def test_sensor_layout_errors_say_how_to_fix(names, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        SensorLayout.from_names(names)


def test_sensor_tokens_read_only_their_own_elements():
    layout = SensorLayout.from_names(NAMES, rays_per_token=2)
    torch.manual_seed(0)
    tokenizer = SensorTokenizer(layout, len(NAMES), dim=8)
    sensors = torch.rand(3, len(NAMES))
    base = tokenizer(sensors)  # (3, S, 8)
    for i, name in enumerate(NAMES):
        changed = sensors.clone()
        changed[:, i] += 1.0
        moved = (tokenizer(changed) - base).abs().amax(dim=(0, 2)) > 0  # (S,)
        owners = [t for t, slots in enumerate(layout.index) if i in slots]
        assert moved.nonzero().flatten().tolist() == owners, name


def test_camera_tokenizer_normalises_inside():
    torch.manual_seed(0)
    tokenizer = CameraTokenizer(3, 32, 48, dim=8, patch=8, stem_channels=4)
    frames = torch.randint(0, 256, (2, 3, 32, 48)).float()
    x = tokenizer.merge(tokenizer.activation(tokenizer.patchify(frames / 127.5 - 1.0)))
    expected = x.flatten(2).transpose(1, 2) + (
        tokenizer.row_embedding + tokenizer.col_embedding
    ).flatten(0, 1)
    assert tokenizer.grid == (4, 6)
    assert_close(tokenizer(frames), expected, atol=1e-5, rtol=1e-5)


# --- shapes and attention maps ---------------------------------------------------------------

LAYOUTS = [
    pytest.param((40, 40, 3), NAMES, id="40px-hwc"),
    pytest.param((3, 48, 64), NO_RAYS, id="48x64-chw-no-rays"),
    pytest.param((64, 64, 6), ONLY_RAYS, id="64px-framestack2-only-rays"),
]


@pytest.mark.parametrize(("camera_shape", "names"), LAYOUTS)
@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_shapes(name, camera_shape, names):
    space = contract_space(camera_shape, len(names))
    extractor = make(name, space, names)
    obs = sample_obs(space, batch=3)
    features = extractor(obs)
    assert features.shape == (3, extractor.features_dim)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
    # Raw uint8 frames work as well (SB3 hands "combined" frames divided by 255).
    uint8_obs = {**obs, "camera": obs["camera"].to(torch.uint8)}
    scale = 255.0 if name == "combined" else 1.0
    assert_close(extractor(uint8_obs), extractor({**obs, "camera": obs["camera"] / scale}))
    if name not in ATTENTION_NAMES:
        return
    _, maps = extractor(obs, return_attention=True)
    hwc = camera_shape[-1] < camera_shape[0]
    height, width = camera_shape[:2] if hwc else camera_shape[1:]
    grid = (height // 8, width // 8) if name != "sensors_only" else (0, 0)
    layout = SensorLayout.from_names(names, ExtractorConfig().rays_per_token)
    token_names = layout.token_names if name != "camera_only" else ()
    layers, heads, sensors = 2, SMALL["heads"], len(token_names)
    assert maps.grid == grid and maps.sensor_token_names == token_names
    assert maps.query_camera.shape == (3, layers, heads, *grid)
    assert maps.query_sensors.shape == (3, layers, heads, sensors)
    assert maps.sensor_to_camera.shape == (3, layers, heads, sensors, *grid)
    n = grid[0] * grid[1] + sensors
    assert maps.weights.shape == (3, layers, heads, n + 1, n)
    assert maps.camera_map().shape == (3, *grid) and maps.sensor_map(0).shape == (3, sensors)


@pytest.mark.parametrize("name", ATTENTION_NAMES)
def test_attention_rows_sum_to_one(name):
    extractor = make(name)
    _, maps = extractor(sample_obs(contract_space()), return_attention=True)
    ones = torch.ones(maps.weights.shape[:-1])
    assert_close(maps.weights.sum(-1), ones)
    query_total = maps.query_camera.flatten(3).sum(-1) + maps.query_sensors.sum(-1)
    assert_close(query_total, ones[..., -1])
    # each layer's camera mass is what its query row, heads averaged, leaves for the sensors
    n_camera = maps.grid[0] * maps.grid[1]
    for layer in range(maps.num_layers):
        on_sensors = maps.weights[:, layer, :, -1, n_camera:].sum(-1).mean(-1)  # (B,)
        assert_close(maps.camera_mass(layer=layer), 1 - on_sensors)
    if name == "attention":  # the sensor rows' camera part is their row of the full matrix
        n_camera = maps.grid[0] * maps.grid[1]
        rows = maps.weights[:, :, :, n_camera:-1, :n_camera]
        assert_close(maps.sensor_to_camera.flatten(4), rows)
        assert (maps.sensor_to_camera.flatten(4).sum(-1) < 1).all()  # the rest is on sensors


@pytest.mark.parametrize("name", ATTENTION_NAMES)
def test_sdpa_path_equals_explicit_path(name):
    extractor = make(name, dim=32, heads=4, layers=3)
    obs = sample_obs(contract_space(), batch=7)
    fast = extractor(obs)
    explicit, _ = extractor(obs, return_attention=True)
    assert_close(fast, explicit, atol=1e-5, rtol=1e-5)


def blanked(obs, camera: bool = False, sensors: bool = False):
    return {
        "camera": torch.zeros_like(obs["camera"]) if camera else obs["camera"],
        "sensors": torch.zeros_like(obs["sensors"]) if sensors else obs["sensors"],
    }


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_no_nan_with_blank_or_saturated_inputs(name):
    extractor = make(name, modality_dropout_camera=0.5, modality_dropout_sensors=0.5)
    obs = sample_obs(contract_space(), batch=4)
    cases = [
        blanked(obs, camera=True),
        blanked(obs, sensors=True),
        blanked(obs, camera=True, sensors=True),
        {"camera": torch.full_like(obs["camera"], 255.0), "sensors": obs["sensors"] * 1e3},
    ]
    for training in (False, True):
        extractor.train(training)
        for case in cases:
            assert torch.isfinite(extractor(case)).all()
            if name in ATTENTION_NAMES:
                _, maps = extractor(case, return_attention=True)
                assert torch.isfinite(maps.weights).all()


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_every_parameter_gets_a_gradient(name):
    extractor = make(name)
    extractor(sample_obs(contract_space(), batch=6)).square().mean().backward()
    for param_name, param in extractor.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, f"{param_name} got an all-zero gradient"


# --- determinism, round trips, layouts -------------------------------------------------------


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_deterministic_under_a_seed(name):
    obs = sample_obs(contract_space())
    first, second = (make(name, modality_dropout_camera=0.3, seed=7) for _ in range(2))
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), key
    torch.manual_seed(1)
    out_first = first(obs)  # training mode: modality dropout draws from torch's generator
    torch.manual_seed(1)
    assert torch.equal(out_first, second(obs))
    assert not torch.equal(make(name, seed=8).eval()(obs), first.eval()(obs))


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_safetensors_round_trip(name, tmp_path):
    original = make(name, seed=0).eval()
    path = tmp_path / "extractor.safetensors"
    save_file(original.state_dict(), str(path))
    restored = make(name, seed=1).eval()
    obs = sample_obs(contract_space())
    assert not torch.equal(restored(obs), original(obs))
    restored.load_state_dict(load_file(str(path)))
    assert torch.equal(restored(obs), original(obs))
    if name in ATTENTION_NAMES:
        assert_close(
            restored(obs, return_attention=True)[1].weights,
            original(obs, return_attention=True)[1].weights,
        )


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_channel_last_and_channel_first_spaces_agree(name):
    hwc, chw = contract_space((40, 48, 6)), contract_space((6, 40, 48))
    last, first = make(name, hwc).eval(), make(name, chw).eval()
    obs = sample_obs(hwc)
    transposed = {**obs, "camera": obs["camera"].permute(0, 3, 1, 2)}
    assert_close(last(obs), first(transposed))


# --- modality dropout ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["attention", "late_fusion", "combined"])
def test_modality_dropout_blanks_one_modality_in_training_only(name):
    obs = sample_obs(contract_space(), batch=300)
    camera_off = make(name, modality_dropout_camera=1.0).eval()
    expected = camera_off(blanked(obs, camera=True))
    assert not torch.equal(camera_off(obs), expected)  # eval: no dropout
    assert_close(camera_off.train()(obs), expected)
    sensors_off = make(name, modality_dropout_sensors=1.0)
    assert_close(sensors_off(obs), sensors_off.eval()(blanked(obs, sensors=True)))
    half = make(name, modality_dropout_camera=0.3, modality_dropout_sensors=0.3)
    blank_camera = half.eval()(blanked(obs, camera=True))
    zero_sensors = half(blanked(obs, sensors=True))
    intact = half(obs)
    torch.manual_seed(3)
    out = half.train()(obs)
    lost_camera = torch.isclose(out, blank_camera).all(1)
    lost_sensors = torch.isclose(out, zero_sensors).all(1)
    kept = torch.isclose(out, intact).all(1)
    assert (lost_camera.int() + lost_sensors.int() + kept.int() == 1).all()  # one fate each
    assert 60 <= lost_camera.sum() <= 120 and 60 <= lost_sensors.sum() <= 120  # 30 % of 300


# --- SB3 integration -------------------------------------------------------------------------


class FakeContractEnv(gym.Env):
    """A tiny env with the contract's observation space and sensor names, for SB3 wiring."""

    def __init__(self, continuous: bool = False) -> None:
        self.sensor_names = NAMES
        self.observation_space = contract_space((40, 40, 3))
        self.action_space = (
            spaces.Box(-1, 1, (2,), np.float32) if continuous else spaces.Discrete(3)
        )
        self.steps = 0

    def observation(self) -> dict[str, np.ndarray]:
        camera = self.np_random.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        sensors = self.np_random.uniform(-1, 1, len(NAMES)).astype(np.float32)
        return {"camera": camera, "sensors": sensors}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return self.observation(), {}

    def step(self, action):
        self.steps += 1
        reward = float(self.observation()["sensors"][0])
        return self.observation(), reward, False, self.steps >= 8, {}


def test_policy_kwargs_are_plain_data():
    for name in EXTRACTOR_NAMES:
        kwargs = policy_kwargs(ExtractorConfig(name=name), list(NAMES))
        extractor_kwargs = kwargs["features_extractor_kwargs"]
        json.dumps(extractor_kwargs)  # plain data only
        assert extractor_kwargs["sensor_names"] == NAMES
        assert kwargs["normalize_images"] is (name == "combined")
        assert "share_features_extractor" not in kwargs
    separate = policy_kwargs(ExtractorConfig(separate_critic_query=True), NAMES)
    assert separate["share_features_extractor"] is False
    config = ExtractorConfig(**separate["features_extractor_kwargs"]["config"])
    assert config == dataclasses.replace(ExtractorConfig(), separate_critic_query=True)


@pytest.mark.parametrize(
    "config",
    [
        ExtractorConfig(**SMALL),
        ExtractorConfig(**SMALL, separate_critic_query=True, modality_dropout_camera=0.2),
        ExtractorConfig(name="combined", features_dim=32),
        ExtractorConfig(name="late_fusion", **SMALL),
    ],
    ids=["attention", "attention-separate-critic", "combined", "late_fusion"],
)
def test_ppo_trains_and_gives_attention(config):
    env = FakeContractEnv()
    kwargs = policy_kwargs(config, env.sensor_names)
    model = PPO("MultiInputPolicy", env, policy_kwargs=kwargs, n_steps=16, batch_size=8,
                n_epochs=1, seed=0, device="cpu")  # fmt: skip
    model.set_logger(Logger(folder=None, output_formats=[]))  # no /tmp/SB3-* folder
    model.learn(32)
    extractor = model.policy.pi_features_extractor
    assert extractor.camera_layout == "chw"  # SB3 wrapped the env in VecTransposeImage
    assert (model.policy.vf_features_extractor is extractor) != config.separate_critic_query
    obs, _ = env.reset(seed=1)
    if not config.has_attention:
        with pytest.raises(TypeError, match="no attention"):
            attention_from_policy(model.policy, obs)
        return
    maps = attention_from_policy(model, obs)  # the algorithm or its policy
    assert isinstance(maps, AttentionMaps) and maps.grid == (5, 5)
    assert maps.query_camera.shape == (1, config.layers, config.heads, 5, 5)
    assert maps.sensor_token_names == ("ego", "rays.00-01", "rays.02-03", "route")
    # The documented manual route gives the same maps, from a VecEnv (channel-first) batch.
    batch = model.get_env().reset()
    assert batch["camera"].shape[1:] == (3, 40, 40)
    batch_maps = attention_from_policy(model.policy, batch)
    assert batch_maps.weights.shape[0] == 1 and torch.isfinite(batch_maps.weights).all()
    assert extractor.training is model.policy.training  # mode restored


def test_sac_trains_and_gives_attention():
    env = FakeContractEnv(continuous=True)
    kwargs = policy_kwargs(ExtractorConfig(**SMALL), env.sensor_names)
    model = SAC("MultiInputPolicy", env, policy_kwargs=kwargs, learning_starts=8, batch_size=8,
                buffer_size=64, seed=0, device="cpu")  # fmt: skip
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.learn(16)
    obs, _ = env.reset(seed=1)
    maps = attention_from_policy(model.policy, obs)
    assert maps.query_camera.shape == (1, 2, SMALL["heads"], 5, 5)


def test_errors_say_how_to_fix():
    space = contract_space()
    with pytest.raises(ValueError, match="sensor_names"):
        make_extractor(space, ExtractorConfig(), NAMES[:-1])
    with pytest.raises(ValueError, match="patch"):
        make_extractor(contract_space((6, 6, 3)), ExtractorConfig(), NAMES)
    with pytest.raises(ValueError, match="36x36"):
        make("combined", contract_space((32, 32, 3)))
    with pytest.raises(ValueError, match="policy_kwargs"):
        CrossModalExtractor(space, ExtractorConfig(name="combined"), NAMES)
    for name in ("late_fusion", "combined"):
        with pytest.raises(ValueError, match="no attention maps"):
            make(name)(sample_obs(space), return_attention=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_on_cuda_is_close_to_fp32():
    space = contract_space()
    obs = {k: v.cuda() for k, v in sample_obs(space, batch=16).items()}
    fp32 = make("attention").cuda().eval()
    bf16 = make("attention", bf16=True).cuda().eval()
    features, maps = bf16(obs, return_attention=True)
    assert features.dtype == torch.float32 and torch.isfinite(maps.weights).all()
    assert_close(features, fp32(obs), atol=5e-2, rtol=5e-2)
    assert_close(bf16(obs), features, atol=5e-2, rtol=5e-2)


# --- learning check --------------------------------------------------------------------------


def test_attention_learns_to_find_the_patch_a_sensor_selects():
    """Three coloured objects in a 4x4 patch grid; ``target.colour`` names one of them and the
    model must regress that object's grid position. After a short supervised run some attention
    map (the policy query's, or the target sensor token's over the camera, head-averaged) puts
    over 5x the uniform weight on the selected patch and over 3x what it puts on each of the two
    distractor objects: attention follows the sensor, not just the salient objects. (Seeds 0-7
    give 0.33-0.67 on the target against a uniform 0.05.)"""
    torch.manual_seed(0)
    grid, patch, objects = 4, 8, 3
    names = [
        "target.colour",
        "ego.speed",
        "ego.heading",
        *(f"rays.{k:02d}.distance" for k in range(4)),
    ]
    space = contract_space((3, grid * patch, grid * patch), len(names))
    config = ExtractorConfig(features_dim=32, patch=patch)  # default dim, heads, layers, stem
    extractor = make_extractor(space, config, names)
    head = torch.nn.Linear(config.features_dim, 2)
    optimizer = torch.optim.Adam([*extractor.parameters(), *head.parameters()], lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    colours = torch.tensor([[255.0, 0, 0], [0, 255, 0], [0, 0, 255]])

    def batch(n: int):
        cells = torch.rand(n, grid * grid, generator=generator).argsort(dim=1)[:, :objects]
        pixels = torch.full((n, grid * grid, 3), 40.0)  # dark background
        pixels[torch.arange(n)[:, None], cells] = colours  # object k has colour k
        camera = pixels.view(n, grid, grid, 3).permute(0, 3, 1, 2)  # (n, 3, grid, grid)
        camera = camera.repeat_interleave(patch, 2).repeat_interleave(patch, 3)  # (n, 3, H, W)
        which = torch.randint(0, objects, (n,), generator=generator)
        sensors = torch.rand(n, len(names), generator=generator) * 2 - 1
        sensors[:, 0] = which.float() - 1  # -1, 0, 1: red, green, blue
        order = (which[:, None] + torch.arange(objects)) % objects  # target first
        cells = cells.gather(1, order)  # (n, objects): target cell, then distractor cells
        target = torch.stack([cells[:, 0] // grid, cells[:, 0] % grid], 1) / (grid - 1) * 2 - 1
        return {"camera": camera, "sensors": sensors}, target, cells

    for _ in range(400):
        obs, target, _ = batch(64)
        loss = (head(extractor(obs)) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05, f"loss {loss.item():.3f}: the task was not learned"

    obs, _, cells = batch(256)
    with torch.no_grad():
        _, maps = extractor.eval()(obs, return_attention=True)
    query = maps.query_camera.mean(2).flatten(2)  # (B, L, gh * gw), heads averaged
    sensor = maps.sensor_to_camera[:, :, :, 0].mean(2).flatten(2)  # target token: (B, L, gh*gw)
    candidates = torch.cat([query, sensor], dim=1)  # (B, 2L, gh * gw)
    on_cells = candidates.gather(2, cells[:, None, :].expand(-1, candidates.shape[1], -1))
    on_target = on_cells[..., 0].mean(0)  # (2L,)
    on_distractors = on_cells[..., 1:].mean((0, 2))  # (2L,)
    uniform = 1.0 / maps.weights.shape[-1]  # 1 / N: the same weight on every token
    found = (on_target > 5 * uniform) & (on_target > 3 * on_distractors)
    assert found.any(), (
        f"no map puts its mass on the selected patch: target {on_target.tolist()}, "
        f"distractors {on_distractors.tolist()}, uniform {uniform:.3f}"
    )
