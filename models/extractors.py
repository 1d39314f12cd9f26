"""SB3 adapters: features extractors for ``MultiInputPolicy`` (PPO, SAC) over the contract's obs.

Every extractor is built as ``cls(observation_space, config=..., sensor_names=...)`` and
accepts ``forward(obs) -> (B, features_dim)``; the attention extractors also accept
``forward(obs, return_attention=True) -> (features, AttentionMaps)``. The camera space may be
channel-last ``(H, W, C)`` or, after SB3's ``VecTransposeImage``, channel-first ``(C, H, W)``;
``C`` may be ``3 * frame_stack``. Use :func:`policy_kwargs` rather than these classes directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor
from torch import Tensor, nn

from drive_attention.envs.configuration import build
from drive_attention.models.baselines import LateFusionEncoder
from drive_attention.models.config import ATTENTION_NAMES, ExtractorConfig
from drive_attention.models.encoder import AttentionMaps, CrossModalEncoder
from drive_attention.models.tokenizers import CameraTokenizer, SensorLayout, SensorTokenizer

CAMERA_KEY = "camera"
SENSORS_KEY = "sensors"


def as_config(config: ExtractorConfig | Mapping[str, Any] | None) -> ExtractorConfig:
    """An :class:`ExtractorConfig` from itself, a mapping of its fields, or None (defaults)."""
    if isinstance(config, ExtractorConfig):
        return config
    return build(ExtractorConfig, config or {}, prefix="model.")


def camera_layout(space: spaces.Box) -> Literal["chw", "hwc"]:
    """Channel-first or channel-last, by SB3's rule (the channel axis is the smallest)."""
    if len(space.shape) != 3:
        raise ValueError(f"camera space must be (H, W, C) or (C, H, W), got shape {space.shape}")
    smallest = int(np.argmin(space.shape))
    if smallest == 1:
        raise ValueError(
            f"camera space {space.shape}: cannot tell the channel axis (width is the smallest); "
            f"use frames at least as wide and tall as the channel count"
        )
    return "chw" if smallest == 0 else "hwc"


def channel_first_shape(space: spaces.Box) -> tuple[int, int, int]:
    """``(C, H, W)`` of a camera space in either layout."""
    shape = tuple(int(n) for n in space.shape)
    return shape if camera_layout(space) == "chw" else (shape[2], shape[0], shape[1])


class ModalityDropout(nn.Module):
    """Training only: blank the camera (all zeros) or zero the sensors of a fraction of samples.

    Each sample loses at most one modality: camera with probability ``camera``, sensors with
    probability ``sensors``. In eval mode the inputs pass unchanged.
    """

    def __init__(self, camera: float, sensors: float) -> None:
        super().__init__()
        self.camera_rate = camera
        self.sensors_rate = sensors

    def forward(
        self, camera: Tensor | None, sensors: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None]:
        """``camera (B, C, H, W)`` and ``sensors (B, D)``, either may be None; same shapes out."""
        if not self.training or self.camera_rate + self.sensors_rate == 0.0:
            return camera, sensors
        reference = camera if camera is not None else sensors
        assert reference is not None
        draw = torch.rand(reference.shape[0], device=reference.device)  # (B,)
        if camera is not None:
            blank = draw < self.camera_rate  # (B,)
            camera = torch.where(blank.view(-1, 1, 1, 1), torch.zeros_like(camera), camera)
        if sensors is not None:
            zero = (draw >= self.camera_rate) & (draw < self.camera_rate + self.sensors_rate)
            sensors = torch.where(zero.view(-1, 1), torch.zeros_like(sensors), sensors)
        return camera, sensors


class ContractExtractor(BaseFeaturesExtractor):
    """Shared plumbing of our extractors: config, sensor names, camera layout, modality dropout.

    Subclasses build their modules from ``self.camera_shape`` (channel-first) and
    ``self.sensor_layout`` and call :meth:`inputs` in ``forward``.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        features_dim: int,
        config: ExtractorConfig,
        sensor_names: Sequence[str],
        use_camera: bool = True,
        use_sensors: bool = True,
    ) -> None:
        super().__init__(observation_space, features_dim)
        self.config = config
        self.sensor_names = tuple(sensor_names)
        self.use_camera = use_camera
        self.use_sensors = use_sensors
        if not isinstance(observation_space, spaces.Dict):
            raise TypeError(
                f"expected a Dict observation space with '{CAMERA_KEY}' and '{SENSORS_KEY}', got "
                f"{type(observation_space).__name__}; use MultiInputPolicy over a contract env"
            )
        needed = [k for k, used in ((CAMERA_KEY, use_camera), (SENSORS_KEY, use_sensors)) if used]
        missing = [k for k in needed if k not in observation_space.spaces]
        if missing:
            raise KeyError(
                f"observation space lacks {missing} (has {list(observation_space.spaces)}); "
                f"model '{config.name}' reads {needed}"
            )
        self.camera_layout: Literal["chw", "hwc"] = "chw"
        self.camera_shape: tuple[int, int, int] = (0, 0, 0)  # (C, H, W)
        if use_camera:
            camera_space = observation_space[CAMERA_KEY]
            assert isinstance(camera_space, spaces.Box)
            self.camera_layout = camera_layout(camera_space)
            self.camera_shape = channel_first_shape(camera_space)
        self.sensor_layout: SensorLayout | None = None
        self.num_sensors = 0
        if use_sensors:
            sensor_space = observation_space[SENSORS_KEY]
            self.num_sensors = int(np.prod(sensor_space.shape))
            if len(self.sensor_names) != self.num_sensors:
                raise ValueError(
                    f"got {len(self.sensor_names)} sensor names for {self.num_sensors} sensor "
                    f"values; pass sensor_names=env.unwrapped.sensor_names "
                    f"(models.policy_kwargs(config, sensor_names) does)"
                )
            self.sensor_layout = SensorLayout.from_names(self.sensor_names, config.rays_per_token)
        self.dropout = ModalityDropout(
            config.modality_dropout_camera, config.modality_dropout_sensors
        )

    def inputs(self, obs: Mapping[str, Tensor]) -> tuple[Tensor | None, Tensor | None]:
        """``camera (B, C, H, W)`` in [0, 255] (or None), ``sensors (B, D)`` (or None)."""
        camera = obs[CAMERA_KEY] if self.use_camera else None
        if camera is not None and self.camera_layout == "hwc":
            camera = camera.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        sensors = obs[SENSORS_KEY].flatten(1) if self.use_sensors else None  # (B, D)
        return self.dropout(camera, sensors)

    def autocast(self, x: Tensor) -> contextlib.AbstractContextManager[Any]:
        """bfloat16 autocast when ``config.bf16`` and ``x`` is on CUDA; else nothing."""
        if self.config.bf16 and x.is_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def camera_tokenizer(self) -> CameraTokenizer:
        c, h, w = self.camera_shape
        cfg = self.config
        return CameraTokenizer(c, h, w, cfg.dim, cfg.patch, cfg.stem_channels)

    def sensor_tokenizer(self) -> SensorTokenizer:
        assert self.sensor_layout is not None
        return SensorTokenizer(self.sensor_layout, self.num_sensors, self.config.dim)


class CrossModalExtractor(ContractExtractor):
    """The cross-modal attention encoder as an SB3 features extractor.

    ``config.name`` is ``attention`` (camera and sensors), ``camera_only`` or ``sensors_only``.
    ``forward(obs) -> (B, features_dim)``; ``forward(obs, return_attention=True) ->
    (features, AttentionMaps)``. Expects the camera un-normalised (``normalize_images=False``).
    """

    has_attention = True

    def __init__(
        self,
        observation_space: spaces.Dict,
        config: ExtractorConfig | Mapping[str, Any] | None = None,
        sensor_names: Sequence[str] = (),
    ) -> None:
        cfg = as_config(config)
        if cfg.name not in ATTENTION_NAMES:
            raise ValueError(
                f"CrossModalExtractor builds {', '.join(ATTENTION_NAMES)}, not '{cfg.name}'; "
                f"use models.policy_kwargs(config, sensor_names) to get the right class"
            )
        super().__init__(
            observation_space,
            cfg.features_dim,
            cfg,
            sensor_names,
            use_camera=cfg.name != "sensors_only",
            use_sensors=cfg.name != "camera_only",
        )
        self.encoder = CrossModalEncoder(
            self.camera_tokenizer() if self.use_camera else None,
            self.sensor_tokenizer() if self.use_sensors else None,
            dim=cfg.dim,
            layers=cfg.layers,
            heads=cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            features_dim=cfg.features_dim,
        )

    def forward(
        self, observations: Mapping[str, Tensor], return_attention: bool = False
    ) -> Tensor | tuple[Tensor, AttentionMaps]:
        camera, sensors = self.inputs(observations)
        reference = camera if camera is not None else sensors
        assert reference is not None
        with self.autocast(reference):
            out = self.encoder(camera, sensors, return_attention=return_attention)
        if return_attention:
            features, maps = out
            return features.float(), maps
        return out.float()


class LateFusionExtractor(ContractExtractor):
    """Late-fusion baseline: our two tokenizers, each pooled, concatenated. No attention."""

    has_attention = False

    def __init__(
        self,
        observation_space: spaces.Dict,
        config: ExtractorConfig | Mapping[str, Any] | None = None,
        sensor_names: Sequence[str] = (),
    ) -> None:
        cfg = as_config(config)
        super().__init__(observation_space, cfg.features_dim, cfg, sensor_names)
        self.encoder = LateFusionEncoder(
            self.camera_tokenizer(), self.sensor_tokenizer(), cfg.dim, cfg.features_dim
        )

    def forward(self, observations: Mapping[str, Tensor], return_attention: bool = False) -> Tensor:
        _refuse_attention(self, return_attention)
        camera, sensors = self.inputs(observations)
        assert camera is not None and sensors is not None
        with self.autocast(camera):
            return self.encoder(camera, sensors).float()


class CombinedBaseline(ContractExtractor):
    """SB3's ``CombinedExtractor`` (NatureCNN on the camera, flattened sensors), unchanged inside.

    Accepts either camera layout and takes part in modality dropout like the others. Expects the
    camera normalised to [0, 1] by SB3 (``normalize_images=True``). ``features_dim`` is
    ``config.features_dim`` (the CNN's output) plus the number of sensor values.
    """

    has_attention = False

    def __init__(
        self,
        observation_space: spaces.Dict,
        config: ExtractorConfig | Mapping[str, Any] | None = None,
        sensor_names: Sequence[str] = (),
    ) -> None:
        cfg = as_config(config)
        super().__init__(observation_space, 1, cfg, sensor_names)
        self._features_dim = cfg.features_dim + self.num_sensors  # CNN output, then the sensors
        c, h, w = self.camera_shape
        if min(h, w) < 36:
            raise ValueError(
                f"combined: SB3's NatureCNN needs frames of at least 36x36 px, got {h}x{w}; "
                f"raise the env's camera_size or use model.name = late_fusion"
            )
        camera_space = spaces.Box(0, 255, (c, h, w), np.uint8)  # channel-first, as NatureCNN needs
        inner_space = spaces.Dict(
            {CAMERA_KEY: camera_space, SENSORS_KEY: observation_space[SENSORS_KEY]}
        )
        self.combined = CombinedExtractor(inner_space, cnn_output_dim=cfg.features_dim)

    def forward(self, observations: Mapping[str, Tensor], return_attention: bool = False) -> Tensor:
        _refuse_attention(self, return_attention)
        camera, sensors = self.inputs(observations)
        assert camera is not None and sensors is not None
        if camera.dtype == torch.uint8:  # raw frames (SB3 hands over floats in [0, 1])
            camera = camera.float() / 255.0
        with self.autocast(camera):
            return self.combined({CAMERA_KEY: camera, SENSORS_KEY: sensors}).float()


def _refuse_attention(extractor: nn.Module, return_attention: bool) -> None:
    if return_attention:
        raise ValueError(
            f"{type(extractor).__name__} has no attention maps; use model.name = attention, "
            f"camera_only or sensors_only for return_attention=True"
        )


EXTRACTOR_CLASSES: dict[str, type[ContractExtractor]] = {
    "attention": CrossModalExtractor,
    "camera_only": CrossModalExtractor,
    "sensors_only": CrossModalExtractor,
    "late_fusion": LateFusionExtractor,
    "combined": CombinedBaseline,
}


def make_extractor(
    observation_space: spaces.Dict,
    config: ExtractorConfig | Mapping[str, Any] | None = None,
    sensor_names: Sequence[str] = (),
) -> ContractExtractor:
    """The extractor that ``config.name`` picks, as SB3 would build it."""
    cfg = as_config(config)
    return EXTRACTOR_CLASSES[cfg.name](observation_space, config=cfg, sensor_names=sensor_names)


def policy_kwargs(config: ExtractorConfig, sensor_names: Sequence[str]) -> dict[str, Any]:
    """Keyword arguments for ``PPO/SAC("MultiInputPolicy", env, policy_kwargs=...)``.

    Holds plain data only (the config as a dict, sensor names as a tuple). With
    ``separate_critic_query`` the critic gets its own extractor (and query):
    ``share_features_extractor=False``; otherwise the algorithm's default is kept (PPO shares
    one extractor; SAC gives the critic its own).
    """
    kwargs: dict[str, Any] = {
        "features_extractor_class": EXTRACTOR_CLASSES[config.name],
        "features_extractor_kwargs": {
            "config": dataclasses.asdict(config),
            "sensor_names": tuple(sensor_names),
        },
        # Our models normalise the uint8 frame inside; SB3's CombinedExtractor expects [0, 1].
        "normalize_images": config.name == "combined",
    }
    if config.separate_critic_query:
        kwargs["share_features_extractor"] = False
    return kwargs


def policy_extractor(policy: nn.Module) -> nn.Module:
    """The actor's features extractor of an SB3 policy (PPO: shared or not; SAC/TD3: actor's)."""
    for name in ("pi_features_extractor", "features_extractor"):
        extractor = getattr(policy, name, None)
        if extractor is not None:
            return extractor
    actor = getattr(policy, "actor", None)
    if actor is not None and getattr(actor, "features_extractor", None) is not None:
        return actor.features_extractor
    raise TypeError(f"{type(policy).__name__} has no features extractor")


def attention_from_policy(policy: Any, obs: dict[str, np.ndarray]) -> AttentionMaps:
    """Attention maps of a trained SB3 policy (or algorithm) for ``obs``, without gradients.

    ``obs`` is one observation or a batch, as the env or the VecEnv returns it (either camera
    layout). The actor's extractor runs in eval mode (no modality dropout), then its mode is
    restored.
    """
    policy = getattr(policy, "policy", policy)  # accept PPO/SAC themselves
    extractor = policy_extractor(policy)
    if not getattr(extractor, "has_attention", False):
        raise TypeError(
            f"the policy's extractor {type(extractor).__name__} has no attention maps; train "
            f"with model.name = attention, camera_only or sensors_only"
        )
    obs_tensor, _ = policy.obs_to_tensor(obs)
    pre = preprocess_obs(
        obs_tensor, policy.observation_space, normalize_images=policy.normalize_images
    )
    was_training = extractor.training
    extractor.train(False)
    try:
        with torch.no_grad():
            _, maps = extractor(pre, return_attention=True)
    finally:
        extractor.train(was_training)
    return maps
