"""What the attention videos draw on the scene beyond the heat-map: each object token on the
object it describes, the objects the teacher's decision depends on (outlined), and a crash."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from drive_attention.agent.evaluate.colours import attention_scale, colour, put_text

OBJECT_TOKEN = re.compile(r"^objects\.(\d+)$")
CRASH_COLOUR = (255, 40, 40)


@dataclass
class ObjectMark:
    """An ``objects.<k>`` sensor token drawn on the object it describes."""

    x: float  # [camera px] the centre of the object's pixels
    y: float
    index: int  # k
    weight: float  # the token's attention


def object_marks(
    info: dict[str, Any], sensor_labels: Sequence[str], sensor_attention: np.ndarray | None
) -> list[ObjectMark]:
    """Where each object token's object is in the camera frame, from ``info["object_ids"]``
    (the slot drawn at each pixel) and ``info["object_slots"]`` (each token's slot), with the
    token's attention; [] where the env does not give them (the batched envs do, with
    ``road_labels``) or the object is out of view."""
    ids, slots = info.get("object_ids"), info.get("object_slots")
    if ids is None or slots is None or sensor_attention is None:
        return []
    weights = {
        int(m.group(1)): float(w)
        for label, w in zip(sensor_labels, sensor_attention)
        if (m := OBJECT_TOKEN.match(label))
    }
    marks = []
    for k, slot in enumerate(np.asarray(slots).tolist()):
        if slot < 0 or k not in weights:
            continue
        rows, cols = np.nonzero(ids == slot)
        if len(rows):
            marks.append(ObjectMark(float(cols.mean()), float(rows.mean()), k, weights[k]))
    return marks


def draw_object_marks(
    view: np.ndarray, marks: Sequence[ObjectMark], scale: int, n_tokens: int
) -> None:
    """A disc per object token on its object, coloured (and sized) by its attention on the
    shared scale, with the token's index beside it; in place."""
    for mark in sorted(marks, key=lambda m: m.weight):  # the most attended on top
        value = float(attention_scale(mark.weight, n_tokens))
        centre = (round((mark.x + 0.5) * scale), round((mark.y + 0.5) * scale))
        rgb = tuple(int(c) for c in colour(0.2 + 0.8 * value))
        size = max(1.0, scale / 4)  # the marks grow with the scene
        radius = round((3 + 3 * value) * size)
        cv2.circle(view, centre, radius + 1, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(view, centre, radius, rgb, -1, cv2.LINE_AA)
        x, y = centre[0] + radius + 2, centre[1] - radius
        put_text(view, str(mark.index), x, y, min(0.4 * size, 0.8), rgb)


def draw_crash(view: np.ndarray, at: tuple[float, float], scale: int) -> None:
    """A red ring and the word where the ego crashed (``at``: camera px), in place."""
    centre = (round((at[0] + 0.5) * scale), round((at[1] + 0.5) * scale))
    radius = 4 * scale
    cv2.circle(view, centre, radius, CRASH_COLOUR, 2, cv2.LINE_AA)
    put_text(view, "CRASH", centre[0] - 2 * radius, centre[1] - radius - 4, 0.6, CRASH_COLOUR)


RELEVANT_COLOUR = (255, 0, 255)  # magenta: on none of the palette's or the colour map's hues


def outline_pixels(view: np.ndarray, mask: np.ndarray, scale: int) -> np.ndarray:
    """``view`` (H * scale, W * scale, 3) with a thin outline around the camera pixels ``mask``
    (H, W) bool, a pixel out from each region."""
    up = cv2.resize(mask.astype(np.uint8), (view.shape[1], view.shape[0]), cv2.INTER_NEAREST)
    up = cv2.dilate(up, np.ones((3, 3), np.uint8), iterations=max(1, scale // 2))
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.ascontiguousarray(view).copy()
    cv2.drawContours(out, contours, -1, RELEVANT_COLOUR, 1, cv2.LINE_8)
    return out
