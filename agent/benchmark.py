"""The benchmark study behind the README's Results: encoders x scenarios x seeds, trained with equal
step budgets on the batched simulator and evaluated on both backends.

One *job* is one training run (``<runs>/<scenario>-<arm>-s<seed>/``, an ordinary run directory,
made by :class:`agent.training.Trainer`) followed by its evaluation, written to
``benchmark.json`` in the run directory. Jobs run in worker processes (``jobs`` at a time, one
torch thread each) with their output in ``benchmark.log`` beside it. A finished job is never
redone; an interrupted one resumes from its last checkpoint; a failed one is reported (and retried
on the next invocation). :func:`aggregate` turns the job results into means with 95% intervals
over seeds, learning curves, robustness, attribution and throughput tables.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from envs.configuration import ConfigError, build, check, closest

RESULT_FILE = "benchmark.json"
LOG_FILE = "benchmark.log"
METRICS = ("mean_return", "success_rate", "collision_rate")


# ----------------------------------------------------------------------------- configuration
@dataclass
class ScenarioSpec:
    """A scenario: the batched id it trains on and the highway-env id it is checked on."""

    train: str  # e.g. DriveAttention/BatchedHighway-v0
    reference: str  # e.g. DriveAttention/Highway-v0

    def __post_init__(self) -> None:
        check("Batched" in self.train, f"train: {self.train!r} is not a batched-simulator id")


@dataclass
class EvalSpec:
    """How every trained policy is evaluated (the same seeded episodes for every arm)."""

    episodes: int = 20  # per backend and condition
    seed: int = 10_000  # episode k uses seed + k; disjoint from training seeds
    noise_std: float = 0.3  # sensor-noise ablation
    attribution_arms: list[str] = field(default_factory=list)  # arms with attention maps

    def __post_init__(self) -> None:
        check(self.episodes >= 1, f"episodes: must be at least 1, got {self.episodes}")
        check(self.noise_std > 0, f"noise_std: must be positive, got {self.noise_std}")


@dataclass
class BenchmarkConfig:
    """``configs/benchmark/*.yaml``."""

    name: str  # results go to docs/results/<name>/, runs to runs/benchmark/<name>/
    scenarios: dict[str, ScenarioSpec]
    arms: dict[str, dict[str, Any]]  # arm name -> config overrides (key.sub: value)
    base: str = "configs/batched.yaml"  # the experiment every arm starts from
    steps: int = 40_960  # environment steps per run, equal for every arm
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    overrides: dict[str, Any] = field(default_factory=dict)  # applied to every run, before arms
    evaluation: EvalSpec = field(default_factory=EvalSpec)
    throughput_seconds: float = 5.0  # raw env stepping measured after each run
    jobs: int = 2  # runs at a time (one torch thread each)

    def __post_init__(self) -> None:
        check(bool(self.scenarios), "scenarios: give at least one")
        check(bool(self.arms), "arms: give at least one")
        check(len(self.seeds) >= 1, "seeds: give at least one")
        check(len(set(self.seeds)) == len(self.seeds), f"seeds: repeated in {self.seeds}")
        check(self.steps >= 1, f"steps: must be at least 1, got {self.steps}")
        check(self.jobs >= 1, f"jobs: must be at least 1, got {self.jobs}")
        for arm in self.evaluation.attribution_arms:
            check(
                arm in self.arms,
                f"evaluation.attribution_arms: unknown arm {arm!r}{closest(arm, list(self.arms))}",
            )
        for name in [*self.scenarios, *self.arms]:
            check(
                name[:1].isalpha() and name.replace("_", "").isalnum(),
                f"{name!r}: scenario and arm names are letters, digits and '_', starting with a "
                "letter",
            )
        self.overrides = flatten(self.overrides)
        self.arms = {arm: flatten(values) for arm, values in self.arms.items()}


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{algo: {n_epochs: 2}}`` -> ``{"algo.n_epochs": 2}``: an override sets one key, never a
    whole section."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    for key in out:
        check("." in key, f"override {key!r}: give section.key (e.g. model.name), not a section")
    return out


def load_benchmark_config(
    path: str | Path, steps: int | None = None, seeds: Sequence[int] | None = None
) -> BenchmarkConfig:
    """Read and validate a benchmark YAML and every run it implies (configs, env ids, models,
    attribution arms), before any work."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file; see configs/benchmark/")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping of benchmark settings")
    raw = dict(raw)
    if steps is not None:
        raw["steps"] = steps
    if seeds is not None:
        raw["seeds"] = list(seeds)
    raw.setdefault("name", path.stem)
    try:
        config = build(BenchmarkConfig, raw)
        check_runs(config)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return config


def check_runs(config: BenchmarkConfig) -> None:
    """Every run's config, both env ids of every scenario, and every model, on the real spaces."""
    from agent.build import probe_env
    from agent.loading import _check_same_observation
    from agent.training import _check_model

    jobs = plan(config, Path("runs"))
    experiments = {(job.scenario, job.arm): job.experiment() for job in jobs}
    for scenario, spec in config.scenarios.items():
        first = experiments[(scenario, next(iter(config.arms)))]
        probes = {}
        for role, env_id in (("train", spec.train), ("reference", spec.reference)):
            try:
                probes[role] = probe_env(replace(first.env, id=env_id))
            except ConfigError as err:
                raise ConfigError(f"scenarios.{scenario}.{role}: {err}") from None
        _check_same_observation(probes["train"], probes["reference"], spec.train, spec.reference)
        for arm in config.arms:
            experiment = experiments[(scenario, arm)]
            try:
                _check_model(experiment, probes["train"])
            except ConfigError as err:
                raise ConfigError(f"arm {arm!r}: {err}") from None
            if arm in config.evaluation.attribution_arms:
                check(
                    experiment.model.has_attention,
                    f"evaluation.attribution_arms: arm {arm!r} uses model "
                    f"'{experiment.model.name}', which has no attention maps",
                )


# ----------------------------------------------------------------------------- jobs
@dataclass
class Job:
    """One training run and its evaluation."""

    scenario: str
    arm: str
    seed: int
    train_id: str
    reference_id: str
    base: str
    overrides: list[str]  # key.sub=value, last wins
    run_dir: str
    evaluation: dict[str, Any]
    attribution: bool
    throughput_seconds: float

    @property
    def name(self) -> str:
        return Path(self.run_dir).name

    def experiment(self) -> Any:
        """The run's validated :class:`agent.config.ExperimentConfig`."""
        from agent.config import load_config

        try:
            return load_config(self.base, self.overrides)
        except ConfigError as err:
            raise ConfigError(f"arm {self.arm!r}: {err}") from None


def plan(config: BenchmarkConfig, runs_root: Path) -> list[Job]:
    """Every job, seeds outermost so that a partial benchmark covers all arms evenly."""
    jobs = []
    for seed in config.seeds:
        for scenario, spec in config.scenarios.items():
            for arm, arm_overrides in config.arms.items():
                name = f"{scenario}-{arm}-s{seed}"
                settings = {
                    "logging.wandb": "disabled",
                    "logging.video": False,
                    "train.eval_every": 0,
                    "train.final_eval_episodes": 0,
                    "train.torch_threads": 1,
                    **config.overrides,
                    **arm_overrides,
                    "env.id": spec.train,
                    "train.steps": config.steps,
                    "train.seed": seed,
                    "logging.root": str(runs_root),
                    "logging.name": name,
                    "logging.group": f"benchmark-{config.name}",
                }
                jobs.append(
                    Job(
                        scenario=scenario,
                        arm=arm,
                        seed=seed,
                        train_id=spec.train,
                        reference_id=spec.reference,
                        base=config.base,
                        # JSON is YAML: every value keeps its type ("on" stays a string)
                        overrides=[f"{k}={json.dumps(v)}" for k, v in settings.items()],
                        run_dir=str(runs_root / name),
                        evaluation=asdict(config.evaluation),
                        attribution=arm in config.evaluation.attribution_arms,
                        throughput_seconds=config.throughput_seconds,
                    )
                )
    return jobs


def read_result(job: Job) -> dict[str, Any] | None:
    """The job's recorded outcome (finished, interrupted or failed), if any."""
    path = Path(job.run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def stale(job: Job) -> list[str]:
    """How the job's existing run directory differs from what the config asks now."""
    import yaml

    from agent.config import config_diff, to_dict
    from agent.rundir import RunDir

    run = RunDir(Path(job.run_dir))
    changes = []
    if run.config.is_file():
        saved = yaml.safe_load(run.config.read_text()) or {}
        wanted = to_dict(job.experiment())
        changes += [line for line in config_diff(saved, wanted) if not line.startswith("logging.")]
    done = read_result(job)
    if done is not None and "evaluation_spec" in done:
        changes += [
            f"evaluation.{line}" for line in config_diff(done["evaluation_spec"], job.evaluation)
        ]
    return changes


def ensure_fresh(jobs: Sequence[Job], runs_root: Path) -> None:
    """Refuse (before any work) to mix in runs made with other settings."""
    changed = {job.name: stale(job) for job in jobs}
    changed = {name: lines for name, lines in changed.items() if lines}
    if changed:
        name, lines = next(iter(changed.items()))
        raise ConfigError(
            f"{len(changed)} run(s) in {runs_root} were made with other settings (e.g. {name}: "
            f"{'; '.join(lines[:3])}); delete them, or give --runs a new folder"
        )


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_finite(data), indent=1) + "\n")
    os.replace(tmp, path)


def _finite(value: Any) -> Any:
    """NaN and infinities as null: strict JSON readers refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


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
        result = {**_identity(job), **result, "evaluation_spec": job.evaluation}
        _write_json(run_dir / RESULT_FILE, result)
    return result


def _identity(job: Job) -> dict[str, Any]:
    return {"scenario": job.scenario, "arm": job.arm, "seed": job.seed, "run": job.run_dir}


def _train_and_evaluate(job: Job) -> dict[str, Any]:
    import torch

    from agent.rundir import RunDir
    from agent.training import Trainer, prepare

    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
    torch.set_num_threads(1)
    run = RunDir(Path(job.run_dir))
    resume = run.latest_checkpoint() is not None
    print(f"== {job.name}: {'resuming' if resume else 'training'} ({time.ctime()})", flush=True)
    if resume:
        prepared = prepare(None, job.overrides, resume=run.path)
    else:
        prepared = prepare(job.base, job.overrides)
    start_step = prepared.checkpoint.step if prepared.checkpoint else 0
    trainer = Trainer(prepared)
    started = time.perf_counter()
    code = trainer.run()
    segment = {
        "from_step": start_step,
        "steps": int(trainer.model.num_timesteps) - start_step if trainer.model else 0,
        "seconds": time.perf_counter() - started,
    }
    with open(run.path / SEGMENTS_FILE, "a") as f:
        f.write(json.dumps(segment) + "\n")
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


SEGMENTS_FILE = "benchmark_segments.jsonl"


def _segments(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / SEGMENTS_FILE
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def learning_curve(metrics: Path) -> dict[str, list[float]]:
    """Training-episode return against steps and seconds, from a run's ``metrics.jsonl``.

    ``rollout/ep_rew_mean`` is SB3's mean over the last 100 finished training episodes. A resumed
    run appends a new segment whose clock restarts at 0 and whose first steps may repeat steps
    logged before the interruption: the repeated rows are dropped and the clock accumulated.
    """
    points: list[tuple[int, float, float]] = []  # (step, seconds, return)
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
        points.append((step, elapsed + offset, float(row["rollout/ep_rew_mean"])))
    return {
        "steps": [p[0] for p in points],
        "seconds": [p[1] for p in points],
        "return": [p[2] for p in points],
    }


def raw_env_rate(config: Any, seconds: float) -> float:
    """Steps/s of the run's own vectorised env under random actions (no learner)."""
    from agent.build import make_vec_env

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


def evaluate_job(job: Job) -> dict[str, Any]:
    """The trained policy on both backends; robustness and attribution on the reference."""
    from agent.attention_report import analyse_attention
    from agent.attribution import ABLATIONS, ModalityAblation
    from agent.build import make_env
    from agent.evaluation import evaluate
    from agent.loading import load_agent

    spec = job.evaluation
    episodes, seed = spec["episodes"], spec["seed"]
    out: dict[str, Any] = {"evaluation": {}, "robustness": {}}
    for backend, env_id in (("batched", job.train_id), ("reference", job.reference_id)):
        agent = load_agent(job.run_dir, env_id=env_id, device="cpu")
        kwargs = dict(agent.config.env.kwargs)
        env = make_env(env_id, kwargs)
        try:
            report = evaluate(env, agent.policy, episodes, seed, env_id=env_id)
        finally:
            env.close()
        out["evaluation"][backend] = {"env_id": env_id, **_summary(report)}
        print(f"{backend} ({env_id}): {out['evaluation'][backend]}", flush=True)
        if backend != "reference":
            continue
        if job.attribution:  # attribution, occlusion check and the same three ablations
            attention = analyse_attention(
                agent.policy,
                env_id,
                kwargs,
                report,
                episodes,
                seed,
                cell=(agent.config.model.patch, agent.config.model.patch),
                noise_std=spec["noise_std"],
                progress=lambda line: print(line, flush=True),
            )
            out["attention"] = {
                key: attention[key]
                for key in (
                    "class_mass",
                    "class_lift",
                    "class_share",
                    "camera_share",
                    "occlusion_ratio",
                    "frames",
                )
            }
            out["robustness"] = {
                mode: {k: row[k] for k in METRICS} for mode, row in attention["modality"].items()
            }
        else:
            out["robustness"]["intact"] = {k: out["evaluation"][backend][k] for k in METRICS}
            for mode in ABLATIONS:
                ablated = ModalityAblation(make_env(env_id, kwargs), mode, spec["noise_std"], seed)
                try:
                    summary = _summary(evaluate(ablated, agent.policy, episodes, seed))
                finally:
                    ablated.close()
                out["robustness"][mode] = {k: summary[k] for k in METRICS}
    return out


def _summary(report: Any) -> dict[str, Any]:
    summary = report.summary()
    return {
        **summary,
        "episodes": len(report.episodes),
        "returns": [e.episode_return for e in report.episodes],
    }


def reference_policies(config: BenchmarkConfig, runs_root: Path) -> dict[str, Any]:
    """Random and idle policies on every scenario and backend: the same env settings and seeded
    episodes as the arms. Cached in ``<runs>/references.json`` (recomputed when they change)."""
    from agent.build import make_env, probe_env
    from agent.evaluation import IdlePolicy, RandomPolicy, evaluate

    ev = config.evaluation
    cache = runs_root / "references.json"
    jobs = {job.scenario: job for job in reversed(plan(config, runs_root))}  # first arm's
    env_configs = {scenario: job.experiment().env for scenario, job in jobs.items()}
    key = {
        scenario: {"env": to_plain(env_configs[scenario]), "evaluation": job.evaluation}
        for scenario, job in jobs.items()
    }
    if cache.is_file():
        with contextlib.suppress(json.JSONDecodeError):
            saved = json.loads(cache.read_text())
            if saved.get("key") == json.loads(json.dumps(key)):
                return saved["references"]
    out: dict[str, Any] = {}
    for scenario, job in jobs.items():
        env_config = env_configs[scenario]
        out[scenario] = {}
        for backend, env_id in (("batched", job.train_id), ("reference", job.reference_id)):
            probe = probe_env(replace(env_config, id=env_id))
            for name, policy in (
                ("random", RandomPolicy(probe.action_space)),
                ("idle", IdlePolicy(probe.idle_action)),
            ):
                env = make_env(env_id, dict(env_config.kwargs))
                try:
                    report = evaluate(env, policy, ev.episodes, ev.seed, env_id=env_id)
                finally:
                    env.close()
                out[scenario].setdefault(name, {})[backend] = {
                    k: v for k, v in _summary(report).items() if k != "returns"
                }
    runs_root.mkdir(parents=True, exist_ok=True)
    _write_json(cache, {"key": key, "references": out})
    return out


def to_plain(value: Any) -> Any:
    return json.loads(json.dumps(asdict(value), default=str))


# ----------------------------------------------------------------------------- the study
def _job_main(job: Job) -> None:
    """A job's own process: its own process group, so a terminal's Ctrl-C reaches only the
    scheduler, which forwards exactly one SIGINT (a second would abort without a checkpoint)."""
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    run_job(job)


@dataclass
class _Running:
    job: Job
    process: Any
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
    import signal

    todo = plan(config, runs_root)
    ensure_fresh(todo, runs_root)
    results: dict[str, dict[str, Any]] = {}
    pending = []
    for job in todo:
        done = read_result(job)
        if done is not None and done.get("status") == "finished":
            results[job.name] = done
        else:
            pending.append(job)
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
            if result is None or result.get("status") not in (
                "finished",
                "interrupted",
                "failed",
            ):
                result = {
                    **_identity(job),
                    "status": "failed",
                    "error": f"the job's process died (exit code {item.process.exitcode})",
                }
            results[job.name] = result
            finished += 1
            elapsed = time.perf_counter() - started
            left = len(queue) + len(running)
            line = f"[{finished}/{len(pending)}] {job.name}: {result['status']}"
            if result["status"] == "finished":
                ev = result["evaluation"]
                line += (
                    f", return {ev['batched']['mean_return']:.2f} (batched) "
                    f"{ev['reference']['mean_return']:.2f} (reference)"
                )
            else:
                line += f" ({result.get('error')}; see {job.run_dir}/{LOG_FILE})"
            eta = "" if interrupted else f", about {elapsed / finished * left / 60:.0f} min left"
            say(f"{line}; {elapsed / 60:.1f} min{eta}")
    return [results[job.name] for job in todo if job.name in results], interrupted


# ----------------------------------------------------------------------------- statistics
# two-sided 95% quantiles of Student's t, by degrees of freedom (scipy is not a dependency)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}
_T95.update({9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131})
_T95.update({16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042})
_T95.update({40: 2.021, 60: 2.000, 120: 1.980})


def t95(df: int) -> float:
    """The quantile at ``df``, or at the nearest tabulated smaller ``df`` (a wider interval)."""
    if df < 1:
        return math.nan
    return _T95[max(d for d in _T95 if d <= df)]


def interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and the half-width of its 95% t-interval (over seeds: the seed is the unit)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(x)  # unknown values (None, NaN) are left out
    if n == 0:
        return {"mean": math.nan, "ci95": math.nan, "n": 0, "values": []}
    half = t95(n - 1) * float(x.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return {"mean": float(x.mean()), "ci95": half, "n": n, "values": [float(v) for v in x]}


def curve_band(
    curves: Sequence[tuple[Sequence[float], Sequence[float]]], grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95% half-width over runs of curves interpolated onto ``grid`` (NaN outside)."""
    rows = []
    for xs, ys in curves:
        xs_a, ys_a = np.asarray(xs, float), np.asarray(ys, float)
        row = np.full(len(grid), np.nan)
        if len(xs_a):
            inside = (grid >= xs_a[0]) & (grid <= xs_a[-1])
            row[inside] = np.interp(grid[inside], xs_a, ys_a)
        rows.append(row)
    data = np.array(rows)
    n = np.sum(~np.isnan(data), axis=0)
    with np.errstate(invalid="ignore"), warnings_off():
        mean = np.nanmean(data, axis=0)
        std = np.nanstd(data, axis=0, ddof=1)
    half = np.array([t95(int(k) - 1) for k in n]) * std / np.sqrt(np.maximum(n, 1))
    mean[n < len(curves)] = np.nan  # only where every run has data
    return mean, half


@contextlib.contextmanager
def warnings_off():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def aggregate(
    config: BenchmarkConfig, results: Sequence[dict[str, Any]], references: dict[str, Any]
) -> dict[str, Any]:
    """The study's numbers: per scenario and arm, means and 95% intervals over seeds."""
    finished = [r for r in results if r.get("status") == "finished"]
    expected = {
        (s, a, seed) for seed in config.seeds for s in config.scenarios for a in config.arms
    }
    present = {(r["scenario"], r["arm"], r["seed"]) for r in results}
    missing = sorted(expected - present)
    table: dict[str, Any] = {}
    speed: dict[str, float] = {}  # attention / CombinedExtractor training steps/s
    for scenario in config.scenarios:
        table[scenario] = {}
        for arm in config.arms:
            runs = [r for r in finished if r["scenario"] == scenario and r["arm"] == arm]
            if not runs:
                continue
            row: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
            for backend in ("batched", "reference"):
                row[backend] = {
                    m: interval([r["evaluation"][backend][m] for r in runs]) for m in METRICS
                }
            modes = [m for m in runs[0].get("robustness", {}) if m != "intact"]
            row["robustness"] = {
                mode: {m: interval([r["robustness"][mode][m] for r in runs]) for m in METRICS}
                for mode in ["intact", *modes]
                if all(mode in r.get("robustness", {}) for r in runs)
            }
            tp = [r["throughput"] for r in runs]
            row["throughput"] = {
                "train_steps_per_s": interval([t["train_steps_per_s"] for t in tp]),
                "env_steps_per_s": interval([t["env_steps_per_s"] for t in tp]),
                "train_over_env": interval(
                    [
                        t["train_steps_per_s"] / t["env_steps_per_s"]
                        for t in tp
                        if t["train_steps_per_s"] and t["env_steps_per_s"]
                    ]
                ),
            }
            if all("attention" in r for r in runs):
                row["attention"] = {
                    "class_mass": _per_class([r["attention"]["class_mass"] for r in runs]),
                    "class_lift": _per_class([r["attention"]["class_lift"] for r in runs]),
                    "class_share": _per_class([r["attention"]["class_share"] for r in runs]),
                    "camera_share": interval([r["attention"]["camera_share"] for r in runs]),
                    "occlusion_ratio": interval([r["attention"]["occlusion_ratio"] for r in runs]),
                }
            table[scenario][arm] = row
        arms = table[scenario]
        if "attention" in arms and "combined" in arms:
            att = arms["attention"]["throughput"]["train_steps_per_s"]["mean"]
            comb = arms["combined"]["throughput"]["train_steps_per_s"]["mean"]
            speed[scenario] = att / comb if comb > 0 else math.nan
    return {
        "name": config.name,
        "config": asdict(config),
        "results": table,
        "attention_over_combined_speed": speed,
        "references": references,
        "runs": [{k: v for k, v in r.items() if k != "curve"} for r in results],
        "not_finished": [r for r in results if r.get("status") != "finished"],
        "missing": [{"scenario": s, "arm": a, "seed": seed} for s, a, seed in missing],
    }


def _per_class(rows: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    names = [k for k in rows[0] if all(k in r for r in rows)]
    return {k: interval([r[k] for r in rows]) for k in names}


# ----------------------------------------------------------------------------- report
def plot_curves(
    config: BenchmarkConfig, results: Sequence[dict[str, Any]], out_dir: Path
) -> list[Path]:
    """Per scenario, training return against steps and against wall time (mean, 95% band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    finished = [r for r in results if r.get("status") == "finished" and r["curve"]["steps"]]
    for scenario in config.scenarios:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for arm in config.arms:
            runs = [r for r in finished if r["scenario"] == scenario and r["arm"] == arm]
            if not runs:
                continue
            for ax, key, scale in ((axes[0], "steps", 1.0), (axes[1], "seconds", 1 / 60)):
                top = min(r["curve"][key][-1] for r in runs)
                grid = np.linspace(0, top, 100)
                mean, half = curve_band(
                    [(r["curve"][key], r["curve"]["return"]) for r in runs], grid
                )
                (line,) = ax.plot(grid * scale, mean, label=f"{arm} (n={len(runs)})")
                ax.fill_between(
                    grid * scale, mean - half, mean + half, color=line.get_color(), alpha=0.15
                )
        axes[0].set_xlabel("environment steps")
        axes[1].set_xlabel("wall time [min] (one core per run)")
        for ax in axes:
            ax.set_ylabel("training episode return (last 100)")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{scenario}: {config.steps} steps per run, mean and 95% interval over seeds")
        fig.tight_layout()
        path = out_dir / f"curves_{scenario}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _ci(cell: Mapping[str, Any], percent: bool = False) -> str:
    mean, half = cell["mean"], cell["ci95"]
    if math.isnan(mean):
        return "n/a"
    if percent:
        return f"{mean:.0%}" + ("" if math.isnan(half) else f" ± {half * 100:.0f}")
    return f"{mean:.2f}" + ("" if math.isnan(half) else f" ± {half:.2f}")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table, first column left-aligned, the others right-aligned."""
    return [
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def markdown(summary: dict[str, Any]) -> str:
    """The Results tables (markdown), as the README shows them."""
    config = summary["config"]
    lines: list[str] = []
    for scenario, arms in summary["results"].items():
        spec = config["scenarios"][scenario]
        rows = [
            [
                arm,
                str(len(row["seeds"])),
                _ci(row["batched"]["mean_return"]),
                _ci(row["reference"]["mean_return"]),
                _ci(row["reference"]["success_rate"], True),
                _ci(row["reference"]["collision_rate"], True),
            ]
            for arm, row in arms.items()
        ]
        rows += [
            [
                f"{name} policy",
                "-",
                f"{b['batched']['mean_return']:.2f}",
                f"{b['reference']['mean_return']:.2f}",
                f"{b['reference']['success_rate']:.0%}",
                f"{b['reference']['collision_rate']:.0%}",
            ]
            for name, b in summary["references"].get(scenario, {}).items()
        ]
        lines += [
            f"#### {scenario}: trained on `{spec['train']}`, evaluated on both backends",
            "",
            "Return on each backend; success and collision on highway-env:",
            "",
            *_table(
                ["arm", "seeds", "return, batched", "return, highway-env", "success", "collision"],
                rows,
            ),
        ]
        if not arms:
            continue
        robust = {a: r["robustness"] for a, r in arms.items()}
        modes = sorted({m for r in robust.values() for m in r}, key=_mode_order)
        if modes:
            lines += [f"Robustness on highway-env ({scenario}), return:", ""]
            lines += _table(
                ["arm", *(m.replace("_", " ") for m in modes)],
                [
                    [arm, *(_ci(r[m]["mean_return"]) if m in r else "" for m in modes)]
                    for arm, r in robust.items()
                ],
            )
        lines += [f"Throughput ({scenario}), steps/s of each run on one core:", ""]
        lines += _table(
            ["arm", "training", "raw env (same run)", "training / env"],
            [
                [
                    arm,
                    f"{row['throughput']['train_steps_per_s']['mean']:.0f}",
                    f"{row['throughput']['env_steps_per_s']['mean']:.0f}",
                    _ci(row["throughput"]["train_over_env"]),
                ]
                for arm, row in arms.items()
            ],
        )
        if scenario in summary["attention_over_combined_speed"]:
            ratio = summary["attention_over_combined_speed"][scenario]
            lines += [f"attention / CombinedExtractor training speed: {ratio:.2f}x", ""]
        for arm, row in arms.items():
            if "attention" not in row:
                continue
            att = row["attention"]
            lines += [
                f"Attention attribution ({scenario}, {arm}, last layer, mean over seeds): "
                f"camera share {_ci(att['camera_share'], True)}, occlusion ratio "
                f"{_ci(att['occlusion_ratio'])}",
                "",
            ]
            lines += _table(
                ["road element", "share of image", "attention mass", "lift"],
                [
                    [
                        cls,
                        _ci(att["class_share"][cls], True),
                        _ci(mass, True),
                        _ci(att["class_lift"][cls]),
                    ]
                    for cls, mass in att["class_mass"].items()
                ],
            )
    bad = summary["not_finished"]
    if bad or summary["missing"]:
        lines.append("Runs that did not finish:")
        lines += [f"- {r['scenario']}-{r['arm']}-s{r['seed']}: {r.get('error')}" for r in bad]
        lines += [f"- {m['scenario']}-{m['arm']}-s{m['seed']}: not run" for m in summary["missing"]]
    else:
        lines.append("Every planned run finished.")
    return "\n".join(lines) + "\n"


def _mode_order(mode: str) -> int:
    order = ("intact", "camera_blanked", "sensors_zeroed", "sensor_noise")
    return order.index(mode) if mode in order else len(order)


def write_report(
    config: BenchmarkConfig,
    results: Sequence[dict[str, Any]],
    references: dict[str, Any],
    out_dir: Path,
    command: str,
) -> dict[str, Any]:
    """``results.json``, ``results.md`` and the learning-curve PNGs in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = aggregate(config, results, references)
    summary["command"] = command
    summary["plots"] = [p.name for p in plot_curves(config, results, out_dir)]
    _write_json(out_dir / "results.json", summary)
    text = markdown(summary)
    (out_dir / "results.md").write_text(f"Produced by `{command}`.\n\n{text}")
    summary["markdown"] = text
    return summary


def default_paths(config: BenchmarkConfig) -> tuple[Path, Path]:
    """(runs root, results folder) of a benchmark config."""
    return Path("runs") / "benchmark" / config.name, Path("docs") / "results" / config.name
