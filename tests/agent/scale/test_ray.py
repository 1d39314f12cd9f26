"""The study and sweeps on Ray (agent/scale/): a real multi-node Ray cluster started by the test
on the loopback address (``ray.cluster_utils.Cluster``: a head and two worker nodes, one CPU
each), no mocks. Skipped when the ``ray`` extra is not installed (``make test`` installs it)."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
pytest.importorskip("optuna", reason="the ray extra is not installed: pip install -e '.[ray]'")

from drive_attention.agent.benchmark import (  # noqa: E402
    LOG_FILE,
    SEGMENTS_FILE,
    load_benchmark_config,
    run_benchmark,
    write_report,
)
from drive_attention.agent.run.config import ConfigError  # noqa: E402
from drive_attention.agent.run.config_files import read_yaml  # noqa: E402
from drive_attention.agent.run.version import code_version  # noqa: E402
from drive_attention.agent.scale import study as scale_study  # noqa: E402
from drive_attention.agent.scale.cluster import gcs_answers, loopback_cluster  # noqa: E402
from drive_attention.agent.scale.study import ATTEMPTS_FILE, run_benchmark_ray  # noqa: E402
from drive_attention.agent.scale.sweep import run_sweep, run_trial, trial_rows, write_results  # noqa: E402
from drive_attention.agent.scale.sweep_config import load_sweep_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
LOOPBACK = "127.0.0.1"
BATCHED = "DriveAttention/BatchedHighway-v0"

STUDY = {
    "name": "raytiny",
    "base": str(ROOT / "configs" / "batched.yaml"),
    "steps": 256,
    "seeds": [0, 1],
    "jobs": 2,
    "throughput_seconds": 0.1,
    "scenarios": {
        "highway": {
            "train": "DriveAttention/BatchedHighway-v0",
            "reference": "DriveAttention/Highway-v0",
        }
    },
    "overrides": {
        "env.n_envs": 4,
        "algo.n_steps": 32,
        "algo.batch_size": 64,
        "algo.n_epochs": 2,
        "train.checkpoint_every": 128,
    },
    "arms": {"attention": {"model.name": "attention"}},
    "evaluation": {"episodes": 1, "seed": 500, "attribution_arms": ["attention"]},
}

SWEEP = {
    "name": "tiny",
    "base": str(ROOT / "configs" / "batched.yaml"),
    "scenario": "highway",
    "arm": "attention",
    "overrides": {
        "env.n_envs": 4,
        "algo.n_steps": 32,
        "algo.batch_size": 64,
        "algo.n_epochs": 2,
    },
    "steps": 384,
    "eval_every": 128,
    "eval_episodes": 1,
    "trials": 6,
    "concurrent": 2,
    "scheduler": {"grace_steps": 128, "reduction_factor": 2},
    "space": {
        "algo.learning_rate": {"loguniform": [1.0e-4, 1.0e-3]},
        "train.seed": {"choice": [0, 1, 2, 3, 4, 5, 6, 7]},
    },
}


@pytest.fixture(scope="module")
def cluster():
    """A head (no CPUs: it holds the driver and the run store) and two one-CPU worker nodes."""
    with loopback_cluster(workers=2) as made:
        yield made


def write(tmp_path: Path, raw: dict, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def without(value, keys=("throughput",)):
    """The report without what differs between two honest runs of the same jobs: their speed."""
    if isinstance(value, dict):
        return {k: without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without(v, keys) for v in value]
    return value


def test_every_address_stays_on_the_loopback(cluster):
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {LOOPBACK}
    assert cluster.address.startswith(f"{LOOPBACK}:")


@pytest.mark.slow  # half a minute; make test's cluster tests run study jobs on other nodes
def test_study_on_two_nodes_reports_what_the_local_launcher_reports(tmp_path, cluster):
    config = load_benchmark_config(write(tmp_path, STUDY))
    local, stopped = run_benchmark(config, tmp_path / "local", say=lambda _: None)
    assert not stopped and [r["status"] for r in local] == ["finished"] * 2
    said: list[str] = []
    remote, stopped = run_benchmark_ray(config, tmp_path / "ray", address=None, say=said.append)
    assert not stopped and [r["status"] for r in remote] == ["finished"] * 2
    # both worker nodes trained a run (one CPU each, two runs at once)
    nodes = {line.rsplit("Ray node ", 1)[1] for line in said if "Ray node" in line}
    assert len(nodes) == 2, said
    reports = {}
    for name, results in (("local", local), ("ray", remote)):
        write_report(config, results, {}, tmp_path / f"out-{name}", "cmd")
        reports[name] = json.loads((tmp_path / f"out-{name}" / "results.json").read_text())
    assert without(reports["ray"]["results"]) == without(reports["local"]["results"])
    assert reports["ray"]["results"]["highway"]["attention"]["attention"]["class_mass"]
    # the run directories reached the driver whole, naming the driver's folder, not the scratch
    for result in remote:
        run = Path(result["run"])
        assert run.parent == tmp_path / "ray"
        assert [p.name for p in sorted((run / "checkpoints").iterdir())] == [
            "step_0000000128.safetensors",
            "step_0000000256.safetensors",
        ]
        saved = json.loads((run / "benchmark.json").read_text())
        assert saved["run"] == str(run) and saved["status"] == "finished"
        assert read_yaml(run / "config.yaml")["logging"]["root"] == str(tmp_path / "ray")
        assert read_yaml(run / "config.yaml")["logging"]["group"] == "benchmark-raytiny"
    # run again: nothing is redone
    again, _ = run_benchmark_ray(config, tmp_path / "ray", address=None, say=said.append)
    assert [r["steps"] for r in again] == [256, 256] and said[-1].startswith("benchmark raytiny")


@pytest.mark.slow  # a quarter minute; make test keeps the other cluster tests within ten minutes
def test_no_node_runs_more_jobs_at_once_than_it_has_cpus(tmp_path, cluster, monkeypatch):
    """Four jobs on one-CPU nodes: a job waiting on the run store (pulling its run directory,
    uploading a checkpoint) keeps its CPU. Checked on the jobs' own records of where and when they
    ran, not on how long anything took."""
    raw = {
        **STUDY,
        "name": "raycpus",
        "steps": 128,
        "seeds": [0, 1, 2, 3],
        # judged on the batched backend alone: the jobs' evaluation is not what is tested
        "scenarios": {"highway": {"train": BATCHED, "reference": BATCHED}},
        "evaluation": {"episodes": 1, "seed": 500},
        "overrides": {**STUDY["overrides"], "train.checkpoint_every": 32},
    }
    config = load_benchmark_config(write(tmp_path, raw))
    results, stopped = run_benchmark_ray(config, tmp_path / "runs", None, say=lambda _: None)
    assert not stopped and [r["status"] for r in results] == ["finished"] * 4
    cpus = {n["NodeID"]: n["Resources"].get("CPU", 0) for n in ray.nodes()}
    events: dict[str, list[tuple[float, int]]] = {}
    for result in results:
        lines = (Path(result["run"]) / ATTEMPTS_FILE).read_text().splitlines()
        (attempt,) = [json.loads(line) for line in lines]
        assert attempt["code"] == code_version()  # each job records the code it ran
        assert attempt["started"] < attempt["ended"]
        # an end sorts before a start at the same instant: touching is not overlapping
        events.setdefault(attempt["node"], []).extend(
            [(attempt["started"], 1), (attempt["ended"], -1)]
        )
    for node, marks in events.items():
        running = peak = 0
        for _, change in sorted(marks):
            running += change
            peak = max(peak, running)
        assert peak <= cpus[node], f"node {node[:8]} ran {peak} jobs at once on {cpus[node]} CPU"
    # a driver on other code keeps these finished runs, and lists them
    monkeypatch.setattr(scale_study, "code_version", lambda: "0123456789abcdef")
    said: list[str] = []
    again, _ = run_benchmark_ray(config, tmp_path / "runs", None, say=said.append)
    assert [r["steps"] for r in again] == [128] * 4
    (flag,) = [line for line in said if "trained by other code" in line]
    assert flag.startswith("4 finished run(s)") and "highway-attention-s3" in flag


def test_a_node_on_other_code_than_the_driver_refuses_its_job(tmp_path, cluster, monkeypatch):
    """The driver's code version differs from the nodes' (as after a node was left on an old
    checkout): the job fails at once, naming both versions, and trains nothing."""
    monkeypatch.setattr(scale_study, "code_version", lambda: "0123456789abcdef")
    config = load_benchmark_config(write(tmp_path, {**STUDY, "seeds": [0]}))
    (result,), _ = run_benchmark_ray(config, tmp_path / "runs", None, say=lambda _: None)
    assert result["status"] == "failed"
    assert f"other code ({code_version()}) than the driver (0123456789abcdef)" in result["error"]
    assert not (tmp_path / "runs" / "highway-attention-s0" / "checkpoints").exists()


def test_a_sweep_trial_on_other_code_than_the_driver_refuses_to_train(tmp_path):
    config = load_sweep_config(write(tmp_path, SWEEP))
    with pytest.raises(ConfigError, match=rf"other code \({code_version()}\) than the sweep's"):
        run_trial({}, config=config, store=None, root=str(tmp_path), base={},
                  driver_code="0123456789abcdef")  # fmt: skip
    assert not list(tmp_path.rglob("checkpoints"))


def within(seconds: float, body) -> BaseException | None:
    """What ``body()`` raised, run in a thread: a call that waits forever fails the test instead
    of hanging the suite."""
    outcome: dict = {}

    def run() -> None:
        try:
            body()
        except BaseException as err:  # handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    return outcome.get("error")


@pytest.mark.parametrize("launcher", ["study", "sweep"])
def test_a_job_larger_than_every_node_is_refused_at_once(tmp_path, cluster, launcher):
    """Two one-CPU nodes make two CPUs, but a job of two CPUs fits on none of them."""
    assert ray.cluster_resources()["CPU"] >= 2
    runs = tmp_path / "runs"
    if launcher == "study":
        config = load_benchmark_config(write(tmp_path, STUDY))
        error = within(
            60, lambda: run_benchmark_ray(config, runs, None, cpus_per_job=2, say=lambda _: None)
        )
        flag = "--cpus-per-job 2"
    else:
        sweep = load_sweep_config(write(tmp_path, SWEEP, "sweep.yaml"))
        error = within(
            60,
            lambda: run_sweep(
                sweep, runs, tmp_path / "out", None, cpus_per_trial=2, say=lambda _: None
            ),
        )
        flag = "--cpus-per-trial 2"
    assert isinstance(error, ConfigError), error
    assert str(error).startswith(f"{flag}: ") and "\n" not in str(error)
    assert "the largest Ray node has 1 CPU(s)" in str(error)
    assert list(runs.iterdir()) == []  # before any work


@pytest.mark.slow  # half a minute; the cluster tests in make test cover jobs on other nodes
def test_a_node_killed_while_training_resumes_on_another(tmp_path, cluster):
    raw = {
        **STUDY,
        "name": "rayfault",
        "steps": 2048,
        "seeds": [3],
        "wandb": "offline",
        "evaluation": {"episodes": 1, "seed": 500},
        "overrides": {**STUDY["overrides"], "train.checkpoint_every": 256},
    }
    config = load_benchmark_config(write(tmp_path, raw))
    runs = tmp_path / "runs"
    run = runs / "highway-attention-s3"
    outcome: dict = {}

    def study() -> None:
        outcome["results"], outcome["stopped"] = run_benchmark_ray(
            config, runs, address=None, say=lambda _: None
        )

    thread = threading.Thread(target=study)
    thread.start()
    # generous limits: on a machine whose cores are busy (a study beside the suite) the tiny
    # run takes minutes; the limits only turn a hang into a failure
    deadline = time.monotonic() + 600
    # wait until the first checkpoint has reached the driver, then kill the node training it
    while not list((run / "checkpoints").glob("step_*.safetensors")):
        assert thread.is_alive() and time.monotonic() < deadline, "no checkpoint arrived"
        time.sleep(0.1)
    first = (run / LOG_FILE).read_text().split("== Ray node ")[1].split()[0]
    victim = next(node for node in cluster.worker_nodes if node.node_id == first)
    cluster.remove_node(victim)
    cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)  # the cluster gets a node back
    thread.join(timeout=900)
    assert not thread.is_alive() and not outcome["stopped"]
    (result,) = outcome["results"]
    assert result["status"] == "finished", result.get("error")
    assert result["resumed"] is True
    log = (run / LOG_FILE).read_text()
    attempts = [line.split()[3:] for line in log.splitlines() if line.startswith("== Ray node")]
    assert attempts[0] == [first, "(starting)"], log
    assert attempts[-1][0] != first and attempts[-1][1] == "(resuming)", log
    # resumed from a checkpoint: the finishing segment started past 0, and no step is counted
    # twice on the learning curve
    segments = [json.loads(line) for line in (run / SEGMENTS_FILE).read_text().splitlines()]
    assert segments[-1]["from_step"] >= 256
    assert segments[-1]["from_step"] + segments[-1]["steps"] == 2048
    steps = result["curve"]["steps"]
    assert steps == sorted(set(steps)) and steps[-1] == 2048
    # W&B logged the run offline inside the run directory, and it reached the driver too
    assert list((run / "wandb").glob("offline-run-*"))


@pytest.mark.slow  # a minute; the interrupted sweep's test runs a sweep and its continuation
def test_a_tiny_sweep_prunes_and_its_best_config_trains(tmp_path, cluster):
    config = load_sweep_config(write(tmp_path, SWEEP, "sweep.yaml"))
    out = tmp_path / "out"
    summary = run_sweep(config, tmp_path / "runs", out, address=None, say=lambda _: None)
    rows = summary["trials"]
    assert len(rows) == 6 and not [r for r in rows if r["status"] == "error"], rows
    assert summary["pruned"] >= 1, rows
    pruned = [r for r in rows if r["status"] == "pruned"]
    assert all(r["steps"] < 384 for r in pruned)
    assert rows[0]["base"] and rows[0]["params"]["algo.learning_rate"] == 5.0e-4
    # which trial is best (ties included: tiny budgets often end in the same episode) is pinned
    # on hand-made trial rows in test_sweep_selection.py; here the best one trained its whole
    # budget and was evaluated there
    best = summary["best"]
    assert best["status"] == "completed"
    assert (tmp_path / "runs" / best["trial"] / "eval" / "step_0000000384.json").is_file()
    # every trial is an ordinary run directory on the driver, grouped and tagged for W&B
    trial_config = read_yaml(tmp_path / "runs" / best["trial"] / "config.yaml")
    assert trial_config["logging"]["group"] == "sweep-tiny"
    assert {"highway", "attention", "sweep"} <= set(trial_config["logging"]["tags"])
    table = (out / "trials.md").read_text()
    assert "**best**" in table and table.count("| pruned |") == summary["pruned"]
    # the best configuration trains with scripts/train.py as it is
    best_yaml = read_yaml(out / "best.yaml")
    assert best_yaml["algo"]["learning_rate"] == pytest.approx(best["params"]["algo.learning_rate"])
    trained = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            "--config",
            str(out / "best.yaml"),
            "--steps",
            "128",
            "--wandb",
            "disabled",
            "--name",
            "from-sweep",
            f"logging.root={tmp_path / 'trained'}",
            "train.final_eval_episodes=0",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert list((tmp_path / "trained" / "from-sweep" / "checkpoints").glob("step_*"))


def script(name: str):
    """A script's module (scripts/ is not a package), to call its ``main`` in this process."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_interrupted_sweep_continues_and_keeps_every_finished_trial(tmp_path, cluster, capsys):
    """Ctrl-C as soon as the first trial has trained and evaluated its whole budget (its last
    evaluation has reached the driver, Tune may not know yet): exit status 130 and one line; the
    same command then continues, and every trial whose last evaluation was on disk is completed
    with that evaluation's score."""
    raw = {
        **SWEEP,
        "name": "ctrlc",
        "steps": 128,
        "eval_every": 64,
        "trials": 2,
        "concurrent": 1,  # the second trial starts after the first has ended: Ctrl-C comes first
        "scheduler": {"grace_steps": 128, "reduction_factor": 2},  # ASHA stops nothing
    }
    runs, out = tmp_path / "runs", tmp_path / "out"
    argv = ["--config", str(write(tmp_path, raw, "sweep.yaml")), "--runs", str(runs)]
    argv += ["--out", str(out)]
    sweep = script("sweep")
    last = "eval/step_0000000128.json"
    finished = threading.Event()

    def ctrl_c_after_the_first_trial() -> None:
        while not list(runs.glob(f"ctrlc-*/{last}")):
            if finished.wait(0.05):
                return
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the terminal sends

    watcher = threading.Thread(target=ctrl_c_after_the_first_trial, daemon=True)
    watcher.start()
    try:
        code = sweep.main(argv)
    finally:
        finished.set()
        watcher.join()
    err = capsys.readouterr().err
    assert code == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted with "), err[-3000:]
    assert "Traceback" not in err and "AttributeError" not in err, err[-3000:]
    kept = {p.parts[-3]: json.loads(p.read_text()) for p in runs.glob(f"ctrlc-*/{last}")}
    assert kept and json.loads((out / "trials.json").read_text())["interrupted"]

    assert sweep.main(argv) == 0, capsys.readouterr().err[-3000:]
    summary = json.loads((out / "trials.json").read_text())
    rows = {row["trial"]: row for row in summary["trials"]}
    assert not summary["interrupted"] and len(rows) == 2
    assert {row["status"] for row in rows.values()} == {"completed"}, rows
    for trial, evaluation in kept.items():
        assert rows[trial]["steps"] == 128
        assert rows[trial]["mean_return"] == evaluation["mean_return"]


def test_the_table_takes_a_trial_s_score_from_its_run_directory(tmp_path):
    """Tune's record of a trial can lag behind its run directory (a sweep stopped by Ctrl-C before
    Tune stored the trial's last report, then continued): a trial whose last evaluation on disk
    is at the whole budget is completed with that score, not pruned at the last step Tune knew;
    a trial that had not reported when the sweep stopped gets no row (and no crash)."""
    from ray.tune import Result

    config = load_sweep_config(write(tmp_path, SWEEP, "sweep.yaml"))
    params = {"algo.learning_rate": 5.0e-4, "train.seed": 0}
    behind = {"trial_id": "aaaa0001", "env_steps": 128, "done": True, "config": params}
    behind.update(mean_return=1.0, success_rate=0.0, collision_rate=1.0, mean_speed=3.0)
    evaluation = {"step": 384, "mean_return": 7.5, "success_rate": 1.0}
    evaluation.update(collision_rate=0.0, mean_speed=9.0, episodes=[])
    saved = tmp_path / "runs" / "tiny-aaaa0001" / "eval" / "step_0000000384.json"
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps(evaluation))
    grid = [
        Result(metrics=behind, checkpoint=None, error=None, path=str(tmp_path / "t1")),
        Result(metrics={}, checkpoint=None, error=None, path=str(tmp_path / "t2")),
    ]
    (row,) = trial_rows(grid, config, tmp_path / "runs")
    assert row["trial"] == "tiny-aaaa0001" and row["status"] == "completed"
    assert row["steps"] == 384 and row["mean_return"] == 7.5 and row["mean_speed"] == 9.0
    assert row["params"] == params and row["base"]


def test_tied_trials_have_one_best_whatever_order_tune_returns_them_in(tmp_path):
    """Trials 2 and 3 tie for the best score (tiny budgets often end in the same episode): the
    earlier trial is best however the result grid is ordered, and the table is the same."""
    from ray.tune import Result

    config = load_sweep_config(write(tmp_path, SWEEP, "sweep.yaml"))

    def result(number: int, trial_id: str, score: float) -> Result:
        metrics = {"trial_id": trial_id, "env_steps": 384, "done": True, "mean_return": score}
        metrics.update(success_rate=1.0, collision_rate=0.0, mean_speed=20.0)
        metrics["config"] = {"algo.learning_rate": 1.0e-4 * number, "train.seed": number}
        folder = f"run_trial_{trial_id}_{number}_algo_learning_rate={number}_2026-01-01_00-00-00"
        return Result(metrics=metrics, checkpoint=None, error=None, path=str(tmp_path / folder))

    grid = [result(1, "aaaa0001", 20.0), result(2, "ffff0002", 31.0), result(3, "0000beef", 31.0)]
    tables = set()
    for order in itertools.permutations(grid):
        rows = trial_rows(list(order), config, tmp_path / "runs")
        summary = write_results(config, rows, tmp_path / "out", tmp_path / "runs")
        assert summary["best"]["trial"] == "tiny-ffff0002", [r["trial"] for r in rows]
        tables.add((tmp_path / "out" / "trials.md").read_text())
    assert len(tables) == 1


def silent_server() -> socket.socket:
    """A TCP server on the loopback address that accepts connections and never answers."""
    server = socket.create_server((LOOPBACK, 0))
    held = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    return server


@pytest.mark.parametrize(
    "listener",
    # a silent listener costs the connect probe's whole wait (a dozen seconds): make test-slow
    ["nothing", pytest.param("silent", marks=pytest.mark.slow)],
)
def test_scripts_say_how_to_reach_a_cluster(tmp_path, listener):
    """A cluster address where no Ray head answers (nothing listens, or something that is not Ray
    and never answers) is one clear line within seconds, not a hang or a traceback, from the
    study and the sweep alike."""
    server = silent_server() if listener == "silent" else None
    address = f"{LOOPBACK}:{server.getsockname()[1] if server else 1}"
    study = write(tmp_path, {**STUDY, "name": "noray"})
    sweep = write(tmp_path, {**SWEEP, "name": "noray"}, "sweep.yaml")
    commands = {
        "benchmark": ["benchmark.py", "--config", str(study), "--runs", str(tmp_path / "a")],
        "sweep": ["sweep.py", "--config", str(sweep), "--runs", str(tmp_path / "b")],
    }
    running = {  # both at once: each waits on the probe, not on a CPU
        name: subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / args[0]), *args[1:], "--ray", address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for name, args in commands.items()
    }
    try:
        for name, process in running.items():
            _, err = process.communicate(timeout=120)  # a hang fails here
            assert process.returncode == 2, (name, err[-2000:])
            assert err.count("\n") == 1 and err.startswith(f"error: --ray {address}: "), err
            assert "ray start --head" in err
        assert list(tmp_path.glob("*/*")) == []  # refused before any work
    finally:
        for process in running.values():
            process.kill()
            process.wait()
        if server is not None:
            server.close()


def test_a_ray_head_answers_the_probe(cluster):
    assert gcs_answers(cluster.address) is True
