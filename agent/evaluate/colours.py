"""The attention colour scale both modalities share in the videos: one perceptual colour map
(:data:`COLORMAP`, inferno) from an even spread of attention to :data:`LIFT_MAX` times it."""

from __future__ import annotations

import math

import cv2
import numpy as np

COLORMAP = cv2.COLORMAP_INFERNO  # perceptual: lightness grows with attention
LIFT_MAX = 8.0  # the colour scale: a token's attention over an even spread, 1x .. LIFT_MAX x
FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT = (235, 235, 235)
_LUT = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], COLORMAP)[:, 0, ::-1].copy()


def attention_scale(weights: np.ndarray, n_tokens: int) -> np.ndarray:
    """Where attention ``weights`` (any shape; the query's row over all ``n_tokens`` tokens sums
    to 1) sit on the colour scale, in [0, 1]: 0 at or below an even spread (1 / n_tokens), 1 at
    :data:`LIFT_MAX` times it, logarithmic between. One scale for camera patches and sensor
    tokens, so their colours compare; an even map stays transparent."""
    lift = np.maximum(np.asarray(weights, np.float64) * n_tokens, 1e-12)
    return np.clip(np.log(lift) / math.log(LIFT_MAX), 0.0, 1.0)


def colour(value: float | np.ndarray) -> np.ndarray:
    """RGB uint8 of :data:`COLORMAP` at ``value`` in [0, 1] (any shape, plus a last axis of 3)."""
    index = np.clip(np.round(np.asarray(value, np.float64) * 255), 0, 255).astype(np.intp)
    return _LUT[index]


def put_text(image: np.ndarray, text: str, x: int, y: int, scale: float = 0.4, colour=TEXT) -> None:
    cv2.putText(image, text, (x, y), FONT, scale, colour, 1, cv2.LINE_AA)
