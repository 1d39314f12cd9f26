"""The study's numbers where users read them: hand-made per-run results of a small study (shaped as
:func:`agent.benchmark.execution.run_job` records them) go through :func:`aggregate`,
:func:`markdown` and :func:`write_report`, and every figure of the tables is checked against a
value computed here by hand: means and 95% t-intervals (the t quantile written out), interquartile
means and which runs they trim, success at equal wall time, verdicts. Each backend, arm, seed and
ablation has its own numbers, so that a figure read from the wrong place gives another answer."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drive_attention.agent.benchmark import (
    EVAL_METRICS,
    BenchmarkConfig,
    EvalSpec,
    Job,
    ScenarioSpec,
    aggregate,
    markdown,
    plan,
    write_report,
)
from drive_attention.agent.benchmark.evaluation import _summary
from drive_attention.agent.benchmark.scheduler import progress_line
from drive_attention.agent.evaluate.episodes import EpisodeResult, EvalReport

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}  # two-sided 95% Student-t quantile by df
EPISODES, EVAL_SEED = 5, 500  # per run and backend: rates are multiples of 1/5
BATCHED, HIGHWAY_ENV = "DriveAttention/BatchedHighway-v0", "DriveAttention/Highway-v0"
SIGNALIZED = "DriveAttention/BatchedSignalized-v0"
COMMAND = "python scripts/benchmark.py --config configs/benchmark/handmade.yaml"

# per arm, backend and metric: one value per finished seed (attention: seeds 0-4; combined:
# seeds 0-2, seed 3 failed and seed 4 never ran). The reference returns put the best run (seed 1)
# and the worst (seed 2) in the middle of the seed order: an IQM that trims the first and last
# seeds instead of the best and worst runs gives another number.
EVALUATION = {
    "attention": {
        "batched": {
            "mean_return": [20.0, 22.0, 24.0, 26.0, 28.0],
            "success_rate": [0.2, 0.2, 0.4, 0.0, 0.2],
            "collision_rate": [0.8, 0.6, 0.6, 1.0, 0.4],
            "mean_speed": [27.0, 28.0, 29.0, 30.0, 26.0],
        },
        "reference": {
            "mean_return": [14.0, 40.0, 10.0, 16.0, 12.0],
            "success_rate": [0.6, 1.0, 0.0, 0.8, 0.8],
            "collision_rate": [0.4, 0.0, 0.8, 0.2, 0.2],
            "mean_speed": [21.0, 23.0, 22.0, 24.0, 25.0],
        },
    },
    "combined": {
        "batched": {
            "mean_return": [30.0, 34.0, 38.0],
            "success_rate": [0.8, 1.0, 0.8],
            "collision_rate": [0.0, 0.0, 0.2],
            "mean_speed": [31.0, 32.0, 33.0],
        },
        "reference": {
            "mean_return": [8.0, 9.0, 13.0],
            "success_rate": [0.2, 0.4, 0.6],
            "collision_rate": [0.6, 0.4, 0.4],
            "mean_speed": [18.0, 19.0, 20.0],
        },
    },
}
# return on highway-env under each ablation (intact: the reference evaluation itself)
ABLATED_RETURN = {
    "attention": {
        "camera_blanked": [5.0, 6.0, 7.0, 8.0, 9.0],
        "sensors_zeroed": [2.0, 4.0, 6.0, 8.0, 10.0],
        "sensor_noise": [11.0, 12.0, 13.0, 14.0, 15.0],
    },
    "combined": {
        "camera_blanked": [3.0, 4.0, 5.0],
        "sensors_zeroed": [6.0, 6.0, 9.0],
        "sensor_noise": [8.0, 10.0, 15.0],
    },
}
THROUGHPUT = {  # steps/s per seed: training, and the run's own env under random actions
    "attention": {"train": [100.0, 110.0, 120.0, 130.0, 140.0], "env": [500, 1100, 600, 1300, 700]},
    "combined": {"train": [200.0, 240.0, 280.0], "env": [1000.0, 2400.0, 1400.0]},
}
ATTENTION = {  # the attribution arm's per-seed attribution (no ratio for seed 2)
    "camera_share": [0.3, 0.4, 0.5, 0.6, 0.7],
    "occlusion_ratio": [3.0, 1.5, None, 2.0, 0.5],
    "class_mass": {"vehicle": [0.5, 0.6, 0.7, 0.8, 0.9], "road": [0.1] * 5},
    "class_share": {"vehicle": [0.05, 0.10, 0.15, 0.20, 0.25], "road": [0.6] * 5},
    "class_lift": {"vehicle": [4.0, 5.0, 6.0, 7.0, 8.0], "road": [0.2] * 5},
}
# the reference policies: (mean return, success, collision, speed) on each backend
POLICIES = {
    "random": {"batched": (-3.0, 0.2, 0.2, 17.0), "reference": (-5.0, 0.0, 0.6, 12.5)},
    "idle": {"batched": (1.0, 0.4, 0.2, 9.0), "reference": (2.0, 0.2, 0.0, 8.0)},
    "rule": {"batched": (15.0, 1.0, 0.0, 26.0), "reference": (11.0, 0.8, 0.2, 20.0)},
}
MINUTE = 60.0  # [s]


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval, by hand."""
    n = len(values)
    return statistics.mean(values), T95[n - 1] * statistics.stdev(values) / math.sqrt(n)


def evaluated(
    env_id: str,
    mean_return: float,
    success: float,
    collision: float,
    speed: float,
    red_light: float | None = None,
    pedestrian: float | None = None,
) -> dict[str, Any]:
    """One backend's evaluation of a run, as evaluate_job records it: five real episode rows
    (returns spread around ``mean_return``; the first episodes succeed, the next ones collide)
    summarised by the production code."""
    hits = round(success * EPISODES), round(collision * EPISODES)
    reds = None if red_light is None else round(red_light * EPISODES)
    walkers = None if pedestrian is None else round(pedestrian * EPISODES)
    episodes = [
        EpisodeResult(
            episode=k,
            seed=EVAL_SEED + k,
            episode_return=mean_return + k - 2,
            length=40,
            success=k < hits[0],
            collision=hits[0] <= k < hits[0] + hits[1],
            off_road=False,
            mean_speed=speed,
            distance=4.0 * speed,
            red_light_runs=None if reds is None else int(k < reds),
            pedestrian_collision=None if walkers is None else k < walkers,
        )
        for k in range(EPISODES)
    ]
    return {"env_id": env_id, **_summary(EvalReport("trained", env_id, EVAL_SEED, episodes))}


def curve(seconds: list[float], success: list[float]) -> dict[str, list[float]]:
    """A learning curve as execution.learning_curve reads it (four logged points)."""
    return {
        "steps": [256.0 * (k + 1) for k in range(len(seconds))],
        "seconds": [s * MINUTE for s in seconds],
        "return": [float(k) for k in range(len(seconds))],
        "success": success,
    }


# Training curves. combined ends at 16, 20 and 24 min (20 on average: the arm that ends
# soonest), attention at 40. At 20 min: combined s0 ended (its last point), s1 ends then, s2 is
# halfway between its points at 16 and 24 min; every attention run is at its second point.
CURVES = {
    "combined": [
        {**curve([4, 8, 12, 16], [0.0, 0.5, 0.5, 1.0]), "steps": [100, 200, 300, 400]},
        {**curve([5, 10, 15, 20], [math.nan, 0.4, 0.6, 0.8]), "steps": [100, 200, 300, 400]},
        {**curve([5, 10, 16, 24], [0.0, 0.2, 0.4, 0.6]), "steps": [100, 200, 300, 400]},
    ],
    "attention": [
        curve([10, 20, 30, 40], [*first_two, 0.9, 1.0])
        for first_two in ([0.0, 0.2], [0.2, 0.2], [0.1, 0.5], [0.4, 0.4], [0.5, 0.5])
    ],
}


def study_config(**changes: Any) -> BenchmarkConfig:
    raw: dict[str, Any] = {
        "name": "handmade",
        "scenarios": {"highway": ScenarioSpec(train=BATCHED, reference=HIGHWAY_ENV)},
        "arms": {"attention": {"model.name": "attention"}, "combined": {"model.name": "combined"}},
        "steps": 1024,
        "seeds": [0, 1, 2, 3, 4],
        "evaluation": EvalSpec(
            episodes=EPISODES, seed=EVAL_SEED, attribution_arms=["attention"], relevance_frames=0
        ),
    }
    return BenchmarkConfig(**{**raw, **changes})


def run_result(job: Job, index: int) -> dict[str, Any]:
    """The ``benchmark.json`` of the arm's ``index``-th finished seed."""
    arm = job.arm
    evaluation = {
        backend: evaluated(
            BATCHED if backend == "batched" else HIGHWAY_ENV,
            *(EVALUATION[arm][backend][m][index] for m in EVAL_METRICS),
        )
        for backend in ("batched", "reference")
    }
    figures = ("mean_return", "success_rate", "collision_rate")
    intact = {m: evaluation["reference"][m] for m in figures}
    robustness = {"intact": intact}
    for mode, returns in ABLATED_RETURN[arm].items():
        robustness[mode] = {
            "mean_return": returns[index],
            "success_rate": 0.2,
            "collision_rate": 0.4,
        }
    train, env = THROUGHPUT[arm]["train"][index], THROUGHPUT[arm]["env"][index]
    result = {
        **job.identity(),
        "status": "finished",
        "steps": 1024,
        "resumed": False,
        "model": arm,
        "curve": CURVES[arm][index],
        "throughput": {
            "train_steps_per_s": train,
            "train_seconds": 1024 / train,
            "env_steps_per_s": env,
        },
        "evaluation": evaluation,
        "robustness": robustness,
    }
    if job.attribution:
        result["attention"] = {
            "camera_share": ATTENTION["camera_share"][index],
            "occlusion_ratio": ATTENTION["occlusion_ratio"][index],
            "frames": 64,
            **{
                key: {cls: values[index] for cls, values in ATTENTION[key].items()}
                for key in ("class_mass", "class_share", "class_lift")
            },
        }
    return {**result, "evaluation_spec": job.evaluation}


def study_results(config: BenchmarkConfig) -> list[dict[str, Any]]:
    """Every planned job's result: combined s3 failed, combined s4 never ran."""
    results = []
    for job in plan(config, Path("runs") / "benchmark" / config.name):
        if (job.arm, job.seed) == ("combined", 3):
            failed = {"status": "failed", "error": "ValueError: the policy diverged"}
            results.append({**job.identity(), **failed, "evaluation_spec": job.evaluation})
        elif (job.arm, job.seed) != ("combined", 4):
            results.append(run_result(job, job.seed))
    return results


def policy_row(env_id: str, *figures: float) -> dict[str, Any]:
    """One reference policy on one backend, as reference_policies records it (no returns)."""
    return {k: v for k, v in evaluated(env_id, *figures).items() if k not in ("env_id", "returns")}


def reference_rows() -> dict[str, Any]:
    """reference_policies' output for highway: their own episodes on each backend."""
    return {
        "highway": {
            name: {
                backend: policy_row(BATCHED if backend == "batched" else HIGHWAY_ENV, *figures)
                for backend, figures in backends.items()
            }
            for name, backends in POLICIES.items()
        }
    }


@pytest.fixture(scope="module")
def study() -> tuple[BenchmarkConfig, list[dict[str, Any]], dict[str, Any]]:
    config = study_config()
    return config, study_results(config), reference_rows()


# aggregate and markdown run again for every test (not once per module): mutation testing
# (make mutation) credits a function to the tests that call it, and a module-scoped fixture runs
# in the first test's set-up only, leaving the other tests' checks out of the mutants' runs
@pytest.fixture
def summary(study) -> dict[str, Any]:
    return aggregate(*study)


@pytest.fixture
def text(summary) -> str:
    return markdown(summary)


def block(text: str, heading: str) -> list[str]:
    """The rows (no header, no separator) of the first table after the first line that starts
    with ``heading``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    table = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return table[2:]


# ----------------------------------------------------------------------------- aggregation
def test_a_study_s_means_and_t_intervals_are_over_the_seeds_of_each_backend_and_arm(summary):
    results = summary["results"]["highway"]
    assert list(results) == ["attention", "combined"]
    assert results["attention"]["seeds"] == [0, 1, 2, 3, 4]
    assert results["combined"]["seeds"] == [0, 1, 2]  # s3 failed, s4 never ran
    for arm, backends in EVALUATION.items():
        for backend, metrics in backends.items():
            for metric, values in metrics.items():
                cell = results[arm][backend][metric]
                mean, half = t_interval(values)
                where = f"{arm} {backend} {metric}"
                assert cell["mean"] == pytest.approx(mean), where
                assert cell["ci95"] == pytest.approx(half), where
                assert cell["n"] == len(values), where
    # a few by hand, to the digit: t(4) = 2.776 over 5 seeds, t(2) = 4.303 over 3
    assert results["attention"]["reference"]["mean_return"]["ci95"] == pytest.approx(
        2.776 * math.sqrt(150.8) / math.sqrt(5)
    )
    assert results["combined"]["reference"]["mean_return"]["ci95"] == pytest.approx(
        4.303 * math.sqrt(7.0) / math.sqrt(3)
    )


def test_the_interquartile_mean_trims_the_best_and_worst_reference_runs_not_the_end_seeds(
    summary,
):
    """Five attention runs: one cut from each end of the sorted scores (the best run, seed 1,
    and the worst, seed 2); three combined runs: none cut. On highway-env only."""
    iqm = summary["results"]["highway"]["attention"]["iqm"]
    reference = EVALUATION["attention"]["reference"]
    kept = {
        "mean_return": (0, 3, 4),  # 14, 16, 12: the 40 of seed 1 and the 10 of seed 2 are cut
        "success_rate": (0, 3, 4),  # 0.6, 0.8, 0.8: 1.0 and 0.0 cut
        "collision_rate": (3, 4, 0),  # 0.2, 0.2, 0.4: 0.0 and 0.8 cut
        "mean_speed": (1, 2, 3),  # 23, 22, 24: 21 and 25 cut
    }
    for metric, seeds in kept.items():
        cell = iqm[metric]
        assert cell["iqm"] == pytest.approx(statistics.mean(reference[metric][s] for s in seeds))
        assert cell["n"] == 5
        # percentile bootstrap over the reference runs: inside their range
        assert min(reference[metric]) <= cell["low"] <= cell["iqm"] <= cell["high"]
        assert cell["high"] <= max(reference[metric])
    assert iqm["mean_return"]["iqm"] == pytest.approx(14.0)
    combined = summary["results"]["highway"]["combined"]["iqm"]
    for metric, values in EVALUATION["combined"]["reference"].items():
        assert combined[metric]["iqm"] == pytest.approx(statistics.mean(values)), metric
        assert combined[metric]["n"] == 3


def test_robustness_and_throughput_are_the_hand_computed_means_of_each_arm(summary):
    results = summary["results"]["highway"]
    for arm, modes in ABLATED_RETURN.items():
        robustness = results[arm]["robustness"]
        assert list(robustness) == ["intact", "camera_blanked", "sensors_zeroed", "sensor_noise"]
        intact = EVALUATION[arm]["reference"]["mean_return"]
        assert robustness["intact"]["mean_return"]["mean"] == pytest.approx(statistics.mean(intact))
        for mode, returns in modes.items():
            mean, half = t_interval(returns)
            assert robustness[mode]["mean_return"]["mean"] == pytest.approx(mean), (arm, mode)
            assert robustness[mode]["mean_return"]["ci95"] == pytest.approx(half), (arm, mode)
        rates = THROUGHPUT[arm]
        throughput = results[arm]["throughput"]
        mean_train = statistics.mean(rates["train"])
        assert throughput["train_steps_per_s"]["mean"] == pytest.approx(mean_train)
        assert throughput["env_steps_per_s"]["mean"] == pytest.approx(statistics.mean(rates["env"]))
        # the mean of each run's ratio, not the ratio of the means
        ratios = [t / e for t, e in zip(rates["train"], rates["env"], strict=True)]
        mean, half = t_interval(ratios)
        assert throughput["train_over_env"]["mean"] == pytest.approx(mean)
        assert throughput["train_over_env"]["ci95"] == pytest.approx(half)
    assert summary["attention_over_combined_speed"]["highway"] == pytest.approx(120.0 / 240.0)


def test_success_at_equal_wall_time_is_read_when_the_soonest_arm_ended_on_average(summary):
    same = summary["at_equal_time"]["highway"]
    assert same["seconds"] == pytest.approx(20 * MINUTE)  # combined: (16 + 20 + 24) / 3 min
    combined = same["arms"]["combined"]
    # s0 ended at 16 min: its last point; s1: its last; s2: halfway from 16 to 24 min
    assert combined["steps"]["values"] == pytest.approx([400.0, 400.0, 350.0])
    # trailing means of the success points: s0 (0 + .5 + .5 + 1) / 4, s1 (.4 + .6 + .8) / 3
    # (no finished episode at the first point), s2 halfway between (0 + .2 + .4) / 3 and
    # (0 + .2 + .4 + .6) / 4
    by_hand = [0.5, 0.6, (0.2 + 0.3) / 2]
    mean, half = t_interval(by_hand)
    assert combined["success"]["values"] == pytest.approx(by_hand)
    assert combined["success"]["mean"] == pytest.approx(mean)
    assert combined["success"]["ci95"] == pytest.approx(half)
    attention = same["arms"]["attention"]
    assert attention["steps"]["values"] == pytest.approx([512.0] * 5)  # its second point
    by_hand = [0.1, 0.2, 0.3, 0.4, 0.5]  # the mean of each run's first two success points
    assert attention["success"]["values"] == pytest.approx(by_hand)
    assert attention["success"]["ci95"] == pytest.approx(t_interval(by_hand)[1])


def test_failed_and_never_run_jobs_are_listed_and_left_out_of_the_means(summary, text):
    assert [(r["arm"], r["seed"], r["status"]) for r in summary["not_finished"]] == [
        ("combined", 3, "failed")
    ]
    assert summary["missing"] == [{"scenario": "highway", "arm": "combined", "seed": 4}]
    assert all("curve" not in r for r in summary["runs"])
    assert len(summary["runs"]) == 9  # 8 finished, 1 failed
    tail = text.splitlines()[-3:]
    assert tail == [
        "Runs that did not finish:",
        "- highway-combined-s3: ValueError: the policy diverged",
        "- highway-combined-s4: not run",
    ]


# ----------------------------------------------------------------------------- the tables
def test_the_results_table_shows_each_backend_s_return_and_highway_env_s_rates(text):
    assert "#### highway: trained on `DriveAttention/BatchedHighway-v0`, evaluated on both " in text
    lines = text.splitlines()
    header = "| arm | seeds | return, batched | return, highway-env | success | collision | speed |"
    start = lines.index(header)
    assert lines[start : start + 8] == [
        header,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        "| attention | 5 | 24.00 ± 3.93 | 18.40 ± 15.25 | 64% ± 48 | 32% ± 38 | 23.00 ± 1.96 |",
        "| combined | 3 | 34.00 ± 9.94 | 10.00 ± 6.57 | 40% ± 50 | 47% ± 29 | 19.00 ± 2.48 |",
        # the reference policies' rows: their own episodes, each backend's return
        "| random policy | - | -3.00 | -5.00 | 0% | 60% | 12.50 |",
        "| idle policy | - | 1.00 | 2.00 | 20% | 0% | 8.00 |",
        "| rule policy | - | 15.00 | 11.00 | 80% | 20% | 20.00 |",
        "",
    ]


def test_the_iqm_table_shows_the_trimmed_means_with_bootstrap_bounds_inside_the_runs(summary, text):
    rows = block(text, "Interquartile mean over runs on highway-env (highway)")
    number = r"(-?\d+(?:\.\d+)?)"
    cells = {
        "attention": ("5", "73%", "27%", "23.00", "14.00"),  # 11/15, 4/15, trimmed means
        "combined": ("3", "40%", "47%", "19.00", "10.00"),  # nothing trimmed from 3 runs
    }
    assert len(rows) == 2
    for row, (arm, (runs, success, collision, speed, ret)) in zip(rows, cells.items(), strict=True):
        pattern = (
            rf"\| {arm} \| {runs} \| {success} \[{number}%, {number}%\] \| {collision} "
            rf"\[{number}%, {number}%\] \| {speed} \[{number}, {number}\] \| {ret} "
            rf"\[{number}, {number}\] \|"
        )
        found = re.fullmatch(pattern, row)
        assert found, (row, pattern)
        bounds = [float(v) for v in found.groups()]
        reference = EVALUATION[arm]["reference"]
        ranges = [
            [100 * v for v in reference["success_rate"]],
            [100 * v for v in reference["collision_rate"]],
            reference["mean_speed"],
            reference["mean_return"],
        ]
        for (low, high), values in zip(np.reshape(bounds, (4, 2)), ranges, strict=True):
            assert min(values) - 0.5 <= low <= high <= max(values) + 0.5, (arm, low, high)


def test_the_robustness_throughput_and_equal_time_tables_show_the_hand_computed_cells(text):
    assert block(text, "Robustness on highway-env (highway), return:") == [
        "| attention | 18.40 ± 15.25 | 7.00 ± 1.96 | 6.00 ± 3.93 | 13.00 ± 1.96 |",
        "| combined | 10.00 ± 6.57 | 4.00 ± 2.48 | 7.00 ± 4.30 | 11.00 ± 8.96 |",
    ]
    assert "| arm | intact | camera blanked | sensors zeroed | sensor noise |" in text
    assert block(text, "Throughput (highway)") == [
        "| attention | 120 | 840 | 0.16 ± 0.07 |",
        "| combined | 240 | 1600 | 0.17 ± 0.14 |",
    ]
    assert "attention / CombinedExtractor training speed: 0.50x" in text.splitlines()
    heading = "Success at equal wall time (highway)"
    assert "of every arm after 20.0 min, when the fastest arm's runs had finished" in text
    assert block(text, heading) == [
        "| attention | 512 | 30% ± 20 |",
        "| combined | 383 | 45% ± 45 |",
    ]


def test_the_attention_line_gives_each_seed_its_faithfulness_verdict(text):
    lines = text.splitlines()
    assert (
        "Attention attribution (highway, attention, last layer, mean over seeds): camera share "
        "50% ± 20, occlusion ratio 1.75 ± 1.66"  # over the 4 seeds that have a ratio: t(3)
    ) in lines
    # FAITHFUL_RATIO is 2: a ratio of exactly 2 is faithful
    verdicts = "s0 3.0, s1 1.5 (NOT FAITHFUL), s2 n/a, s3 2.0, s4 0.5 (NOT FAITHFUL)"
    assert f"Occlusion ratio per seed: {verdicts}" in lines
    assert block(text, "Occlusion ratio per seed") == [
        "| vehicle | 15% ± 10 | 70% ± 20 | 6.00 ± 1.96 |",
        "| road | 60% ± 0 | 10% ± 0 | 0.20 ± 0.00 |",
    ]
    assert not any(line.startswith("Attention attribution (highway, combined") for line in lines)


def test_a_finished_job_s_progress_line_shows_each_backend_s_return(study):
    config, results, _ = study
    job = next(j for j in plan(config, Path("runs")) if (j.arm, j.seed) == ("attention", 1))
    result = next(r for r in results if (r["arm"], r["seed"]) == ("attention", 1))
    line = progress_line(job, result)
    assert line == "highway-attention-s1: finished, return 22.00 (batched) 40.00 (reference)"


def test_results_md_and_results_json_on_disk_hold_the_same_numbers(study, text, tmp_path):
    config, results, references = study
    written = write_report(config, results, references, tmp_path, COMMAND)
    assert (tmp_path / "results.md").read_text() == f"Produced by `{COMMAND}`.\n\n{text}"
    assert (
        written["plots"] == ["curves_highway.png"] and (tmp_path / "curves_highway.png").is_file()
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    row = saved["results"]["highway"]["combined"]
    assert row["reference"]["mean_return"]["mean"] == pytest.approx(10.0)
    assert row["batched"]["mean_return"]["mean"] == pytest.approx(34.0)
    assert row["reference"]["mean_return"]["values"] == [8.0, 9.0, 13.0]
    assert saved["at_equal_time"]["highway"]["seconds"] == pytest.approx(20 * MINUTE)
    assert saved["references"]["highway"]["rule"]["reference"]["mean_return"] == 11.0
    assert saved["command"] == COMMAND
    # the attention row's per-seed ratios keep the seed without one, as null
    occlusion = saved["results"]["highway"]["attention"]["attention"]["occlusion_runs"]
    assert occlusion == [3.0, 1.5, None, 2.0, 0.5]


# ----------------------------------------------------------------------------- signalised
def test_the_signalised_infractions_table_shows_each_arm_and_reference_policy_rates():
    """A scenario judged on the batched simulator itself (no highway-env version): its
    infractions per arm (mean and t-interval over seeds) and per reference policy."""
    scenario = ScenarioSpec(train=SIGNALIZED, reference=SIGNALIZED)
    config = study_config(
        name="handmade_signals",
        scenarios={"signalized": scenario},
        arms={"attention": {}},
        seeds=[0, 1, 2],
        evaluation=EvalSpec(episodes=EPISODES, seed=EVAL_SEED, relevance_frames=0),
    )
    red, walkers = [0.2, 0.4, 0.6], [0.0, 0.0, 0.6]
    results = []
    for job in plan(config, Path("runs")):
        k = job.seed
        # one evaluation serves both backends: the same episodes (evaluate_job)
        same = evaluated(SIGNALIZED, 10.0 + k, 0.2, 0.2, 8.0 + k, red[k], walkers[k])
        result = run_result(job, k)
        result["evaluation"] = {"batched": same, "reference": same}
        results.append(result)
    policies = {"random": (0.8, 0.4), "idle": (0.0, 0.0), "rule": (0.2, 0.0)}
    references = {
        "signalized": {
            name: {
                backend: policy_row(SIGNALIZED, 1.0, 0.0, 0.4, 5.0, *rates)
                for backend in ("batched", "reference")
            }
            for name, rates in policies.items()
        }
    }
    summary = aggregate(config, results, references)
    row = summary["results"]["signalized"]["attention"]["reference"]
    for metric, values in (("red_light_rate", red), ("pedestrian_collision_rate", walkers)):
        mean, half = t_interval(values)
        assert row[metric]["mean"] == pytest.approx(mean)
        assert row[metric]["ci95"] == pytest.approx(half)
    text = markdown(summary)
    assert "evaluated on its only backend" in text
    assert "| arm | seeds | return, batched | return, batched simulator |" in text
    assert block(text, "Infractions (signalized)") == [
        "| attention | 40% ± 50 | 20% ± 86 |",
        "| random policy | 80% | 40% |",
        "| idle policy | 0% | 0% |",
        "| rule policy | 20% | 0% |",
    ]
