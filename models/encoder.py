"""The cross-modal attention encoder: tokenizers, L fusion blocks and a policy query.

Pure torch: takes a channel-first camera tensor and a sensor vector, returns features and, on
request, the attention maps. The SB3 adapter lives in ``models/extractors.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from drive_attention.models.fusion import FusionBlock, QueryReadout
from drive_attention.models.tokenizers import CameraTokenizer, SensorTokenizer


@dataclass
class AttentionMaps:
    """Attention of one forward pass, per layer and head (``L`` layers, ``heads`` heads).

    Tokens are laid out ``[camera patches (Nc = gh * gw), sensor tokens (S)]`` and the policy
    query comes last. Every attention row is a distribution over *all* ``N = Nc + S`` tokens
    (rows of ``weights`` sum to 1); the named fields are slices of those rows, not renormalised,
    so e.g. ``query_camera`` sums to the query's total mass on the camera (at most 1).

    - ``weights``: ``(B, L, heads, N + 1, N)``, every row: the tokens' rows, then the query's.
    - ``query_camera``: ``(B, L, heads, gh, gw)``, the policy query over camera patches.
    - ``query_sensors``: ``(B, L, heads, S)``, the policy query over sensor tokens.
    - ``sensor_to_camera``: ``(B, L, heads, S, gh, gw)``, each sensor token over the patches.
    - ``sensor_token_names``: ``S`` names (``"ego"``, ``"route"``, ``"rays.00"``, ...).
    - ``grid``: ``(gh, gw)``; ``(0, 0)`` for the sensors-only encoder. The camera-only encoder
      has ``S = 0``; empty slices keep their dimensions.
    """

    weights: Tensor
    query_camera: Tensor
    query_sensors: Tensor
    sensor_to_camera: Tensor
    sensor_token_names: tuple[str, ...]
    grid: tuple[int, int]

    @classmethod
    def from_weights(
        cls, weights: Tensor, grid: tuple[int, int], sensor_token_names: tuple[str, ...]
    ) -> AttentionMaps:
        """Slice the full rows ``(B, L, heads, N + 1, N)`` into the named maps."""
        batch, layers, heads, _, n_tokens = weights.shape
        n_camera = grid[0] * grid[1]
        n_sensors = len(sensor_token_names)
        if n_camera + n_sensors != n_tokens:
            raise ValueError(f"{n_tokens} tokens, but grid {grid} and {n_sensors} sensor names")
        query = weights[:, :, :, -1]  # (B, L, heads, N)
        query_camera = query[..., :n_camera].reshape(batch, layers, heads, *grid)
        sensor_rows = weights[:, :, :, n_camera:n_tokens, :n_camera]  # (B, L, heads, S, Nc)
        sensor_to_camera = sensor_rows.reshape(batch, layers, heads, n_sensors, *grid)
        return cls(
            weights=weights,
            query_camera=query_camera,
            query_sensors=query[..., n_camera:],  # (B, L, heads, S)
            sensor_to_camera=sensor_to_camera,
            sensor_token_names=sensor_token_names,
            grid=grid,
        )

    @property
    def num_layers(self) -> int:
        return self.weights.shape[1]

    @property
    def heads(self) -> int:
        return self.weights.shape[2]

    def camera_map(self, layer: int = -1) -> Tensor:
        """The query's weights on the patch grid at ``layer``, mean over heads: ``(B, gh, gw)``."""
        return self.query_camera[:, layer].mean(dim=1)

    def sensor_map(self, layer: int = -1) -> Tensor:
        """The query's weights over sensor tokens at ``layer``, averaged over heads: ``(B, S)``."""
        return self.query_sensors[:, layer].mean(dim=1)

    def camera_mass(self, layer: int = -1) -> Tensor:
        """The query's total weight on the camera at ``layer`` (the rest: sensors): ``(B,)``."""
        return self.camera_map(layer).flatten(1).sum(dim=1)

    def to(self, device: torch.device | str) -> AttentionMaps:
        """The same maps on ``device`` (e.g. ``"cpu"`` before turning them into images)."""
        return AttentionMaps.from_weights(
            self.weights.to(device), self.grid, self.sensor_token_names
        )


class CrossModalEncoder(nn.Module):
    """Camera and sensor tokens fused by ``layers`` attention blocks, read by a policy query.

    Either tokenizer may be absent (the camera-only and sensors-only variants). Inputs:
    ``camera (B, C, H, W)`` in [0, 255] and ``sensors (B, D)``; output ``(B, features_dim)``.
    """

    def __init__(
        self,
        camera: CameraTokenizer | None,
        sensors: SensorTokenizer | None,
        dim: int,
        layers: int,
        heads: int,
        mlp_ratio: float,
        features_dim: int,
    ) -> None:
        super().__init__()
        if camera is None and sensors is None:
            raise ValueError("the encoder needs a camera tokenizer, a sensor tokenizer or both")
        self.camera = camera
        self.sensors = sensors
        self.blocks = nn.ModuleList(FusionBlock(dim, heads, mlp_ratio) for _ in range(layers))
        self.readout = QueryReadout(dim, features_dim)
        self.grid: tuple[int, int] = camera.grid if camera is not None else (0, 0)
        self.sensor_token_names: tuple[str, ...] = (
            sensors.layout.token_names if sensors is not None else ()
        )

    def tokens(self, camera: Tensor | None, sensors: Tensor | None) -> Tensor:
        """All tokens ``(B, N, dim)``: camera patches first, then sensor tokens."""
        parts = []
        if self.camera is not None:
            if camera is None:
                raise ValueError("this encoder reads the camera; pass the 'camera' observation")
            parts.append(self.camera(camera))  # (B, Nc, dim)
        if self.sensors is not None:
            if sensors is None:
                raise ValueError("this encoder reads the sensors; pass the 'sensors' observation")
            parts.append(self.sensors(sensors))  # (B, S, dim)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (B, N, dim)

    def forward(
        self, camera: Tensor | None, sensors: Tensor | None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, AttentionMaps]:
        """Features ``(B, features_dim)``, and the :class:`AttentionMaps` when requested.

        Without the request attention runs through ``scaled_dot_product_attention``; with it the
        weights are computed explicitly. Both give the same features.
        """
        tokens = self.tokens(camera, sensors)  # (B, N, dim)
        n_tokens = tokens.shape[1]
        x = self.readout.append(tokens)  # (B, N + 1, dim)
        weights = []
        for i, block in enumerate(self.blocks):
            # Only the query's row of the last block is read: the fast path computes that row
            # alone; the explicit path computes every row for the maps.
            last = i == len(self.blocks) - 1
            first_row = n_tokens if last and not return_attention else 0
            x, w = block(x, n_tokens, first_row, return_attention)  # (B, N + 1 or 1, dim)
            weights.append(w)  # (B, heads, N + 1, N) or None
        features = self.readout.read(x)  # (B, features_dim)
        if not return_attention:
            return features
        stacked = torch.stack(weights, dim=1)  # (B, L, heads, N + 1, N)
        return features, AttentionMaps.from_weights(stacked, self.grid, self.sensor_token_names)
