"""Hyperparameter sweeps: Ray Tune with an Optuna searcher and an ASHA scheduler over any config
keys.

``configs/sweep/NAME.yaml`` (:mod:`agent.scale.sweep_config`) names an experiment (``base`` plus
``overrides``), a search ``space`` (config keys to distributions), a step budget per trial, and how
trials are evaluated and pruned. Every trial is an ordinary run directory (``<runs>/<trial>/``,
trained by :class:`agent.training.Trainer`) that reports its periodic evaluation to Tune; ASHA stops
the trials that trail at each rung. Run directories reach the driver through
:mod:`agent.scale.store` (no shared filesystem); a trial whose node dies is restarted by Tune and
resumes from its last checkpoint. The result: ``trials.json``, ``trials.md`` (a table of every
trial) and ``best.yaml``, the best trial's full experiment, which ``scripts/train.py --config``
trains.

A sweep stopped by Ctrl-C writes the table of what it has (``interrupted`` in the summary), and
the same call continues it. The run directories on the driver are the record: a trial reaches Tune
only after its evaluation reached the driver, a restarted trial that had trained and evaluated its
whole budget only reports that evaluation again, and the table takes each trial's last evaluation
from its run directory.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from drive_attention.agent.evaluate.episodes import EvalReport
from drive_attention.agent.run.admission import prepare
from drive_attention.agent.run.config import ConfigError
from drive_attention.agent.run.config_files import read_yaml, to_dict
from drive_attention.agent.run.files import write_text
from drive_attention.agent.run.rundir import RunDir
from drive_attention.agent.run.version import code_version
from drive_attention.agent.scale.cluster import check_resources, connected
from drive_attention.agent.scale.store import RunMirror, pull, start_store
from drive_attention.agent.scale.study import repath
from drive_attention.agent.scale.sweep_config import METRICS, SweepConfig
from drive_attention.agent.training import Trainer

TRIALS_FILE, TABLE_FILE, BEST_FILE = "trials.json", "trials.md", "best.yaml"
# Tune's run loop and result loading: on Ctrl-C they log that the run stopped, how to restore it
# by hand, which trials did not complete and which have no results yet; the sweep says it in one
# line and continues by itself. A trial's own failure is still logged, and is in the table.
TUNE_RUN_LOGGERS = ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")


def search_space(config: SweepConfig) -> dict[str, Any]:
    """The space as Tune distributions."""
    from ray import tune

    out = {}
    for key, spec in config.space.items():
        kind, values = next(iter(spec.items()))
        out[key] = tune.choice(values) if kind == "choice" else getattr(tune, kind)(*values)
    return out


# ----------------------------------------------------------------------------- one trial
def _trial_name(trial_id: str, config: SweepConfig) -> str:
    return f"{config.name}-{trial_id}"


def run_trial(
    params: dict[str, Any],
    *,
    config: SweepConfig,
    store: Any,
    root: str,
    base: dict[str, Any],
    driver_code: str | None = None,
) -> None:
    """One trial inside Tune: refuse to train on other code than the driver's, copy its run
    directory back (a restarted trial), train or resume, and report every periodic evaluation."""
    if driver_code is not None and code_version() != driver_code:
        raise ConfigError(
            f"this Ray node runs other code ({code_version()}) than the sweep's driver "
            f"({driver_code}); install the driver's version there (docs/sweeps-and-ray.md)"
        )
    from ray import tune

    class ReportingTrainer(Trainer):
        mirror: RunMirror

        def periodic_eval(self, step: int) -> EvalReport:
            report = super().periodic_eval(step)
            self.mirror.push()  # the driver holds every evaluation before Tune hears of it
            summary = report.summary()
            tune.report({**{k: summary[k] for k in METRICS}, "env_steps": step})
            return report

    name = _trial_name(tune.get_context().get_trial_id(), config)
    scratch = Path(tempfile.mkdtemp(prefix="drive-attention-"))
    folder = scratch / name
    try:
        pull(store, name, folder)
        overrides = config.trial_overrides(params, name, scratch)
        run = RunDir(folder)
        if run.latest_checkpoint() is not None:  # a restarted trial
            last = last_evaluation(folder)
            if last is not None and last["env_steps"] >= config.steps:
                tune.report(last)  # trained and evaluated in full before the restart
                return
            prepared = prepare(None, {"logging.root": str(scratch)}, resume=folder)
        else:
            run.set_aside()  # an attempt that failed before its first checkpoint
            prepared = prepare(config.base, overrides, base=base)
        trainer = ReportingTrainer(prepared)
        with RunMirror(store, name, folder, repath(str(scratch), root)) as trainer.mirror:
            trainer.run()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def last_evaluation(folder: Path) -> dict[str, Any] | None:
    """The last periodic evaluation in a run directory (``eval/step_*.json``), as reported to
    Tune: the metrics and ``env_steps``; None before the first."""
    for path in sorted((folder / "eval").glob("step_*.json"), reverse=True):
        try:
            saved = json.loads(path.read_text())
            return {**{k: saved[k] for k in METRICS}, "env_steps": int(saved["step"])}
        except (OSError, ValueError, KeyError, TypeError):  # cut short, or not an evaluation
            continue
    return None


# ----------------------------------------------------------------------------- the sweep
def run_sweep(
    config: SweepConfig,
    runs_root: Path,
    out_dir: Path,
    address: str | None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    say: Any = print,
) -> dict[str, Any]:
    """Run (or continue) the sweep; write the trial table and ``best.yaml``; the summary."""
    runs_root.mkdir(parents=True, exist_ok=True)
    with connected(address, num_cpus=config.concurrent) as ray:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        check_resources(ray, cpus_per_trial, gpus_per_trial, per="trial")
        store = start_store(ray, runs_root)
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial,
                config=config,
                store=store,
                root=str(runs_root),
                base=read_yaml(config.base),
                driver_code=code_version(),
            ),
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
        )
        storage = (runs_root / "tune").resolve()
        experiment = storage / config.name
        restored = tune.Tuner.can_restore(str(experiment))
        if restored:
            say(f"continuing the sweep in {experiment}")
            with _quiet(TUNE_RUN_LOGGERS):
                tuner = tune.Tuner.restore(
                    str(experiment), trainable, resume_unfinished=True, restart_errored=True
                )
        else:
            searcher = OptunaSearch(
                metric=config.metric,
                mode=config.mode,
                seed=config.seed,
                points_to_evaluate=[config.base_point()] if config.include_base else None,
            )
            scheduler = ASHAScheduler(
                time_attr="env_steps",
                metric=config.metric,
                mode=config.mode,
                max_t=config.steps,
                grace_period=config.scheduler.grace_steps,
                reduction_factor=config.scheduler.reduction_factor,
            )
            tuner = tune.Tuner(
                trainable,
                param_space=search_space(config),
                tune_config=tune.TuneConfig(
                    search_alg=ConcurrencyLimiter(searcher, max_concurrent=config.concurrent),
                    scheduler=scheduler,
                    num_samples=config.trials,
                ),
                run_config=tune.RunConfig(
                    name=config.name,
                    storage_path=str(storage),
                    failure_config=tune.FailureConfig(max_failures=2),
                    verbose=0,
                ),
            )
        say(
            f"sweep {config.name}: {config.trials} trials of {config.steps} steps, "
            f"{config.concurrent} at a time, {cpus_per_trial:g} CPU / {gpus_per_trial:g} GPU "
            f"each; runs in {runs_root}"
        )
        try:
            with _quiet(TUNE_RUN_LOGGERS):
                grid = tuner.fit()
        except Exception as err:
            if not restored:
                raise
            raise ConfigError(
                f"continuing the sweep in {experiment} failed ({type(err).__name__}: {err}); "
                f"delete that folder to start the sweep over"
            ) from err
        rows = trial_rows(grid, config, runs_root)
        # trials still running, not reported yet, or not even suggested yet
        unfinished = max(0, config.trials - sum(r["status"] != "unfinished" for r in rows))
        ray.kill(store)
    return write_results(config, rows, out_dir, runs_root, unfinished)


@contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    """Only critical records from these loggers for the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def trial_rows(grid: Any, config: SweepConfig, runs_root: Path) -> list[dict[str, Any]]:
    """One row per trial that reported or failed: its values, how far it got, its last evaluation
    (from its run directory where that is further than what Tune holds), its status: completed
    (evaluated after its whole budget), pruned (stopped by ASHA), error, or unfinished (the sweep
    was interrupted before it ended; it goes on when the sweep is continued)."""
    base = config.base_point() if config.include_base else None
    rows = []
    for result in grid:
        history = result.metrics_dataframe
        last = result.metrics or {}
        if "trial_id" not in last and result.error is None:
            continue  # not started, or not reported yet, when the sweep was interrupted
        trial_id = str(last.get("trial_id") or Path(result.path).name)
        trial = _trial_name(trial_id, config)
        # Tune names a trial's folder <trainable>_<id>_<N>_<values>_<date>, N counting from 1 in
        # the order the searcher suggested the trials (kept when the sweep is continued)
        number = re.search(rf"_{re.escape(trial_id)}_(\d+)_", Path(result.path).name)
        scores = {k: last.get(k) for k in METRICS}
        steps = int(last.get("env_steps", 0) or 0)
        saved = last_evaluation(runs_root / trial)
        if saved is not None and saved["env_steps"] >= steps:
            scores = {k: saved[k] for k in METRICS}
            steps = saved["env_steps"]
        if steps >= config.steps:
            status = "completed"  # its evaluation after the whole budget is kept, come what may
        elif result.error is not None:
            status = "error"
        elif last.get("done"):
            status = "pruned"
        else:
            status = "unfinished"
        params = result.config or {}
        rows.append(
            {
                "trial": trial,
                "number": int(number.group(1)) if number else None,
                "status": status,
                "steps": steps,
                "reports": 0 if history is None else len(history),
                "params": {k: _plain(params.get(k)) for k in config.space},
                "base": base is not None and all(params.get(k) == v for k, v in base.items()),
                **{k: _plain(v) for k, v in scores.items()},
                "error": None if result.error is None else str(result.error).splitlines()[-1],
            }
        )
    return rows


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def rank(row: dict[str, Any], config: SweepConfig) -> tuple:
    """The table's order, best first: completed trials before the others, then by score; equal
    scores by trial number (the earlier trial first: the experiment's own values are trial 1),
    then by name, so that the best never changes between tied trials."""
    score = row[config.metric]
    sign = 1 if config.mode == "max" else -1
    number = row.get("number")
    return (
        row["status"] != "completed",
        score is None,
        0.0 if score is None else -sign * score,
        number is None,
        number or 0,
        row["trial"],
    )


def best_row(rows: list[dict[str, Any]], config: SweepConfig) -> dict[str, Any] | None:
    """The best trial that trained its whole budget (a pruned trial's score is from fewer
    steps); ties are broken by :func:`rank`."""
    done = [r for r in rows if r["status"] == "completed" and r[config.metric] is not None]
    return min(done, key=lambda r: rank(r, config)) if done else None


def write_results(
    config: SweepConfig,
    rows: list[dict[str, Any]],
    out_dir: Path,
    runs_root: Path,
    unfinished: int = 0,
) -> dict[str, Any]:
    """``trials.json``, ``trials.md`` and ``best.yaml`` in ``out_dir``; ``unfinished`` trials
    (started or not) mean the sweep was interrupted."""
    best = best_row(rows, config)
    summary = {
        "sweep": config.name,
        "metric": config.metric,
        "mode": config.mode,
        "trials": rows,
        "best": best,
        "pruned": sum(r["status"] == "pruned" for r in rows),
        "interrupted": unfinished > 0,
        "unfinished": unfinished,
        "runs": str(runs_root),
    }
    write_text(out_dir / TRIALS_FILE, json.dumps(summary, indent=1) + "\n")
    write_text(out_dir / TABLE_FILE, markdown(config, rows, best, unfinished))
    if best is not None:
        experiment = to_dict(config.experiment(best["params"], best["trial"]))
        experiment["logging"]["name"] = None  # train.py names the run after this file and time
        experiment["logging"]["root"] = "runs"
        header = (
            f"# The best of sweep {config.name} ({best['trial']}: {config.metric} "
            f"{best[config.metric]:.3f} after {best['steps']} steps).\n"
            f"# Train it: python scripts/train.py --config {out_dir / BEST_FILE}\n"
        )
        text = yaml.safe_dump(experiment, sort_keys=False, default_flow_style=None)
        write_text(out_dir / BEST_FILE, header + text)
    return summary


def markdown(
    config: SweepConfig, rows: list[dict[str, Any]], best: dict | None, unfinished: int = 0
) -> str:
    keys = list(config.space)
    head = ["trial", "status", "steps", *keys, *METRICS]
    lines = [
        f"# Sweep {config.name}",
        "",
        f"{len(rows)} trials of up to {config.steps} steps; {config.metric} ({config.mode}) over "
        f"{config.eval_episodes} evaluation episodes (seed {config.eval_seed}); "
        f"{sum(r['status'] == 'pruned' for r in rows)} pruned by ASHA.",
        "",
    ]
    if unfinished:
        lines += [
            f"Interrupted with {unfinished} trial(s) unfinished: the same command continues "
            "the sweep.",
            "",
        ]
    lines += [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    order = sorted(rows, key=lambda r: rank(r, config))
    for r in order:
        mark = (" **best**" if best is r else "") + (
            " (the experiment's own values)" if r["base"] else ""
        )
        cells = [r["trial"] + mark, r["status"], str(r["steps"])]
        cells += [_cell(r["params"].get(k)) for k in keys]
        cells += [_cell(r[m]) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)
