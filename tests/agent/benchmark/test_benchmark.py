"""The benchmark study (agent/benchmark/, scripts/benchmark.py): statistics, planning, a tiny
real study end to end (train on the batched simulator, evaluate on both backends), resuming and
reporting runs that fail."""

from __future__ import annotations

import importlib.util
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from drive_attention.agent.benchmark import (
    RESULT_FILE,
    aggregate,
    curve_band,
    interval,
    iqm,
    iqm_interval,
    learning_curve,
    load_benchmark_config,
    markdown,
    plan,
    run_benchmark,
    stale,
    write_report,
)
from drive_attention.agent.run.config_files import load_config, save_config, to_dict
from drive_attention.envs.configuration import ConfigError

ROOT = Path(__file__).resolve().parents[3]

TINY = {
    "name": "tiny",
    "base": str(ROOT / "configs" / "batched.yaml"),
    "steps": 512,
    "seeds": [0, 1],
    "jobs": 2,
    "throughput_seconds": 0.2,
    "scenarios": {
        "highway": {
            "train": "DriveAttention/BatchedHighway-v0",
            "reference": "DriveAttention/Highway-v0",
        }
    },
    "overrides": {
        "env.n_envs": 4,
        "algo.n_steps": 64,
        "algo.n_epochs": 2,
        "train.checkpoint_every": 256,
    },
    "arms": {"attention": {"model.name": "attention"}, "combined": {"model.name": "combined"}},
    "evaluation": {
        "episodes": 2,
        "seed": 500,
        "attribution_arms": ["attention"],
        "relevance_frames": 4,
    },
}


def script_main(name: str, *argv: object) -> int:
    """``scripts/<name>.py``'s ``main`` in this process, as a user would call the script."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()  # scripts set their own
    try:
        return module.main([str(a) for a in argv])
    finally:
        torch.set_num_threads(threads)


def write_config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ----------------------------------------------------------------------------- statistics
def test_interval_is_student_t_over_seeds():
    out = interval([1.0, 2.0, 3.0])
    assert out["mean"] == pytest.approx(2.0)
    assert out["ci95"] == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)
    assert out["n"] == 3
    single = interval([5.0])
    assert single["mean"] == 5.0 and math.isnan(single["ci95"])
    wide = interval([0.0, 10.0])["ci95"]
    narrow = interval([0.0, 10.0] * 5)["ci95"]
    assert narrow < wide / 5  # more seeds, tighter interval


def test_curve_band_interpolates_runs_onto_a_common_grid():
    grid = np.array([0.0, 5.0, 10.0, 20.0])
    mean, half = curve_band([([0, 10], [0, 10]), ([0, 10], [2, 12])], grid)
    assert mean[:3] == pytest.approx([1.0, 6.0, 11.0])
    assert np.isnan(mean[3])  # beyond one run's data: no mean from a subset of runs
    assert half[1] == pytest.approx(12.706, rel=1e-3)  # t(1) * std sqrt(2) / sqrt(n = 2)


def test_learning_curve_accumulates_time_over_resumed_segments(tmp_path):
    rows = [
        {"global_step": 100, "rollout/ep_rew_mean": 1.0, "time/time_elapsed": 10},
        {"global_step": 150, "train/loss": 0.1},
        {"global_step": 200, "rollout/ep_rew_mean": 2.0, "time/time_elapsed": 20},
        {"global_step": 300, "rollout/ep_rew_mean": 3.0, "time/time_elapsed": 5},  # resumed
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    curve = learning_curve(path)
    assert curve["steps"] == [100, 200, 300]
    assert curve["seconds"] == [10.0, 20.0, 25.0]
    assert curve["return"] == [1.0, 2.0, 3.0]


def test_learning_curve_keeps_training_success_and_nan_where_none_was_logged(tmp_path):
    rows = [
        {"global_step": 100, "rollout/ep_rew_mean": 1.0, "time/time_elapsed": 10},
        {
            "global_step": 200,
            "rollout/ep_rew_mean": 2.0,
            "rollout/success_rate": 0.25,
            "time/time_elapsed": 20,
        },
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    success = learning_curve(path)["success"]
    assert np.isnan(success[0]) and success[1] == 0.25


def test_iqm_trims_a_quarter_of_the_runs_from_each_end_like_rliable():
    # scipy.stats.trim_mean(x, 0.25): floor(n / 4) runs cut from each end
    assert iqm([0.0, 0.9, 0.9, 0.9, 0.0]) == pytest.approx(0.6)  # 5 runs: 1 cut each end
    assert iqm([100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -100.0]) == pytest.approx(3.5)  # 2 each
    assert iqm([1.0, 2.0, 30.0]) == pytest.approx(11.0)  # 3 runs: nothing cut


def test_success_at_equal_wall_time_is_read_where_the_fastest_arm_ended():
    from drive_attention.agent.benchmark.stats import at_equal_time

    def run(seconds_per_step: float, success: list[float]) -> dict:
        steps = [100 * (i + 1) for i in range(len(success))]
        return {
            "curve": {
                "steps": steps,
                "seconds": [s * seconds_per_step for s in steps],
                "success": success,
            }
        }

    fast = [run(0.01, [0.0] * 5 + [1.0] * 5), run(0.01, [0.0] * 5 + [0.5] * 5)]  # ends at 10 s
    slow = [run(0.02, [0.2] * 5 + [0.9] * 5), run(0.02, [0.4] * 5 + [0.9] * 5)]  # 20 s
    same = at_equal_time({"fast": fast, "slow": slow})
    assert same["seconds"] == pytest.approx(10.0)
    assert same["arms"]["fast"]["steps"]["mean"] == pytest.approx(1000)
    assert same["arms"]["slow"]["steps"]["mean"] == pytest.approx(500)  # half its budget
    # success: the trailing mean of the last 10 points at 10 s (fast: all of its points)
    assert same["arms"]["fast"]["success"]["mean"] == pytest.approx((0.5 + 0.25) / 2)
    assert same["arms"]["slow"]["success"]["mean"] == pytest.approx((0.2 + 0.4) / 2)
    assert at_equal_time({"none": []}) == {}
    # a run with no logged point is left out, not its arm; before a run's first known success
    # its success is unknown, not read from later in training
    empty = {"curve": {"steps": [], "seconds": [], "success": []}}
    late = run(0.02, [float("nan")] * 6 + [1.0] * 4)
    same = at_equal_time({"fast": [*fast, empty], "slow": [late, *slow]})
    assert same["arms"]["fast"]["steps"]["n"] == 2
    assert same["arms"]["slow"]["success"]["n"] == 2  # late: unknown at 10 s
    assert same["arms"]["slow"]["steps"]["n"] == 3


def test_iqm_interval_is_a_seeded_bootstrap_that_narrows_with_more_runs():
    runs = [0.6, 0.7, 0.8, 0.9, 1.0]
    out = iqm_interval(runs)
    assert out["low"] <= out["iqm"] <= out["high"] and out["n"] == 5
    assert out == iqm_interval(runs)  # reproducible
    wide = out["high"] - out["low"]
    many = iqm_interval(runs * 8)
    assert many["high"] - many["low"] < wide / 2
    assert iqm_interval([0.5, 0.5, 0.5]) == {"iqm": 0.5, "low": 0.5, "high": 0.5, "n": 3}
    single = iqm_interval([0.5, None, math.nan])
    assert single["iqm"] == 0.5 and math.isnan(single["low"]) and single["n"] == 1


def test_learning_curve_drops_steps_replayed_after_a_hard_kill(tmp_path):
    """Killed after logging step 300 but before its checkpoint (at 200): the resumed segment
    logs step 300 again; the curve keeps the newer rows and stays increasing."""
    rows = [
        {"global_step": 100, "rollout/ep_rew_mean": 1.0, "time/time_elapsed": 10},
        {"global_step": 200, "rollout/ep_rew_mean": 2.0, "time/time_elapsed": 20},
        {"global_step": 300, "rollout/ep_rew_mean": 3.0, "time/time_elapsed": 30},
        {"global_step": 300, "rollout/ep_rew_mean": 2.5, "time/time_elapsed": 40},  # resumed
        {"global_step": 400, "rollout/ep_rew_mean": 4.0, "time/time_elapsed": 50},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"global_step": 5')
    curve = learning_curve(path)
    assert curve["steps"] == [100, 200, 300, 400]
    assert curve["return"] == [1.0, 2.0, 2.5, 4.0]
    assert np.all(np.diff(curve["seconds"]) > 0)


# ----------------------------------------------------------------------------- config and plan
def test_plan_gives_every_arm_the_same_budget_and_backend(tmp_path):
    config = load_benchmark_config(write_config(tmp_path, TINY))
    jobs = plan(config, tmp_path / "runs")
    assert len(jobs) == 2 * 2  # arms x seeds
    assert len({j.name for j in jobs}) == len(jobs)
    experiments = [j.experiment() for j in jobs]
    assert {e.train.steps for e in experiments} == {512}
    assert {e.env.id for e in experiments} == {"DriveAttention/BatchedHighway-v0"}
    assert {e.model.name for e in experiments} == {"attention", "combined"}
    assert {(j.seed, e.train.seed) for j, e in zip(jobs, experiments)} == {(0, 0), (1, 1)}
    assert [j.attribution for j in jobs if j.arm == "attention"] == [True, True]


def test_arms_differ_only_in_what_they_override(tmp_path):
    """A nested mapping sets keys, never replaces a section (which would change the budget)."""
    raw = {**TINY, "arms": {"a": {"model": {"name": "attention"}}, "b": {"model.name": "combined"}}}
    raw["overrides"] = {**TINY["overrides"], "algo": {"clip_range": 0.1}}
    raw["evaluation"] = {"attribution_arms": ["a"]}
    config = load_benchmark_config(write_config(tmp_path, raw))
    a, b = (job.experiment() for job in plan(config, tmp_path)[:2])
    assert a.algo == b.algo and a.algo.clip_range == pytest.approx(0.1)
    assert a.algo.learning_rate == pytest.approx(5e-4)  # configs/batched.yaml's, kept
    assert a.env == b.env and a.train.steps == b.train.steps


def test_runs_made_when_overrides_were_strings_are_still_the_same_settings(tmp_path):
    """Jobs pass their overrides as data; runs made when they were ``key=<JSON>`` items (which
    the config layer read back as YAML) must not be refused as made with other settings."""
    raw = {**TINY, "overrides": {**TINY["overrides"], "algo.learning_rate": 1e-5}}
    raw["overrides"]["logging.tags"] = ["on", "1", "null"]  # strings YAML would read otherwise
    config = load_benchmark_config(write_config(tmp_path, raw))
    for job in plan(config, tmp_path / "runs"):
        assert job.overrides["train.steps"] == 512 and job.overrides["logging.tags"][0] == "on"
        before = load_config(job.base, [f"{k}={json.dumps(v)}" for k, v in job.overrides.items()])
        assert to_dict(before) == to_dict(job.experiment())
        run_dir = Path(job.run_dir)
        run_dir.mkdir(parents=True)
        save_config(before, run_dir / "config.yaml")
        assert stale(job) == []


def test_a_base_edited_while_the_study_runs_changes_none_of_its_runs(tmp_path):
    """The plan reads the base experiment once: a job that starts after the file was edited
    still trains what the study was planned with (else one study mixes two recipes)."""
    from drive_attention.agent.benchmark.execution import run_job

    base = tmp_path / "base.yaml"
    base.write_text((ROOT / "configs" / "batched.yaml").read_text())
    raw = {
        **TINY,
        "base": str(base),
        "seeds": [0],
        "arms": {"combined": {"model.name": "combined"}},
    }
    raw["evaluation"] = {"episodes": 1, "seed": 500, "attribution_arms": []}
    config = load_benchmark_config(write_config(tmp_path, raw))
    job = plan(config, tmp_path / "runs")[0]
    planned = job.experiment()
    edited = yaml.safe_load(base.read_text())
    edited["algo"]["clip_range"] = 0.05
    base.write_text(yaml.safe_dump(edited))
    assert load_config(base).algo.clip_range == pytest.approx(0.05)
    assert job.experiment().algo.clip_range == pytest.approx(planned.algo.clip_range) != 0.05
    assert run_job(job)["status"] == "finished"
    trained = yaml.safe_load((Path(job.run_dir) / "config.yaml").read_text())
    assert trained["algo"]["clip_range"] == pytest.approx(planned.algo.clip_range)
    assert stale(job) == []
    assert plan(config, tmp_path / "runs")[0].experiment() == planned  # the same config: frozen
    # the study started again reads the edited file: the finished run is refused, not mixed in
    reloaded = load_benchmark_config(write_config(tmp_path, raw))
    assert any("clip_range" in line for line in stale(plan(reloaded, tmp_path / "runs")[0]))


def test_a_run_trained_under_other_reward_weights_is_stale(tmp_path):
    """config.yaml leaves the default weights out: a run whose run.json records other weights
    than this version's defaults give is refused rather than mixed in; one from before runs
    recorded them is not."""
    from drive_attention import envs

    config = load_benchmark_config(write_config(tmp_path, TINY))
    job = plan(config, tmp_path / "runs")[0]
    experiment = job.experiment()
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True)
    save_config(experiment, run_dir / "config.yaml")
    assert stale(job) == []  # no weights recorded: unknown, not refused
    weights = envs.reward_weights(experiment.env.id, **experiment.env.kwargs)
    (run_dir / "run.json").write_text(json.dumps({"reward_weights": weights}))
    assert stale(job) == []
    older = {**weights, "collision": weights["collision"] + 1}
    (run_dir / "run.json").write_text(json.dumps({"reward_weights": older}))
    assert any("reward weight collision" in line for line in stale(job))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"arms": {"attention": {"model.nmae": "attention"}}}, "arm 'attention'"),
        (
            {"arms": {**TINY["arms"], "bad": {"model.name": "transformer"}}},
            "arm 'bad'.*model.name",
        ),
        ({"evaluation": {"attribution_arms": ["atention"]}}, "did you mean 'attention'"),
        ({"evaluation": {"attribution_arms": ["combined"]}}, "no attention maps"),
        (
            {"scenarios": {"h": {"train": "DriveAttention/BatchedHighway-v0", "reference": "X"}}},
            "scenarios.h.reference",
        ),
        ({"scenarios": {"h": {"train": "DriveAttention/BatchedHighway-v0"}}}, "missing option"),
        ({"jobs": 0}, "jobs"),
        ({"scenarios": {"h": {"train": "DriveAttention/Highway-v0", "reference": "x"}}}, "batched"),
        ({"seeds": [0, 0]}, "repeated"),
        ({"stesp": 10}, "did you mean 'steps'"),
    ],
)
def test_bad_benchmark_configs_are_refused_before_any_work(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_benchmark_config(write_config(tmp_path, {**TINY, **change}))


def test_invalid_yaml_and_missing_sections_are_config_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("arms: {attention: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_benchmark_config(path)
    path.write_text(yaml.safe_dump({"scenarios": TINY["scenarios"]}))
    with pytest.raises(ConfigError, match="missing option 'arms'"):
        load_benchmark_config(path)


def test_the_committed_benchmark_configs_are_valid():
    for name in ("full", "quick"):
        config = load_benchmark_config(ROOT / "configs" / "benchmark" / f"{name}.yaml")
        assert len(config.seeds) >= 3
        assert {"attention", "combined", "late_fusion", "camera_only", "sensors_only"} <= set(
            config.arms
        )
        assert len(config.scenarios) >= 2


def test_the_tuned_study_names_every_searched_key_for_every_arm():
    """Each arm of configs/benchmark/highway_tuned.yaml is its own sweep's best values: every key
    its sweep searched is named, so no arm depends on what the base file says for it."""
    from drive_attention.agent.scale.sweep_config import load_sweep_config

    config = load_benchmark_config(ROOT / "configs" / "benchmark" / "highway_tuned.yaml")
    assert len(config.seeds) >= 5 and set(config.arms) == {"attention", "combined", "late_fusion"}
    for arm, overrides in config.arms.items():
        sweep = load_sweep_config(ROOT / "configs" / "sweep" / "default" / f"{arm}.yaml")
        assert sweep.base == config.base
        assert set(sweep.space) <= set(overrides), arm


# ----------------------------------------------------------------------------- end to end
def test_tiny_study_trains_evaluates_resumes_and_reports(tmp_path, capsys):
    # one seed: both arms train at once (jobs: 2); the statistics over seeds are checked on
    # hand-made results in test_study_stats.py and test_study_report.py
    raw = {**TINY, "seeds": [0]}
    config = load_benchmark_config(write_config(tmp_path, raw))
    runs = tmp_path / "runs"
    results, interrupted = run_benchmark(config, runs, say=lambda _: None)
    assert not interrupted
    assert [r["status"] for r in results] == ["finished"] * 2, results
    assert {r["arm"] for r in results} == {"attention", "combined"}
    for r in results:
        assert r["evaluation"]["batched"]["episodes"] == 2
        assert r["evaluation"]["reference"]["env_id"] == "DriveAttention/Highway-v0"
        assert set(r["robustness"]) == {
            "intact",
            "camera_blanked",
            "sensors_zeroed",
            "sensor_noise",
        }
        assert r["throughput"]["train_steps_per_s"] > 0 and r["throughput"]["env_steps_per_s"] > 0
        assert r["curve"]["steps"][-1] == 512
        assert ("attention" in r) == (r["arm"] == "attention")
    attention_run = next(r for r in results if r["arm"] == "attention")
    assert set(attention_run["attention"]["class_mass"]) >= {"road", "vehicle", "off_road"}
    assert sum(attention_run["attention"]["class_mass"].values()) == pytest.approx(1.0, abs=1e-3)
    # agreement with what the teacher needs, on the batched version of the reference's episodes
    relevance = attention_run["attention"]["relevance"]
    assert relevance["env_id"] == "DriveAttention/BatchedHighway-v0"
    assert relevance["frames"] == 4  # as many as the config asks

    # a run whose result is lost is evaluated again from its final checkpoint, not retrained;
    # the others are not touched
    lost = Path(results[0]["run"])
    (lost / RESULT_FILE).unlink()
    kept = Path(results[1]["run"]) / RESULT_FILE
    before = kept.stat().st_mtime_ns
    checkpoints = sorted((lost / "checkpoints").iterdir())
    again, _ = run_benchmark(config, runs, say=lambda _: None)
    assert kept.stat().st_mtime_ns == before
    assert sorted((lost / "checkpoints").iterdir()) == checkpoints
    redone = next(r for r in again if r["run"] == str(lost))
    assert redone["status"] == "finished" and redone["resumed"] is True
    # the training rate comes from the training segment, not the evaluation-only rerun
    assert redone["throughput"]["train_steps_per_s"] == pytest.approx(
        results[0]["throughput"]["train_steps_per_s"]
    )
    assert redone["evaluation"]["reference"]["returns"] == pytest.approx(
        results[0]["evaluation"]["reference"]["returns"]
    )  # same checkpoint, same seeded episodes

    out = tmp_path / "out"
    summary = write_report(config, again, {}, out, "python scripts/benchmark.py --config X")
    assert (out / "curves_highway.png").stat().st_size > 10_000
    saved = json.loads((out / "results.json").read_text())
    row = saved["results"]["highway"]["attention"]
    values = [r["evaluation"]["reference"]["mean_return"] for r in again if r["arm"] == "attention"]
    assert row["reference"]["mean_return"]["mean"] == pytest.approx(np.mean(values))
    assert row["reference"]["mean_return"]["n"] == 1
    assert (
        "class_lift" in row["attention"]
        and "attention" not in saved["results"]["highway"]["combined"]
    )
    assert saved["not_finished"] == [] and saved["missing"] == []
    assert "| attention | 1 |" in summary["markdown"]
    agreement = row["relevance"]
    scored = [part for part in ("tokens", "patches") if agreement[part]["runs"]]
    for part in scored:
        rows = [r["attention"]["relevance"][part] for r in again if r["arm"] == "attention"]
        hits = [r["hit"] for r in rows if r["frames"]]
        assert agreement[part]["hit"]["mean"] == pytest.approx(np.mean(hits))
    if scored:
        assert "Attention on what matters (highway, attention" in summary["markdown"]
    assert "Every planned run finished." in (out / "results.md").read_text()

    # scripts/transfer_gap.py on a trained benchmark run: both backends from the same starts
    # (its main, in this process, as evaluate.py's tests call theirs)
    gap_json = tmp_path / "gap.json"
    argv = ["--run", results[0]["run"], "--episodes", "2", "--seed", "7", "--json", str(gap_json)]
    assert script_main("transfer_gap", *argv) == 0, capsys.readouterr().err[-3000:]
    measured = json.loads(gap_json.read_text())
    assert measured["scenario"] == "highway" and measured["episodes"] == 2
    assert len(measured["highway_env_overlap_only"]["lengths"]) == 2
    capsys.readouterr()
    assert script_main("transfer_gap", "--run", tmp_path) == 2
    assert "config.yaml" in capsys.readouterr().err

    # the same runs folder with another budget is refused, not silently mixed in
    changed = load_benchmark_config(write_config(tmp_path, {**raw, "steps": 1024}))
    with pytest.raises(ConfigError, match=r"other settings.*train.steps: 512 -> 1024"):
        run_benchmark(changed, runs, say=lambda _: None)


def test_a_failing_run_is_reported_not_dropped(tmp_path):
    raw = {**TINY, "seeds": [0], "arms": {"attention": {"model.name": "attention"}}}
    config = load_benchmark_config(write_config(tmp_path, raw))
    runs = tmp_path / "runs"
    job = plan(config, runs)[0]
    broken = Path(job.run_dir)
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "checkpoints" / "step_0000000256.safetensors").write_bytes(b"not a checkpoint")
    save_config(job.experiment(), broken / "config.yaml")
    results, _ = run_benchmark(config, runs, say=lambda _: None)
    assert results[0]["status"] == "failed"
    assert results[0]["error"].startswith("CheckpointError"), results[0]["error"]
    recorded = json.loads((broken / RESULT_FILE).read_text())
    assert recorded["status"] == "failed"  # on disk for --report-only; retried next time
    summary = aggregate(config, results, {})
    assert summary["not_finished"][0]["arm"] == "attention"
    assert "highway-attention-s0" in markdown(summary)
    assert summary["results"]["highway"] == {}


@pytest.mark.slow  # most of a minute; train.py's Ctrl-C and resume tests stay in make test
def test_ctrl_c_saves_a_checkpoint_and_the_same_command_resumes(tmp_path):
    steps = 1024  # the first checkpoint comes at 256: hundreds of steps before the end
    raw = {**TINY, "steps": steps, "seeds": [0], "arms": {"attention": {"model.name": "attention"}}}
    path = write_config(tmp_path, raw)
    command = [
        sys.executable,
        str(ROOT / "scripts" / "benchmark.py"),
        "--config",
        str(path),
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "out"),
    ]
    run_dir = tmp_path / "runs" / "highway-attention-s0"
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as at a terminal, even when this suite runs as a background job (a shell
        # without job control starts those with SIGINT ignored, and Python then keeps ignoring it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # the limit only turns a hang into a failure: generous, for a machine whose cores are busy
    deadline = time.monotonic() + 600
    while not list((run_dir / "checkpoints").glob("step_*")):  # first periodic checkpoint
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "continue with" in err
    result = json.loads((run_dir / RESULT_FILE).read_text())
    assert result["status"] == "interrupted"
    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    assert saved and saved[-1] < f"step_{steps:010d}"

    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((run_dir / RESULT_FILE).read_text())
    assert result["status"] == "finished" and result["resumed"] is True
    # the stop came mid-rollout: the resumed run ends on its own rollout boundary
    assert steps <= result["curve"]["steps"][-1] < steps + 4 * 64
    assert np.all(np.diff(result["curve"]["steps"]) > 0)
    assert result["throughput"]["train_steps_per_s"] > 0


def test_script_refuses_a_bad_config_with_a_clear_error(tmp_path):
    bad = write_config(tmp_path, {**TINY, "jobs": 0})
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "jobs" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_quick_benchmark_runs_through(tmp_path):
    """``scripts/benchmark.py --quick``: the whole pipeline with tiny budgets (under 15 min)."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "benchmark.py"),
            "--quick",
            "--runs",
            str(tmp_path / "runs"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=15 * 60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(saved["results"]) == {"highway", "merge"}
    for scenario in saved["results"].values():
        assert scenario["attention"]["reference"]["mean_return"]["n"] == 3
    assert (tmp_path / "out" / "curves_merge.png").is_file()


def test_a_failed_attempt_without_a_checkpoint_is_set_aside_for_the_retry(tmp_path):
    """A job that died before its first checkpoint left run files; the next invocation moves
    them aside (a new run never mixes its files with an old one) and may start afresh."""
    from drive_attention.agent.benchmark.execution import SEGMENTS_FILE
    from drive_attention.agent.run.rundir import RunDir, RunDirError

    run = RunDir(tmp_path / "highway-attention-s0")
    run.create()
    for name in ("config.yaml", "metrics.jsonl", SEGMENTS_FILE, "benchmark.log"):
        (run.path / name).write_text("from the failed attempt\n")
    with pytest.raises(RunDirError, match="no checkpoint"):
        run.check_new(strict=False)
    aside = run.set_aside(extra=(SEGMENTS_FILE,))
    assert aside is not None and (aside / "metrics.jsonl").is_file()
    assert (aside / SEGMENTS_FILE).is_file() and not (run.path / SEGMENTS_FILE).exists()
    assert (run.path / "benchmark.log").is_file(), "the job's log stays where the study reads it"
    run.check_new(strict=False)  # a new run may start here now
    assert run.set_aside() is None, "nothing left to move"


def test_report_flags_each_attention_run_whose_map_is_not_faithful():
    from drive_attention.agent.benchmark.report import _faithfulness

    line = _faithfulness([0, 1, 2], [17.7, 1.3, 2.0])
    assert line == "s0 17.7, s1 1.3 (NOT FAITHFUL), s2 2.0"
    assert _faithfulness([0, 1], [None, math.inf]) == "s0 n/a, s1 inf"  # no ratio; infinite
