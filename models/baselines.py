"""Baseline encoders without attention (the SB3 adapters are in ``models/extractors.py``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from drive_attention.models.tokenizers import CameraTokenizer, SensorTokenizer


class TokenPool(nn.Module):
    """Tokens to one vector by a learned linear map over the flattened, normalised tokens.

    ``(B, N, dim)`` -> ``(B, out_dim)``; unlike a mean it keeps where each token sits.
    """

    def __init__(self, num_tokens: int, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Linear(num_tokens * dim, out_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.project(self.norm(tokens).flatten(1))  # (B, N * dim) -> (B, out_dim)


class LateFusionEncoder(nn.Module):
    """Late fusion: each tokenizer pooled on its own, the two vectors concatenated.

    Inputs ``camera (B, C, H, W)`` in [0, 255] and ``sensors (B, D)``; output
    ``(B, features_dim)``, the first ``features_dim // 2`` from the camera.
    """

    def __init__(
        self, camera: CameraTokenizer, sensors: SensorTokenizer, dim: int, features_dim: int
    ) -> None:
        super().__init__()
        if features_dim < 2:
            raise ValueError(
                f"late fusion needs features_dim >= 2 (one per modality), got {features_dim}"
            )
        self.camera = camera
        self.sensors = sensors
        camera_dim = features_dim // 2
        self.camera_pool = TokenPool(camera.num_tokens, dim, camera_dim)
        self.sensor_pool = TokenPool(sensors.layout.num_tokens, dim, features_dim - camera_dim)

    def forward(self, camera: Tensor, sensors: Tensor) -> Tensor:
        camera_features = self.camera_pool(self.camera(camera))  # (B, features_dim // 2)
        sensor_features = self.sensor_pool(self.sensors(sensors))  # (B, features_dim - that)
        return torch.cat([camera_features, sensor_features], dim=1)  # (B, features_dim)
