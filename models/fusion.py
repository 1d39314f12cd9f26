"""Fusion blocks: joint multi-head attention over camera and sensor tokens, read by queries.

One attention call per layer covers every direction the encoder needs: with the tokens laid out
``[camera (Nc), sensors (S)]`` every sensor token attends to the camera patches and to the other
sensor tokens, every camera patch attends to the sensor tokens and to the other patches. The
policy query token, appended after them, attends to all tokens but no token attends to it, so it
reads the scene without changing it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TokenAttention(nn.Module):
    """Multi-head attention of the rows ``x[:, first_row:]`` over the tokens ``x[:, :n_keys]``.

    Two paths with the same result: ``scaled_dot_product_attention`` (fast, no weights) and an
    explicit softmax that also returns the weights ``(B, heads, T - first_row, n_keys)``.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, n_keys: int, first_row: int = 0, return_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """``x (B, T, dim)`` -> ``(B, T - first_row, dim)``, and the weights or None."""
        batch, length, dim = x.shape
        rows, dh = length - first_row, dim // self.heads
        # Split on the last axis and move heads by views: no copies, in either direction.
        q, k, v = self.qkv(x).split(dim, dim=-1)  # each (B, T, dim)
        q = q[:, first_row:].view(batch, rows, self.heads, dh).transpose(1, 2)  # (B, h, R, dh)
        k = k[:, :n_keys].view(batch, n_keys, self.heads, dh).transpose(1, 2)  # (B, h, N, dh)
        v = v[:, :n_keys].view(batch, n_keys, self.heads, dh).transpose(1, 2)  # (B, h, N, dh)
        if return_weights:
            scores = (q @ k.transpose(-2, -1)) * dh**-0.5  # (B, heads, R, n_keys)
            weights = scores.float().softmax(dim=-1)
            y = weights.to(v.dtype) @ v  # (B, heads, R, dh)
        else:
            weights = None
            y = F.scaled_dot_product_attention(q, k, v)  # (B, heads, R, dh)
        y = y.transpose(1, 2).reshape(batch, rows, dim)  # (B, R, dim)
        return self.out(y), weights


class FusionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``.

    ``first_row`` > 0 updates only the rows from there on (the keys still come from all
    tokens): the encoder's last block needs only the query's row, which saves most of its cost
    and gives the same query output.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = TokenAttention(dim, heads)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(
        self, x: Tensor, n_keys: int, first_row: int = 0, return_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """``x (B, T, dim)`` -> ``(B, T - first_row, dim)``, weights ``(B, heads, R, n_keys)``."""
        attended, weights = self.attention(
            self.attention_norm(x), n_keys, first_row, return_weights
        )
        x = x[:, first_row:] + attended  # (B, R, dim)
        x = x + self.mlp(self.mlp_norm(x))
        return x, weights


class QueryReadout(nn.Module):
    """A learned query token appended after the tokens; its final state gives the features.

    ``append``: ``(B, N, dim)`` -> ``(B, N + 1, dim)``; ``read``: ``(B, N + 1, dim)`` ->
    ``(B, features_dim)``.
    """

    def __init__(self, dim: int, features_dim: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, features_dim)

    def append(self, tokens: Tensor) -> Tensor:
        query = self.query.expand(tokens.shape[0], -1, -1).to(tokens.dtype)  # (B, 1, dim)
        return torch.cat([tokens, query], dim=1)  # (B, N + 1, dim)

    def read(self, x: Tensor) -> Tensor:
        """``(B, R, dim)`` with the query last -> ``(B, features_dim)``."""
        return self.head(self.norm(x[:, -1]))  # (B, features_dim)
