"""Tokenizers: camera frame to a grid of patch tokens, sensor vector to a token per group or ray.

Both return tokens of width ``dim``; the fusion blocks take them from there.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INDEXED_NAME = re.compile(r"^(rays|objects)\.(\d+)\.(.+)$")
"""``<group>.<k>.<quantity>`` of an indexed group: range ray ``k`` (``rays.03.distance``) or
object ``k`` of the radar list (``objects.02.vx``); see envs/contract.py. Other groups are one
token each, whatever their names (CARLA's ``route.<k>.x`` route points stay one ``route`` token,
so checkpoints trained before objects had tokens still fit)."""
INDEXED_GROUPS: tuple[str, ...] = ("rays", "objects")


def sincos_embedding(length: int, dim: int) -> Tensor:
    """Sine-cosine embedding of positions ``0..length-1``: ``(length, dim)``, values in [-1, 1]."""
    position = torch.arange(length, dtype=torch.float32)[:, None]  # (length, 1)
    frequency = 1.0 / 100.0 ** (
        torch.arange((dim + 1) // 2, dtype=torch.float32) / max(1, dim // 2)
    )
    angle = position * frequency  # (length, ceil(dim / 2))
    return torch.cat([angle.sin(), angle.cos()], dim=1)[:, :dim]  # (length, dim)


class CameraTokenizer(nn.Module):
    """Camera frame to patch tokens with 2-D positional embeddings.

    The stem is two strided convolutions, ``patch/2`` then 2 pixels, with a GELU between, so a
    64 px frame with ``patch=8`` gives an 8x8 grid. Frames come in [0, 255] (uint8 or float,
    SB3 ``normalize_images=False``) and are normalised here to [-1, 1].

    Input ``(B, C, H, W)`` channel-first, ``C = 3 * frame_stack``; output ``(B, gh * gw, dim)``,
    tokens in row-major order over the grid.
    """

    def __init__(
        self, channels: int, height: int, width: int, dim: int, patch: int, stem_channels: int
    ) -> None:
        super().__init__()
        if height < patch or width < patch:
            raise ValueError(
                f"camera frame {height}x{width} px is smaller than one patch ({patch} px); "
                f"lower model.patch or raise the env's camera_size"
            )
        first = patch // 2
        self.patchify = nn.Conv2d(channels, stem_channels, kernel_size=first, stride=first)
        self.activation = nn.GELU()
        self.merge = nn.Conv2d(stem_channels, dim, kernel_size=2, stride=2)
        self.grid: tuple[int, int] = ((height // first) // 2, (width // first) // 2)
        # Learned, initialised as 2-D sine-cosine (rows in the first half of the channels,
        # columns in the second) so that positions are told apart from the first update.
        half = dim // 2
        rows = F.pad(sincos_embedding(self.grid[0], half), (0, dim - half))  # (gh, dim)
        cols = F.pad(sincos_embedding(self.grid[1], dim - half), (half, 0))  # (gw, dim)
        self.row_embedding = nn.Parameter(rows.unsqueeze(1))  # (gh, 1, dim)
        self.col_embedding = nn.Parameter(cols.unsqueeze(0))  # (1, gw, dim)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, camera: Tensor) -> Tensor:
        """``(B, C, H, W)`` in [0, 255] -> ``(B, gh * gw, dim)``."""
        # x / 127.5 - 1 folded into the first convolution's weights: one pass less over frames.
        weight = self.patchify.weight * (2.0 / 255.0)
        bias = self.patchify.bias - self.patchify.weight.sum(dim=(1, 2, 3))
        x = F.conv2d(camera.float(), weight, bias, stride=self.patchify.stride)  # (B, c, 2gh, 2gw)
        x = self.merge(self.activation(x))  # (B, dim, gh, gw)
        x = x.flatten(2).transpose(1, 2)  # (B, gh * gw, dim)
        position = (self.row_embedding + self.col_embedding).flatten(0, 1)  # (gh * gw, dim)
        return x + position


@dataclass(frozen=True)
class SensorLayout:
    """Which sensor elements make each sensor token, read from the sensor names alone.

    Groups are the text before the first '.', in order of first appearance; each group is one
    token, except the indexed groups (:data:`INDEXED_GROUPS`), whose elements are all
    ``<group>.<k>.<quantity>``: one token per item ``k`` (a range ray, an object of the radar
    list), holding that item's quantities.
    Rays may be pooled into sectors of ``rays_per_token`` consecutive rays.

    ``index[t][j]`` is the sensor element in slot ``j`` of token ``t``, or -1 for an empty slot;
    slots of an indexed group's tokens follow one quantity order, so its tokens share one
    projection and are told apart by a learned embedding per token (``item_slots``).
    """

    token_names: tuple[str, ...]  # "ego", "route", "rays.00" ("rays.00-03" for sectors), ...
    token_types: tuple[int, ...]  # per token: index into type_names
    type_names: tuple[str, ...]  # one per group ("rays" once)
    item_slots: tuple[int, ...]  # per token: position 0..I-1 among item tokens, -1 for groups
    index: tuple[tuple[int, ...], ...]  # (S, K) sensor element per slot, -1 when empty

    @classmethod
    def from_names(cls, names: Sequence[str], rays_per_token: int = 1) -> SensorLayout:
        if len(names) == 0:
            raise ValueError(
                "no sensor names: pass the env's sensor_names (env.unwrapped.sensor_names), "
                "or use the camera_only extractor"
            )
        if len(set(names)) != len(names):
            duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
            raise ValueError(f"sensor names must be unique; repeated: {', '.join(duplicates)}")
        groups: dict[str, list[int]] = {}  # plain elements of each group
        items: dict[str, dict[int, dict[str, int]]] = {}  # group -> k -> quantity -> element
        quantities: dict[str, list[str]] = {}
        for i, name in enumerate(names):
            match = INDEXED_NAME.match(name)
            group = name.split(".", 1)[0]
            groups.setdefault(group, [])
            if match:
                k, quantity = int(match.group(2)), match.group(3)
                items.setdefault(group, {}).setdefault(k, {})[quantity] = i
                if quantity not in quantities.setdefault(group, []):
                    quantities[group].append(quantity)
            else:
                groups[group].append(i)
        for group in INDEXED_GROUPS:
            if group in items and groups[group]:
                stray = [names[i] for i in groups[group]]
                raise ValueError(
                    f"sensor names {stray} are in group '{group}' but not of the form "
                    f"'{group}.<k>.<quantity>'; rename them or move them to another group"
                )

        token_names: list[str] = []
        token_types: list[int] = []
        item_slots: list[int] = []
        index: list[list[int]] = []
        for type_id, group in enumerate(groups):
            if group not in items:
                token_names.append(group)
                token_types.append(type_id)
                item_slots.append(-1)
                index.append(list(groups[group]))
                continue
            per_token = rays_per_token if group == "rays" else 1
            ids, qs = sorted(items[group]), quantities[group]
            for start in range(0, len(ids), per_token):
                sector = ids[start : start + per_token]
                label = (
                    f"{sector[0]:02d}" if len(sector) == 1 else f"{sector[0]:02d}-{sector[-1]:02d}"
                )
                token_names.append(f"{group}.{label}")
                token_types.append(type_id)
                item_slots.append(sum(1 for slot in item_slots if slot >= 0))
                slots = [items[group][k].get(q, -1) for k in sector for q in qs]
                slots += [-1] * (per_token - len(sector)) * len(qs)
                index.append(slots)
        width = max(len(slots) for slots in index)
        padded = tuple(tuple(slots + [-1] * (width - len(slots))) for slots in index)
        return cls(tuple(token_names), tuple(token_types), tuple(groups), tuple(item_slots), padded)

    @property
    def num_tokens(self) -> int:
        return len(self.token_names)

    @property
    def num_item_tokens(self) -> int:
        return sum(1 for slot in self.item_slots if slot >= 0)


class SensorTokenizer(nn.Module):
    """Sensor vector to one token per group or item (ray, object), with learned type embeddings.

    Each group has its own linear projection of its elements; the item tokens of a group share
    its projection and are told apart by a learned per-item embedding. The elements of each token
    are gathered with an index buffer, so the whole batch is one gather and one einsum.

    Input ``(B, D)``; output ``(B, S, dim)``, ``S = layout.num_tokens``.
    """

    def __init__(self, layout: SensorLayout, num_sensors: int, dim: int) -> None:
        super().__init__()
        used = [i for slots in layout.index for i in slots if i >= 0]
        if max(used) >= num_sensors:
            raise ValueError(
                f"sensor names refer to {max(used) + 1} elements but the sensor vector has "
                f"{num_sensors}; pass the sensor_names of the same env"
            )
        self.layout = layout
        self.num_sensors = num_sensors
        width = len(layout.index[0])
        index = torch.tensor(layout.index, dtype=torch.long)  # (S, K)
        # Empty slots read an extra zero element appended at position D.
        self.register_buffer("index", torch.where(index < 0, num_sensors, index), persistent=False)
        self.register_buffer(
            "token_types", torch.tensor(layout.token_types, dtype=torch.long), persistent=False
        )
        num_types = len(layout.type_names)
        self.weight = nn.Parameter(torch.randn(num_types, width, dim) / width**0.5)
        self.type_embedding = nn.Parameter(torch.randn(num_types, dim) * 0.02)
        self.ray_embedding: nn.Parameter | None = None  # per item token (the name is kept so
        # that checkpoints of sensors with rays alone still load)
        if layout.num_item_tokens > 0:
            item_tokens = torch.tensor([i for i, s in enumerate(layout.item_slots) if s >= 0])
            self.register_buffer("ray_tokens", item_tokens, persistent=False)
            self.ray_embedding = nn.Parameter(torch.randn(layout.num_item_tokens, dim) * 0.02)

    def forward(self, sensors: Tensor) -> Tensor:
        """``(B, D)`` -> ``(B, S, dim)``."""
        x = sensors.float()
        x = torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1)  # (B, D + 1), last = empty slot
        x = x[:, self.index]  # (B, S, K)
        weight = self.weight[self.token_types]  # (S, K, dim)
        tokens = torch.einsum("bsk,skd->bsd", x, weight)  # (B, S, dim)
        embedding = self.type_embedding[self.token_types]  # (S, dim)
        if self.ray_embedding is not None:
            embedding = embedding.index_add(0, self.ray_tokens, self.ray_embedding)
        return tokens + embedding
