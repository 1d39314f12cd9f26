"""The benchmark study behind docs/results/: encoders x scenarios x seeds, trained with equal
step budgets on the batched simulator and evaluated on both backends.

One *job* is one training run (``<runs>/<scenario>-<arm>-s<seed>/``, an ordinary run directory,
made by :class:`agent.training.Trainer`) followed by its evaluation, written to
``benchmark.json`` in the run directory. Jobs run in worker processes (``jobs`` at a time, one
torch thread each) with their output in ``benchmark.log`` beside it. A finished job is never
redone; an interrupted one resumes from its last checkpoint; a failed one is reported (and retried
on the next invocation). :func:`aggregate` turns the job results into means with 95% intervals
over seeds, learning curves, robustness, attribution and throughput tables.

One module per job:

- :mod:`~agent.benchmark.config`: the schema of ``configs/benchmark/*.yaml``, what each run is,
  and the check of every run before any work;
- :mod:`~agent.benchmark.jobs`: the jobs of a study and what they left on disk (results,
  freshness of existing runs);
- :mod:`~agent.benchmark.execution`: one job in its process: train or resume, measure, evaluate,
  record;
- :mod:`~agent.benchmark.evaluation`: trained policies on both backends (ablations, attribution)
  and the random, idle and rule references;
- :mod:`~agent.benchmark.scheduler`: worker processes, ``jobs`` at a time, Ctrl-C forwarding;
- :mod:`~agent.benchmark.stats`: means and 95% intervals over seeds, IQM with bootstrap
  intervals, curve bands, aggregation;
- :mod:`~agent.benchmark.report`: ``results.json``, ``results.md`` and the learning-curve plots.
"""

from drive_attention.agent.benchmark.config import (
    EVAL_METRICS,
    METRICS,
    BenchmarkConfig,
    EvalSpec,
    ScenarioSpec,
    arm_experiment,
    check_runs,
    default_paths,
    flatten,
    load_benchmark_config,
)
from drive_attention.agent.benchmark.evaluation import evaluate_job, reference_policies
from drive_attention.agent.benchmark.execution import (
    SEGMENTS_FILE,
    learning_curve,
    raw_env_rate,
    run_job,
)
from drive_attention.agent.benchmark.jobs import (
    LOG_FILE,
    RESULT_FILE,
    Job,
    ensure_fresh,
    plan,
    read_result,
    stale,
    write_json,
)
from drive_attention.agent.benchmark.report import markdown, plot_curves, write_report
from drive_attention.agent.benchmark.scheduler import run_benchmark
from drive_attention.agent.benchmark.stats import (
    aggregate,
    curve_band,
    interval,
    iqm,
    iqm_interval,
    t95,
)

__all__ = [
    "EVAL_METRICS",
    "LOG_FILE",
    "METRICS",
    "RESULT_FILE",
    "SEGMENTS_FILE",
    "BenchmarkConfig",
    "EvalSpec",
    "Job",
    "ScenarioSpec",
    "aggregate",
    "arm_experiment",
    "check_runs",
    "curve_band",
    "default_paths",
    "ensure_fresh",
    "evaluate_job",
    "flatten",
    "interval",
    "iqm",
    "iqm_interval",
    "learning_curve",
    "load_benchmark_config",
    "markdown",
    "plan",
    "plot_curves",
    "raw_env_rate",
    "read_result",
    "reference_policies",
    "run_benchmark",
    "run_job",
    "stale",
    "t95",
    "write_json",
    "write_report",
]
