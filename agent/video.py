"""Attention videos: the camera frame under a heat-map of the policy's patch attention, bars for
its attention over sensor tokens, and the action, speed and reward as text.

Frame layout (``scale`` = video pixels per camera pixel)::

    +-----------------------------+---------------------------+
    | camera (H*scale x W*scale)  | camera 63% | sensors 37%  |
    | + attention heat-map over   | ego       ██████     21%  |
    |   the area the patch grid   | rays.00   ██          4%  |
    |   covers                    | ...                       |
    |                             | step, action, speed,      |
    |                             | reward, return            |
    +-----------------------------+---------------------------+
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agent.files import check_writable, temp_path

PANEL_WIDTH = 256  # [px] width of the text and bars panel
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT = (235, 235, 235)
_DIM = (150, 150, 150)
_BAR = (255, 170, 60)
_BACKGROUND = (24, 24, 28)


@dataclass
class FrameText:
    """What is printed under the sensor bars of one video frame."""

    step: int
    action: str
    speed: float  # [m/s]
    reward: float
    episode_return: float


def heatmap_overlay(
    frame: np.ndarray, attention: np.ndarray, cell_px: tuple[int, int], alpha: float = 0.6
) -> np.ndarray:
    """Blend a JET heat-map of ``attention`` over ``frame``.

    ``frame`` is ``(H, W, 3)`` uint8 at display size; ``attention`` is ``(gh, gw)`` over the
    patch grid; ``cell_px`` is the display size ``(ph, pw)`` of one patch. The grid covers the
    top-left ``(gh * ph, gw * pw)`` pixels (the camera stem drops any remainder), so the map is
    upsampled to exactly that area. Opacity grows with attention (``alpha`` at the maximum).
    """
    gh, gw = attention.shape
    height, width = min(gh * cell_px[0], frame.shape[0]), min(gw * cell_px[1], frame.shape[1])
    weights = attention.astype(np.float32)
    weights = weights / max(float(weights.max()), 1e-12)  # (gh, gw) in [0, 1]
    up = cv2.resize(weights, (width, height), interpolation=cv2.INTER_LINEAR)  # (h, w)
    colours = cv2.applyColorMap((up * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    opacity = (0.15 + (alpha - 0.15) * up)[..., None]  # (h, w, 1)
    out = frame.copy()
    region = out[:height, :width].astype(np.float32)
    out[:height, :width] = (region * (1 - opacity) + colours * opacity).astype(np.uint8)
    return out


def _text(image: np.ndarray, text: str, x: int, y: int, scale: float = 0.4, colour=_TEXT) -> None:
    cv2.putText(image, text, (x, y), _FONT, scale, colour, 1, cv2.LINE_AA)


def render_frame(
    camera: np.ndarray,
    text: FrameText,
    camera_attention: np.ndarray | None = None,
    sensor_attention: np.ndarray | None = None,
    sensor_labels: Sequence[str] = (),
    camera_share: float | None = None,
    cell_px: tuple[int, int] | None = None,
    scale: int = 4,
    legend: Sequence[str] = (),
) -> np.ndarray:
    """One video frame, ``(H', W', 3)`` uint8 with both sides multiples of 16.

    ``camera`` is the observation's ``(H, W, 3 * k)`` frame stack (the newest frame is drawn);
    ``camera_attention`` is ``(gh, gw)``; ``sensor_attention`` is ``(S,)`` with one label per
    token; ``camera_share`` is the fraction of attention on camera patches; ``cell_px`` is one
    patch in camera pixels (default ``(H // gh, W // gw)``); ``legend`` lines (e.g. the
    attention mass per road class) are printed under the text.
    """
    frame = np.ascontiguousarray(camera[..., -3:])  # (H, W, 3) newest frame
    h, w = frame.shape[:2]
    view = cv2.resize(frame, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    if camera_attention is not None:
        gh, gw = camera_attention.shape
        cell = cell_px or (h // gh, w // gw)
        view = heatmap_overlay(view, camera_attention, (cell[0] * scale, cell[1] * scale))

    n_bars = 0 if sensor_attention is None else len(sensor_attention)
    row = 14  # [px] per bar
    needed = 28 + n_bars * row + 6 * 16 + 8 + (len(legend) + 1) * 14 * bool(legend)
    height = _round_up(max(view.shape[0], needed), 16)
    width = _round_up(view.shape[1], 16) + PANEL_WIDTH
    out = np.empty((height, width, 3), np.uint8)
    out[:] = _BACKGROUND
    out[: view.shape[0], : view.shape[1]] = view
    x0 = _round_up(view.shape[1], 16) + 8

    y = 16
    if camera_share is not None:
        _text(out, f"camera {camera_share:4.0%} | sensors {1 - camera_share:4.0%}", x0, y)
    elif camera_attention is None and sensor_attention is None:
        _text(out, "no attention maps for this policy", x0, y, colour=_DIM)
    y += 12
    if sensor_attention is not None:
        top = float(np.max(sensor_attention)) if n_bars else 1.0
        label_w, bar_w = 96, PANEL_WIDTH - 96 - 48
        for label, weight in zip(sensor_labels, sensor_attention):
            y += row
            _text(out, label[:14], x0, y - 3, 0.35, _DIM)
            length = round(bar_w * float(weight) / max(top, 1e-12))
            cv2.rectangle(out, (x0 + label_w, y - 11), (x0 + label_w + length, y - 3), _BAR, -1)
            _text(out, f"{float(weight):.1%}", x0 + label_w + bar_w + 2, y - 3, 0.35)
    y += 20
    for line in (
        f"step {text.step}",
        f"action {text.action}",
        f"speed {text.speed:5.1f} m/s",
        f"reward {text.reward:+.2f}",
        f"return {text.episode_return:+.2f}",
    ):
        _text(out, line, x0, y)
        y += 16
    if legend:
        _text(out, "attention by road element", x0, y, 0.35, _DIM)
        for line in legend:
            y += 14
            _text(out, line, x0, y, 0.35)
    return out


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class VideoWriter:
    """H.264 mp4 through imageio-ffmpeg; frames must all have the size of the first.

    The video is written to a temporary file beside ``path`` and renamed into place by
    :meth:`close`, so a symbolic link at ``path`` is refused (never written through) and a crash
    leaves no half-written video under the real name.
    """

    def __init__(self, path: str | Path, fps: int = 8) -> None:
        self.path = Path(path)
        self.fps = fps
        self._writer = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def append(self, frame: np.ndarray) -> None:
        import imageio_ffmpeg

        if self._writer is None:
            check_writable(self.path)  # UnsafePathError (an OSError) for a link
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (frame.shape[1], frame.shape[0])
            self._tmp = temp_path(self.path)
            self._tmp.unlink(missing_ok=True)  # left by a killed process with the same id
            self._writer = imageio_ffmpeg.write_frames(
                str(self._tmp),
                self._size,
                fps=self.fps,
                codec="libx264",
                macro_block_size=16,
                output_params=["-f", "mp4"],  # the temporary name has no .mp4 suffix
            )
            self._writer.send(None)  # start the generator
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.send(np.ascontiguousarray(frame, dtype=np.uint8))
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file; returns its path, or None when no frame was written."""
        if self._writer is None:
            return None
        writer, tmp = self._writer, self._tmp
        self._writer = self._tmp = None
        try:
            writer.close()
            os.replace(tmp, self.path)  # replaces a link at path itself, never its target
        finally:
            tmp.unlink(missing_ok=True)
        return self.path

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video as ``(T, H, W, 3)`` uint8 (for tests and checks)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    capture.release()
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
