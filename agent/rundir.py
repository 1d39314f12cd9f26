"""The run directory ``runs/<name>/`` and what lives in it.

::

    runs/<name>/
        config.yaml        resolved config (every option spelled out)
        run.json           W&B run id, start times, the commands that wrote it
        checkpoints/       step_<N>.safetensors
        videos/            attention videos (mp4)
        eval/              evaluation JSON (periodic, final, evaluate.py)
        metrics.jsonl      every logged metric, one JSON object per line
        wandb/             the W&B run files (offline runs: upload with `wandb sync`)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.checkpoint import latest_checkpoint


@dataclass(frozen=True)
class RunDir:
    """Paths of one run."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def videos(self) -> Path:
        return self.path / "videos"

    @property
    def eval(self) -> Path:
        return self.path / "eval"

    @property
    def info_path(self) -> Path:
        return self.path / "run.json"

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.checkpoints)

    def create(self) -> RunDir:
        for folder in (self.path, self.checkpoints, self.videos, self.eval):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def read_info(self) -> dict[str, Any]:
        if not self.info_path.is_file():
            return {}
        try:
            return json.loads(self.info_path.read_text())
        except ValueError:
            return {}

    def update_info(self, **entries: Any) -> None:
        info = self.read_info()
        info.update(entries)
        info.setdefault("commands", []).append(
            {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv}
        )
        self.info_path.write_text(json.dumps(info, indent=2) + "\n")


def default_run_name(config_path: str | Path) -> str:
    """``<config stem>-<YYYYmmdd-HHMMSS>``."""
    return f"{Path(config_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
