"""Typed configuration of the features extractors (the ``model.`` section of an experiment)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from drive_attention.envs.configuration import check

ExtractorName = Literal["attention", "combined", "late_fusion", "camera_only", "sensors_only"]

EXTRACTOR_NAMES: tuple[str, ...] = (
    "attention",
    "combined",
    "late_fusion",
    "camera_only",
    "sensors_only",
)
"""Every extractor that :func:`models.policy_kwargs` can build, chosen by ``config.name``."""

ATTENTION_NAMES: tuple[str, ...] = ("attention", "camera_only", "sensors_only")
"""The extractors built on the fusion encoder; they return attention maps on request."""

# Upper bounds, checked before anything is built: generous (the encoders here use dim 32-64, 1-2
# layers, 2 heads, about 10^5 parameters), so that a typo (dim=100000) is one line, not minutes
# of allocation and then an out-of-memory traceback.
MAX_DIM = 4096  # token width
MAX_LAYERS = 64  # fusion layers
MAX_HEADS = 128  # attention heads per layer
MAX_MLP_RATIO = 16.0  # an MLP's hidden width, in multiples of dim
MAX_PATCH = 512  # [px] camera patch (the stem's first kernel is patch/2 wide)
MAX_STEM_CHANNELS = 1024
MAX_FEATURES_DIM = 16_384
MAX_PARAMS = 2**28
"""Parameters of the encoder, estimated from its sizes (:meth:`ExtractorConfig.estimated_params`):
268M, about 4 GiB to train in float32 (weights, gradients, Adam's two moments)."""
_MAXIMA = {
    "dim": (MAX_DIM, "the token width; the encoders here use 32-64"),
    "layers": (MAX_LAYERS, "fusion layers; the encoders here use 1-2"),
    "heads": (MAX_HEADS, "attention heads per layer; the encoders here use 2"),
    "mlp_ratio": (MAX_MLP_RATIO, "times dim, each block's MLP; the default is 2"),
    "patch": (MAX_PATCH, "px per patch; the default is 8"),
    "stem_channels": (MAX_STEM_CHANNELS, "channels of the camera stem; the default is 8"),
    "features_dim": (MAX_FEATURES_DIM, "output features; the default is 256"),
}


@dataclass
class ExtractorConfig:
    """Features extractor of the policy; built with ``envs.configuration.build``.

    ``name`` picks the extractor:

    - ``attention``: the cross-modal attention encoder (camera patches and sensor tokens fused
      by attention, read out by a learned policy query).
    - ``camera_only`` / ``sensors_only``: the same encoder over one modality.
    - ``late_fusion``: the two tokenizers, each pooled on its own, concatenated.
    - ``combined``: SB3's ``CombinedExtractor`` (NatureCNN on the camera, flattened sensors).
    """

    name: ExtractorName = "attention"
    dim: int = 32  # token width
    layers: int = 2  # fusion layers
    heads: int = 2  # attention heads per layer
    mlp_ratio: float = 2.0  # hidden width of each block's MLP, in multiples of dim
    patch: int = 8  # [px] camera patch size: a 64 px frame gives an 8x8 token grid
    stem_channels: int = 8  # channels of the first convolution of the camera stem
    rays_per_token: int = 2  # range rays per sensor token (1: one token per ray, k: sectors)
    features_dim: int = 256  # output width (for "combined": NatureCNN's output width)
    separate_critic_query: bool = False  # critic gets its own encoder and query (SB3 unshared)
    modality_dropout_camera: float = 0.0  # training: fraction of samples with a blank camera
    modality_dropout_sensors: float = 0.0  # training: fraction of samples with zeroed sensors
    bf16: bool = False  # bfloat16 autocast when the inputs are on CUDA (ignored on CPU)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # also when built directly, not from a config file
            value = getattr(self, f.name)
            check(
                not isinstance(value, float) or math.isfinite(value),
                f"{f.name}: must be a finite number, got {value}; give a number (the default is "
                f"{f.default})",
            )
        check(
            self.name in EXTRACTOR_NAMES,
            f"name: {self.name!r} is not an extractor; use one of {', '.join(EXTRACTOR_NAMES)}",
        )
        check(self.dim >= 1, f"dim: must be at least 1, got {self.dim}")
        check(self.layers >= 1, f"layers: must be at least 1, got {self.layers}")
        check(self.heads >= 1, f"heads: must be at least 1, got {self.heads}")
        for key, (limit, what) in _MAXIMA.items():
            value = getattr(self, key)
            check(
                value <= limit,
                f"{key}: {value} is above the limit of {limit:,} ({what}); give a smaller one",
            )
        check(
            self.dim % self.heads == 0,
            f"dim: {self.dim} is not divisible by heads={self.heads}; "
            f"choose a multiple of heads (e.g. dim={self.heads * max(1, self.dim // self.heads)})",
        )
        check(self.mlp_ratio > 0, f"mlp_ratio: must be positive, got {self.mlp_ratio}")
        check(
            self.patch >= 2 and self.patch % 2 == 0,
            f"patch: must be an even number of pixels >= 2 (the stem is two strided "
            f"convolutions, patch/2 then 2), got {self.patch}",
        )
        check(
            self.stem_channels >= 1, f"stem_channels: must be at least 1, got {self.stem_channels}"
        )
        check(
            self.rays_per_token >= 1,
            f"rays_per_token: must be at least 1, got {self.rays_per_token}",
        )
        check(self.features_dim >= 1, f"features_dim: must be at least 1, got {self.features_dim}")
        for field in ("modality_dropout_camera", "modality_dropout_sensors"):
            value = getattr(self, field)
            check(0.0 <= value <= 1.0, f"{field}: must be a fraction in [0, 1], got {value}")
        check(
            self.modality_dropout_camera + self.modality_dropout_sensors <= 1.0,
            "modality_dropout_camera: together with modality_dropout_sensors it must not exceed 1 "
            "(a sample loses at most one modality); lower one of them",
        )
        check(
            not self.separate_critic_query or self.name in ATTENTION_NAMES,
            f"separate_critic_query: only the attention extractors ({', '.join(ATTENTION_NAMES)}) "
            f"have a query; for '{self.name}' set it to false",
        )
        params = self.estimated_params()
        check(
            params <= MAX_PARAMS,
            f"dim: with dim={self.dim}, layers={self.layers} and mlp_ratio={self.mlp_ratio:g} the "
            f"encoder has about {params:,} parameters, above the limit of {MAX_PARAMS:,} (about "
            "4 GiB to train in float32 with Adam); lower dim or layers",
        )

    def estimated_params(self) -> int:
        """About how many parameters the extractor has (the fusion blocks, the camera stem at
        one frame, the readout; twice with a separate critic), from its sizes alone: cheap, for
        the upper bounds checked before anything is built."""
        blocks = self.layers * round((4 + 2 * self.mlp_ratio) * self.dim**2)  # attention + MLP
        first = self.patch // 2
        stem = 3 * first**2 * self.stem_channels + 4 * self.stem_channels * self.dim
        total = blocks + stem + self.dim * self.features_dim
        return 2 * total if self.separate_critic_query else total

    @property
    def has_attention(self) -> bool:
        """Whether the extractor gives maps (``forward(obs, return_attention=True)``)."""
        return self.name in ATTENTION_NAMES
