"""One sink for every metric of a run: a local JSON-lines file, and Weights & Biases when on.

Keys are namespaced (``train/``, ``rollout/``, ``time/`` from SB3, ``eval/``, ``attention/``).
W&B is imported only when it is on; any W&B failure is reported once and logging carries on
locally (``runs/<name>/metrics.jsonl``, videos in ``runs/<name>/videos/``), so training never
dies because of W&B.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.logger import KVWriter

from drive_attention.agent.run.files import UnsafePathError, append_line, check_writable
from drive_attention.envs.configuration import ConfigError

STEP_KEY = "global_step"  # the x-axis of every W&B chart (environment steps)
FRAME_KEY = "frame"  # the x-axis of per-frame series (``attention/frame/...``)
BEST_SUMMARIES: tuple[str, ...] = ("eval/mean_return", "eval/success_rate")
"""Metrics whose run summary is their best (highest) value, not their last."""
INIT_TIMEOUT_S = 15.0
"""[s] how long an online run waits for the W&B server before it logs offline (W&B's own default
is 90 s, which a server that never answers makes every training and evaluation wait)."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {text[0] if text else ''}"[:300]


def wandb_mode(requested: str) -> str:
    """``online`` only when W&B credentials are configured (else ``offline``); or as requested."""
    if requested != "online":
        return requested
    try:
        import wandb

        if wandb.login(prompt=False, verify=False):
            return "online"
    except Exception as err:
        print(f"W&B: cannot check the login ({err}); logging offline", file=sys.stderr)
    print("W&B: not logged in (run `wandb login` to log online); logging offline", file=sys.stderr)
    return "offline"


_USER_DATA_DIR = os.environ.get("WANDB_DATA_DIR")  # a data folder the user chose, if any


class RunLogger:
    """Metrics, videos, tables and the model artifact of one run."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        mode: str = "disabled",
        config: Mapping[str, Any] | None = None,
        project: str = "drive-attention",
        entity: str | None = None,
        group: str | None = None,
        tags: Sequence[str] = (),
        name: str | None = None,
        job_type: str = "train",
        run_id: str | None = None,
        system_metrics: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        try:  # appends never follow a link (agent.run.files.append_line); refuse one up front
            check_writable(self.metrics_path)
        except UnsafePathError as err:
            raise ConfigError(f"cannot log metrics: {err}") from None
        self.mode = wandb_mode(mode) if mode != "disabled" else "disabled"
        self.run: Any = None
        self._wandb: Any = None
        self._uploaded: set[str] = set()  # content hashes of the media files sent
        if self.mode == "disabled":
            return
        init = dict(
            project=project, entity=entity, group=group, tags=list(tags), name=name,
            job_type=job_type, config=dict(config or {}), dir=str(self.run_dir), id=run_id,
            resume="allow" if run_id else None,
        )  # fmt: skip
        try:
            import wandb

            self._wandb = wandb
            try:
                self.run = self._init(init, system_metrics)
            except Exception as err:
                if self.mode != "online":
                    raise
                # a server that does not answer (or refuses the run) costs INIT_TIMEOUT_S, once
                print(
                    f"W&B: cannot start the run online ({_first_line(err)}); logging offline "
                    "instead (upload later with `wandb sync`)",
                    file=sys.stderr,
                )
                self.mode = "offline"
                self.run = self._init(init, system_metrics)
        except Exception as err:
            self._fail("init", err)

    def _init(self, init: dict[str, Any], system_metrics: bool) -> Any:
        wandb = self._wandb
        # W&B stages artifact files (the checkpoints) in its data folder, by default in the
        # user's home: in the run's own wandb/ folder they travel with a run copied off an
        # offline node and synced elsewhere (a data folder the user chose is kept)
        if _USER_DATA_DIR is None:
            os.environ["WANDB_DATA_DIR"] = str(self.run_dir / "wandb" / "data")
        # console capture: the run's printed lines (progress, evaluations) in the Logs tab
        settings = wandb.Settings(
            console="wrap", x_disable_stats=not system_metrics, init_timeout=INIT_TIMEOUT_S
        )
        run = wandb.init(mode=self.mode, settings=settings, **init)
        run.define_metric(STEP_KEY)
        run.define_metric(FRAME_KEY)
        run.define_metric("attention/frame/*", step_metric=FRAME_KEY)
        run.define_metric("*", step_metric=STEP_KEY)
        for key in BEST_SUMMARIES:
            run.define_metric(key, step_metric=STEP_KEY, summary="max,last")
        return run

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> bool:
        """Whether W&B is receiving data."""
        return self.run is not None

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def url(self) -> str | None:
        """The run's page (online runs; None offline or disabled)."""
        if self.run is None or self.mode != "online":
            return None
        try:
            return self.run.url
        except Exception:
            return None

    def _fail(self, what: str, err: BaseException) -> None:
        print(
            f"W&B failed during {what} ({err.__class__.__name__}: {err}); carrying on with local "
            f"logging only, in {self.run_dir}",
            file=sys.stderr,
        )
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:
                pass

    def _wandb_call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.run is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            self._fail(what, err)
            return None

    # ------------------------------------------------------------------ logging
    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Numbers under namespaced keys, at environment step ``step``."""
        numbers = {k: _number(v) for k, v in metrics.items()}
        numbers = {k: v for k, v in numbers.items() if v is not None}
        if not numbers:
            return
        append_line(self.metrics_path, json.dumps({STEP_KEY: int(step), **numbers}))
        self._wandb_call("log", lambda: self.run.log({STEP_KEY: int(step), **numbers}))

    def log_frames(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Per-frame series (W&B only, on the ``frame`` axis: ``attention/frame/...``); the
        local record of frames is the evaluation's JSON, so ``metrics.jsonl`` keeps one row per
        environment step."""

        def send() -> None:
            for frame, row in enumerate(rows):
                numbers = {k: _number(v) for k, v in row.items()}
                numbers = {k: v for k, v in numbers.items() if v is not None}
                self.run.log({FRAME_KEY: frame, **numbers})

        self._wandb_call("frames", send)

    def _first_upload(self, path: str | Path) -> bool:
        """Whether the file's content is new to this run (and now remembered): the final
        evaluation films the same seeded episodes as the last periodic one, and W&B would
        upload the byte-identical videos again."""
        try:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            return True  # let W&B say what is wrong with it
        if digest in self._uploaded:
            return False
        self._uploaded.add(digest)
        return True

    def log_video(self, key: str, path: str | Path, step: int, caption: str | None = None) -> None:
        """An mp4 already written to the run directory, under a stable key; a video whose
        bytes this run has uploaded already is not uploaded again."""
        if self.run is None or not self._first_upload(path):
            return
        self._wandb_call(
            "video",
            lambda: self.run.log(
                {
                    STEP_KEY: int(step),
                    key: self._wandb.Video(str(path), caption=caption, format="mp4"),
                }
            ),
        )

    def log_table(
        self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int
    ) -> None:
        """A W&B table; cells that are paths of ``.mp4`` files become videos."""

        def cell(value: Any) -> Any:
            if isinstance(value, Path) and value.suffix == ".mp4":
                if not self._first_upload(value):  # uploaded already: its path, as text
                    return str(value)
                return self._wandb.Video(str(value), format="mp4")
            return value

        def send() -> None:
            table = self._wandb.Table(
                columns=list(columns),
                data=[[cell(v) for v in row] for row in rows],
                allow_mixed_types=True,
            )
            self.run.log({STEP_KEY: int(step), key: table})

        self._wandb_call("table", send)

    def log_bar(
        self, key: str, label: str, value: str, data: Mapping[str, float], step: int
    ) -> None:
        """A W&B bar chart of ``data`` (label to value)."""

        def send() -> None:
            table = self._wandb.Table(
                columns=[label, value], data=[[k, v] for k, v in data.items()]
            )
            chart = self._wandb.plot.bar(table, label, value, title=key)
            self.run.log({STEP_KEY: int(step), key: chart})

        self._wandb_call("bar chart", send)

    def summary(self, metrics: Mapping[str, Any]) -> None:
        """Final figures (e.g. the comparison with the reference policies)."""
        self._wandb_call("summary", lambda: self.run.summary.update(dict(metrics)))

    def log_model(
        self,
        files: Sequence[str | Path],
        name: str,
        metadata: Mapping[str, Any],
        aliases: Sequence[str] = ("latest",),
    ) -> None:
        """A checkpoint (and config) as a version of the W&B model artifact ``name``, with
        ``aliases`` (``latest``, ``best``, ...) and ``step-<N>``; W&B moves an alias to the
        newest version that is given it, and makes no new version for unchanged files."""

        def send() -> None:
            artifact = self._wandb.Artifact(
                _artifact_name(name), type="model", metadata=dict(metadata)
            )
            for path in files:
                artifact.add_file(str(path))
            tags = [*dict.fromkeys(aliases), f"step-{metadata.get('step', 0)}"]
            self.run.log_artifact(artifact, aliases=tags)

        self._wandb_call("model artifact", send)

    def finish(self) -> None:
        """Close the W&B run; print its page (online) or the command that uploads it
        (offline)."""
        if self.run is None:
            return
        sync_dir = getattr(getattr(self.run, "settings", None), "sync_dir", None)
        url = self.url
        self._wandb_call("finish", self.run.finish)
        self.run = None
        if url:
            print(f"W&B run: {url}")
        elif self.mode == "offline" and sync_dir:
            print(f"W&B run saved offline; upload it with:  wandb sync {sync_dir}")


class SB3Writer(KVWriter):
    """Forwards SB3's logger dumps (``train/``, ``rollout/``, ``time/``) to a RunLogger."""

    def __init__(self, logger: RunLogger) -> None:
        self.logger = logger

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0
    ) -> None:
        self.logger.log(
            {k: v for k, v in key_values.items() if "wandb" not in key_excluded.get(k, ())}, step
        )

    def close(self) -> None:
        pass


def _number(value: Any) -> float | int | None:
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def _artifact_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:120] or "model"
