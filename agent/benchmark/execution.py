"""One job, start to end, in its own process: train (or resume) the run, measure its throughput,
evaluate it, and record the outcome in ``benchmark.json`` (output to ``benchmark.log``).

An interrupted job records ``interrupted`` after its checkpoint; a failing one records ``failed``
with the error, and the study goes on.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drive_attention.agent.benchmark.evaluation import evaluate_job
from drive_attention.agent.benchmark.jobs import LOG_FILE, RESULT_FILE, Job, write_json
from drive_attention.agent.run.admission import prepare
from drive_attention.agent.run.build import make_vec_env
from drive_attention.agent.run.config import ExperimentConfig
from drive_attention.agent.run.files import append_line
from drive_attention.agent.run.rundir import RunDir
from drive_attention.agent.training import Trainer

SEGMENTS_FILE = "benchmark_segments.jsonl"  # steps and seconds of each training segment


def run_job(job: Job) -> dict[str, Any]:
    """Train (or resume) and evaluate one job, output to its log file; records the outcome."""
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with (
        open(run_dir / LOG_FILE, "a", buffering=1) as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        try:
            result = _train_and_evaluate(job)
        except KeyboardInterrupt:
            result = {"status": "interrupted", "error": "interrupted during evaluation"}
        except Exception as err:  # reported, not dropped: the benchmark goes on
            traceback.print_exc()
            result = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        result = {**job.identity(), **result, "evaluation_spec": job.evaluation}
        write_json(run_dir / RESULT_FILE, result)
    return result


def _train_and_evaluate(job: Job) -> dict[str, Any]:
    torch.set_num_threads(1)
    run = RunDir(Path(job.run_dir))
    resume = run.latest_checkpoint() is not None
    print(f"== {job.name}: {'resuming' if resume else 'training'} ({time.ctime()})", flush=True)
    if resume:
        prepared = prepare(None, job.overrides, resume=run.path)
    else:
        aside = run.set_aside(extra=(SEGMENTS_FILE,))  # a failed attempt that saved nothing
        if aside is not None:
            print(f"   earlier attempt without a checkpoint moved to {aside}", flush=True)
        prepared = prepare(job.base, job.overrides, base=job.base_config)
    start_step = prepared.checkpoint.step if prepared.checkpoint else 0
    trainer = Trainer(prepared)
    started = time.perf_counter()
    code = trainer.run()
    segment = {
        "from_step": start_step,
        "steps": int(trainer.model.num_timesteps) - start_step if trainer.model else 0,
        "seconds": time.perf_counter() - started,
    }
    append_line(run.path / SEGMENTS_FILE, json.dumps(segment))
    if code != 0:
        return {"status": "interrupted", "error": f"training stopped at a checkpoint ({code})"}
    config = prepared.config
    trained = [s for s in _segments(run.path) if s["steps"] > 0]
    steps = sum(s["steps"] for s in trained)
    seconds = sum(s["seconds"] for s in trained)
    return {
        "status": "finished",
        "steps": config.train.steps,
        "resumed": resume,
        "model": config.model.name,
        "curve": learning_curve(run.path / "metrics.jsonl"),
        "throughput": {
            # training segments only: an evaluation-only rerun does not dilute the rate
            "train_steps_per_s": steps / seconds if seconds > 0 else math.nan,
            "train_seconds": seconds,
            "env_steps_per_s": raw_env_rate(config, job.throughput_seconds),
        },
        **evaluate_job(job),
    }


def _segments(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / SEGMENTS_FILE
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def learning_curve(metrics: Path) -> dict[str, list[float]]:
    """Training-episode return and success against steps and seconds, from a run's
    ``metrics.jsonl``.

    ``rollout/ep_rew_mean`` is SB3's mean over the last 100 finished training episodes;
    ``rollout/success_rate`` the share of the episodes that ended since the previous update that
    arrived (NaN where none ended, or in runs logged before it was recorded). A resumed
    run appends a new segment whose clock restarts at 0 and whose first steps may repeat steps
    logged before the interruption: the repeated rows are dropped and the clock accumulated.
    """
    points: list[tuple[int, float, float, float]] = []  # (step, seconds, return, success)
    offset = 0.0
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a hard kill
            continue
        if "rollout/ep_rew_mean" not in row or "time/time_elapsed" not in row:
            continue
        step, elapsed = int(row["global_step"]), float(row["time/time_elapsed"])
        if points and (step <= points[-1][0] or elapsed + offset < points[-1][1]):
            offset = points[-1][1]  # a new segment
            while points and points[-1][0] >= step:
                points.pop()
        success = float(row.get("rollout/success_rate", math.nan))
        points.append((step, elapsed + offset, float(row["rollout/ep_rew_mean"]), success))
    return {
        "steps": [p[0] for p in points],
        "seconds": [p[1] for p in points],
        "return": [p[2] for p in points],
        "success": [p[3] for p in points],
    }


def raw_env_rate(config: ExperimentConfig, seconds: float) -> float:
    """Steps/s of the run's own vectorised env under random actions (no learner)."""
    venv = make_vec_env(config.env, seed=12_345)
    try:
        venv.reset()
        n = venv.num_envs
        steps, started = 0, time.perf_counter()
        while steps == 0 or time.perf_counter() - started < seconds:
            venv.step(np.array([venv.action_space.sample() for _ in range(n)]))
            steps += n
        return steps / (time.perf_counter() - started)
    finally:
        venv.close()
