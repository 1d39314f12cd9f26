"""The benchmark study on Ray: every job a Ray task with its own resources.

The jobs, their run directories, their results and the report are the same as with the local
launcher (:func:`agent.benchmark.run_benchmark`); only where a job trains changes. Each task trains
in a scratch folder on its node and mirrors the run directory to the driver
(:mod:`agent.scale.store`). A task whose node dies is retried by Ray on another node, where it
copies the run directory back and resumes from its last checkpoint.

Every job's CPUs and GPUs are reserved for it alone in a placement group of one bundle. A plain
task would not keep them: Ray lends a task's CPUs to the next task while it waits in ``ray.get``,
which a job does when it pulls its run directory and at every checkpoint it uploads, so a one-CPU
node trained two runs at once. A bundle's CPUs go back only to the bundle, which holds nothing
else. ``ray_attempts.jsonl`` in the run directory records the node, the start and end time and
the code version (:mod:`agent.run.version`) of every attempt that ended.

A job refuses to train on a node whose code differs from the driver's (a node left on another
version of this project): it fails in one line naming both versions, and the same command trains
it once the node is updated. Finished runs whose records name other code than the driver's are
kept, and listed when the study starts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from drive_attention.agent.benchmark.config import BenchmarkConfig
from drive_attention.agent.benchmark.execution import run_job
from drive_attention.agent.benchmark.jobs import LOG_FILE, Job, outstanding, read_result
from drive_attention.agent.benchmark.scheduler import OUTCOMES, progress_line
from drive_attention.agent.run.files import append_line
from drive_attention.agent.run.version import code_version, git_commit
from drive_attention.agent.scale.cluster import check_resources, connected
from drive_attention.agent.scale.store import RunMirror, pull, start_store

TEXT_SUFFIXES = (".json", ".jsonl", ".yaml", ".log")
RETRIES = 3  # a job is retried this often after its node or worker died
ATTEMPTS_FILE = "ray_attempts.jsonl"  # per attempt: node, started, ended ([s] on its node's clock)


def repath(old: str, new: str) -> Callable[[str, bytes], bytes]:
    """Text files mention the scratch folder; on the driver they name the real one."""

    def transform(relative: str, data: bytes) -> bytes:
        if relative.endswith(TEXT_SUFFIXES) and "/" not in relative:
            return data.replace(old.encode(), new.encode())
        return data

    return transform


def train_remote(job: Job, store: Any, driver_code: str) -> dict[str, Any]:
    """One job inside a Ray task (see the module's docstring); returns its outcome."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    started = time.time()
    if code_version() != driver_code:
        error = (
            f"Ray node {node[:8]} runs other code ({code_version()}) than the driver "
            f"({driver_code}); install the driver's version there (docs/sweeps-and-ray.md)"
        )
        return {**job.identity(), "status": "failed", "error": error, "ray_node": node}
    root = Path(job.run_dir).parent  # the driver's runs folder
    scratch = Path(tempfile.mkdtemp(prefix="drive-attention-"))
    folder = scratch / job.name
    try:
        pulled = pull(store, job.name, folder)
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / LOG_FILE  # which node trained which part of the run
        cut = log.is_file() and not log.read_bytes().endswith(b"\n")  # a progress bar, killed
        with open(log, "a") as out:
            print(
                f"{cut * chr(10)}== Ray node {node} ({'resuming' if pulled else 'starting'})",
                file=out,
            )
        local = replace(
            job,
            run_dir=str(folder),
            overrides={**job.overrides, "logging.root": str(scratch)},
        )
        with RunMirror(store, job.name, folder, repath(str(scratch), str(root))):
            result = run_job(local)
            attempt = {"node": node, "started": started, "ended": time.time()}
            attempt.update(code=code_version(), commit=git_commit())
            append_line(folder / ATTEMPTS_FILE, json.dumps(attempt))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {**result, "run": job.run_dir, "ray_node": node}


def run_benchmark_ray(
    config: BenchmarkConfig,
    runs_root: Path,
    address: str | None,
    jobs: int | None = None,
    cpus_per_job: float = 1.0,
    gpus_per_job: float = 0.0,
    say: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], bool]:
    """Run every job not finished yet as a Ray task; the local launcher's return value.

    ``jobs`` caps the tasks in flight (default: as many as the cluster places at once)."""
    todo, results, pending = outstanding(config, runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    with connected(address, num_cpus=jobs) as ray:
        check_resources(ray, cpus_per_job, gpus_per_job)
        store = start_store(ray, runs_root)
        task = ray.remote(train_remote)
        bundle = {"CPU": cpus_per_job, **({"GPU": gpus_per_job} if gpus_per_job else {})}
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
        cap = jobs or len(pending) or 1
        code = code_version()
        say(
            f"benchmark {config.name} on Ray ({nodes} node(s), "
            f"{ray.cluster_resources().get('CPU', 0):g} CPUs): {len(todo)} runs "
            f"({len(todo) - len(pending)} already done), {config.steps} steps each, "
            f"{cpus_per_job:g} CPU / {gpus_per_job:g} GPU per run, code {code}; logs in "
            f"{runs_root}/<run>/{LOG_FILE}"
        )
        waiting = {job.name for job in pending}
        other = [j.name for j in todo if j.name not in waiting and other_code(j, code)]
        if other:
            say(
                f"{len(other)} finished run(s) were trained by other code than {code} (see "
                f"their {ATTEMPTS_FILE}): {', '.join(other)}; kept: delete a run's folder to "
                "train it again"
            )
        queue, flying, groups = list(pending), {}, {}
        started, finished, interrupted = time.perf_counter(), 0, False
        while queue or flying:
            try:
                while queue and not interrupted and len(flying) < cap:
                    job = queue.pop(0)
                    group = ray.util.placement_group([bundle])
                    ref = task.options(
                        num_cpus=cpus_per_job,
                        num_gpus=gpus_per_job,
                        max_retries=RETRIES,
                        name="benchmark-job",
                        scheduling_strategy=in_group(group),
                    ).remote(job, store, code)
                    flying[ref], groups[ref] = job, group
                ready, _ = ray.wait(list(flying), num_returns=1, timeout=0.5)
            except KeyboardInterrupt:
                if interrupted:
                    raise
                interrupted = True
                say(
                    "interrupted: the running jobs stop (each keeps its last checkpoint); "
                    "Ctrl-C again aborts"
                )
                for ref in flying:
                    ray.cancel(ref)
                continue
            for ref in ready:
                job = flying.pop(ref)
                ray.util.remove_placement_group(groups.pop(ref))
                try:
                    result = ray.get(ref)
                except Exception as err:  # the task ran out of retries, or was cancelled
                    result = read_result(job)
                    if result is None or result.get("status") not in OUTCOMES:
                        status = "interrupted" if interrupted else "failed"
                        result = {**job.identity(), "status": status, "error": _short(err)}
                results[job.name] = result
                finished += 1
                elapsed = time.perf_counter() - started
                left = len(queue) + len(flying)
                eta = "" if interrupted else f", about {elapsed / finished * left / 60:.0f} min"
                line = progress_line(job, result)
                if "ray_node" in result:
                    line += f" (Ray node {result.pop('ray_node')[:8]})"
                say(f"[{finished}/{len(pending)}] {line}; {elapsed / 60:.1f} min{eta}")
        ray.kill(store)
    return [results[job.name] for job in todo if job.name in results], interrupted


def other_code(job: Job, code: str) -> bool:
    """Whether any recorded attempt of ``job`` ran other code than ``code`` (runs trained by the
    local launcher record none)."""
    path = Path(job.run_dir) / ATTEMPTS_FILE
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        try:
            recorded = json.loads(line).get("code")
        except (ValueError, AttributeError):  # a line cut short
            continue
        if recorded is not None and recorded != code:
            return True
    return False


def in_group(group: Any) -> Any:
    """Schedule a task in the (one) bundle of ``group``."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:300]
