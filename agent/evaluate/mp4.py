"""Writing and reading the mp4 files of attention videos: H.264 through imageio-ffmpeg, put in
place only once the file reads back whole."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

from drive_attention.agent.run.files import IncompleteWriteError, check_writable, temp_path


class VideoWriter:
    """H.264 mp4 through imageio-ffmpeg; frames must all have the size of the first.

    The video is written to a temporary file beside ``path`` and renamed into place by
    :meth:`close` only once it reads back whole (every frame; a full disk or a file size limit
    truncates it silently): a symbolic link at ``path`` is refused (never written through), and a
    crash or a failed write leaves no half-written video under the real name
    (:class:`agent.run.files.IncompleteWriteError`).
    """

    def __init__(self, path: str | Path, fps: int = 8) -> None:
        self.path = Path(path)
        self.fps = fps
        self._writer = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def append(self, frame: np.ndarray) -> None:
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
            problem = _unreadable(tmp)
            if problem:
                raise IncompleteWriteError(
                    f"cannot write the video {self.path}: {problem} (disk full, or a file size "
                    "limit?); nothing was put under its name. Free space, then evaluate again"
                )
            os.replace(tmp, self.path)  # replaces a link at path itself, never its target
        finally:
            tmp.unlink(missing_ok=True)
        return self.path

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unreadable(path: Path) -> str | None:
    """Why the mp4 at ``path`` is not whole, or None: its top-level boxes must fill the file
    exactly and include the index (``moov``), which ffmpeg writes last, so a file cut off by a
    full disk or a file size limit fails here."""
    found, size, at = set(), path.stat().st_size, 0
    with path.open("rb") as f:
        while at < size:
            f.seek(at)
            head = f.read(16)
            if len(head) < 8:
                return "the file is cut off"
            length, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if length == 1 and len(head) == 16:  # a 64-bit size follows the type
                length = int.from_bytes(head[8:16], "big")
            if length < 8 or at + length > size:
                return "the file is cut off"
            found.add(kind)
            at += length
    return None if b"moov" in found else "the file has no index (moov box)"


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
