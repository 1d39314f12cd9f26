"""Running the study: every job not finished yet in its own worker process, ``jobs`` at a time
(one torch thread each), with Ctrl-C forwarded to the workers so that they save a checkpoint.

A finished job is never redone; an interrupted one resumes from its last checkpoint; a failed
one is reported (and retried on the next invocation).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from drive_attention.agent.benchmark.config import BenchmarkConfig
from drive_attention.agent.benchmark.execution import run_job
from drive_attention.agent.benchmark.jobs import LOG_FILE, Job, outstanding, read_result

OUTCOMES = ("finished", "interrupted", "failed")  # the statuses a job records


def progress_line(job: Job, result: dict[str, Any], log: str | None = None) -> str:
    """``<run>: <status>`` with its returns, or its error and where its log is."""
    line = f"{job.name}: {result['status']}"
    if result["status"] == "finished":
        ev = result["evaluation"]
        return line + (
            f", return {ev['batched']['mean_return']:.2f} (batched) "
            f"{ev['reference']['mean_return']:.2f} (reference)"
        )
    return line + f" ({result.get('error')}; see {log or f'{job.run_dir}/{LOG_FILE}'})"


def _job_main(job: Job) -> None:
    """A job's own process: its own process group, so a terminal's Ctrl-C reaches only the
    scheduler, which forwards exactly one SIGINT (a second would abort without a checkpoint)."""
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    run_job(job)


@dataclass
class _Running:
    job: Job
    process: BaseProcess
    interrupted: bool = False


def run_benchmark(
    config: BenchmarkConfig,
    runs_root: Path,
    jobs: int | None = None,
    say: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], bool]:
    """Run every job not finished yet, one process each, ``jobs`` at a time.

    Returns every job's latest outcome (finished, interrupted, failed) and whether the study was
    interrupted (Ctrl-C: running jobs save a checkpoint and stop; no new job starts)."""
    todo, results, pending = outstanding(config, runs_root)
    n_jobs = min(jobs or config.jobs, max(1, len(pending)))
    say(
        f"benchmark {config.name}: {len(todo)} runs ({len(todo) - len(pending)} already done), "
        f"{config.steps} steps each, {n_jobs} at a time; logs in {runs_root}/<run>/{LOG_FILE}"
    )
    context = multiprocessing.get_context("spawn")
    queue, running = list(pending), []
    started, finished, interrupted = time.perf_counter(), 0, False
    while queue or running:
        try:
            while queue and not interrupted and len(running) < n_jobs:
                job = queue.pop(0)
                process = context.Process(target=_job_main, args=(job,), name=job.name)
                process.start()
                running.append(_Running(job, process))
            time.sleep(0.2)
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = True
            say("interrupted: the running jobs save a checkpoint and stop; Ctrl-C again aborts")
        if interrupted:
            for item in running:
                if not item.interrupted and item.process.is_alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(item.process.pid, signal.SIGINT)
                    item.interrupted = True
        for item in [r for r in running if not r.process.is_alive()]:
            running.remove(item)
            item.process.join()
            job = item.job
            result = read_result(job)
            if result is None or result.get("status") not in OUTCOMES:
                result = {
                    **job.identity(),
                    "status": "failed",
                    "error": f"the job's process died (exit code {item.process.exitcode})",
                }
            results[job.name] = result
            finished += 1
            elapsed = time.perf_counter() - started
            left = len(queue) + len(running)
            line = f"[{finished}/{len(pending)}] {progress_line(job, result)}"
            eta = "" if interrupted else f", about {elapsed / finished * left / 60:.0f} min left"
            say(f"{line}; {elapsed / 60:.1f} min{eta}")
    return [results[job.name] for job in todo if job.name in results], interrupted
