"""Typed configuration of the features extractors (the ``model.`` section of an experiment)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from envs.configuration import check

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

    @property
    def has_attention(self) -> bool:
        """Whether the extractor gives maps (``forward(obs, return_attention=True)``)."""
        return self.name in ATTENTION_NAMES
