"""The README's and docs' pictures, made from the shipped agent so they cannot go stale.

``python scripts/figures.py [--out docs/images]``

Films seeded episodes of the shipped default agent (:mod:`agent.evaluate.watch`) and keeps one
frame of each: ``attention_frame.png`` (a successful episode, a third of the way in), the first
eight seconds of that episode as ``default_agent.gif`` (the README's top), and
``relevance_frame.png`` (the frame of the first half of an episode that ends in a crash with the
most outlined relevant-object pixels). Deterministic: the same code gives the same pictures.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

ATTENTION_SEED = 0  # a successful episode
RELEVANCE_SEED = 20005  # an unseen episode that ends in a crash


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import cv2
    import numpy as np

    from drive_attention.agent.evaluate.mp4 import read_video
    from drive_attention.agent.evaluate.video import RELEVANT_COLOUR
    from drive_attention.agent.evaluate.watch import watch
    from drive_attention.agent.run.cli import guarded
    from drive_attention.agent.run.files import write_atomic

    def save(path: Path, frame: np.ndarray) -> None:
        ok, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        assert ok, "OpenCV encodes PNG"
        write_atomic(path, lambda tmp: tmp.write_bytes(png.tobytes()))
        print(path)

    def save_gif(path: Path, frames: np.ndarray, ms: float, width: int = 640) -> None:
        from PIL import Image  # pillow comes with matplotlib

        h, w = frames.shape[1:3]
        size = (width, round(h * width / w))
        images = [
            Image.fromarray(cv2.resize(f, size, interpolation=cv2.INTER_AREA)).quantize(128)
            for f in frames
        ]
        buffer = io.BytesIO()
        images[0].save(
            buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(ms),
            loop=0, optimize=True,
        )  # fmt: skip
        write_atomic(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
        print(path)

    def body() -> int:
        with tempfile.TemporaryDirectory() as tmp:
            (plain,) = watch(episodes=1, seed=ATTENTION_SEED, out_dir=Path(tmp), window=False)
            frames = read_video(plain.video)
            save(args.out / "attention_frame.png", frames[len(frames) // 3])
            save_gif(args.out / "default_agent.gif", frames[::2][:60], 1000 * 2 / 15)
            (marked,) = watch(
                episodes=1, seed=RELEVANCE_SEED, out_dir=Path(tmp), window=False, relevance=True
            )
            frames = read_video(marked.video).astype(int)
            near = np.abs(frames - np.array(RELEVANT_COLOUR)).max(-1) <= 80  # after mp4 coding
            counts = near.reshape(len(frames), -1).sum(1)[: len(frames) // 2]
            save(args.out / "relevance_frame.png", frames[int(np.argmax(counts))].astype(np.uint8))
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
