"""One command for a machine with a GPU: CUDA tests, batched-simulator and training throughput.

    python scripts/bench_gpu.py [--json runs/bench_gpu.json] [--device cuda|cpu] [--quick]
        [--budget 450] [--batch B ...] [--scenarios ID ...] [--train-runs NAME ...]
        [--train-steps N] [--seconds S] [--threads N] [--skip-tests] [--skip-sim] [--skip-train]

Three parts, each in child processes of its own with a time limit (a hung or crashed CUDA call
costs that part, never the run), the JSON rewritten after every result:

1. ``tests``: ``pytest -m cuda`` (``tests/test_cuda.py`` and any other test marked ``cuda``):
   passed / failed / errors / skipped counts.
2. ``sim``: for every batched scenario (``envs.BATCHED_IDS``, one process each) and B in the
   ladder (1024, 4096, 16384, 65536 by default), 64x64 frames: env steps/s of the tensor API with
   automatic reset (random actions drawn on the device; sensors and camera frames made and kept
   on the device; warm-up excluded, ``torch.cuda.synchronize`` around the timing), frames/s of
   the renderer alone (label raster + colouring), and peak GPU memory. The ladder stops at an
   out-of-memory error (recorded) or when the scenario's time is spent.
3. ``train``: env steps/s of PPO (rollout collection + update) for the experiments of
   ``TRAIN_RUNS`` (``configs/highway_env.yaml`` on cuda, then on the CPU, then the batched config),
   each for ``--train-steps`` steps after one warm-up rollout.

``--budget`` (seconds, the whole run) is shared by the parts in the ratio of ``SHARES``; time a
part leaves unused passes to the next ones. Without CUDA the command stops at once with an
error, unless ``--device cpu`` is given (a smoke run: every part on the CPU, CUDA tests skipped;
``--quick`` shrinks the ladder and the training to seconds). Exit status: 0 when nothing failed
(what the budget left out is listed in the JSON, not a failure); 1 when a test failed or a part
crashed or ran out of time (the JSON says which); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: the project's packages are importable
    sys.path.insert(0, str(ROOT))

LADDER = (1024, 4096, 16384, 65536)  # B, environments stepped together
QUICK_LADDER = (8, 32)
SHARES = {"tests": 0.25, "sim": 0.4, "train": 0.35}  # of --budget, in this order
GOAL_STEPS_PER_S = 1_000_000  # with 64x64 frames on one GPU, simulator + renderer
MINIMUM_STEPS_PER_S = 100_000
# name: (experiment, device of the policy, config overrides); run in this order
TRAIN_RUNS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # the highway-env backend in subprocesses (the default before the batched simulator)
    "highway_env/cuda": ("configs/highway_env.yaml", "cuda", {}),
    "highway_env/cpu": ("configs/highway_env.yaml", "cpu", {}),
    # the batched simulator on the GPU too: only its numpy observations cross to the host
    "batched/cuda": ("configs/batched.yaml", "cuda", {"env.kwargs.device": "cuda"}),
    "batched/cpu": ("configs/batched.yaml", "cpu", {}),
}
QUICK_TRAIN = {"algo.n_steps": 8, "algo.batch_size": 16, "algo.n_epochs": 1}
MARGIN_S = 5.0  # [s] kept back from every child's limit for the parent's own work
MIN_CHILD_S = 6.0  # [s] below this a child is not started (imports alone take seconds)


# ------------------------------------------------------------------------------------ workers
def emit(path: Path, record: dict[str, Any]) -> None:
    """Append one result (a JSON line) for the parent, at once."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def sim_rate(env_id: str, b: int, camera: tuple[int, int], device: str, seconds: float) -> dict:
    """Throughput of the batched tensor API of ``env_id`` with ``b`` environments on ``device``.

    Steps/s: step (random actions made on the device) + camera frames + sensors + automatic
    reset, as a GPU training pipeline would run it, nothing copied to the host. Frames/s: the
    renderer alone (label raster of the current traffic + colouring).
    """
    import gymnasium as gym
    import torch

    from drive_attention.envs.batched import BatchedDrive

    on_cuda = device.startswith("cuda")
    if on_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    core = BatchedDrive(num_envs=b, camera_size=camera, device=device, **gym.spec(env_id).kwargs)
    core.seed(0)
    core.reset()
    gen = torch.Generator(device=core.device)
    gen.manual_seed(0)

    def actions() -> torch.Tensor:
        if core.discrete:
            return torch.randint(core.action_dim, (b,), generator=gen, device=core.device)
        return torch.rand((b, 2), generator=gen, device=core.device) * 2 - 1  # [steer, accel]

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        out = core.step(actions())
        frames = core.camera(out.labels)  # (B, H, W, 3 S) uint8
        core.reset_envs(out.terminated | out.truncated)
        return frames, out.sensors  # (B, D)

    def render() -> torch.Tensor:
        return core.camera(core.raster.draw(core.traffic)[:, None])  # (B, H, W, 3)

    def rate(fn: Callable[[], Any], limit: float) -> tuple[float, int, Any]:
        result = fn()  # warm-up, not timed
        result = fn()
        synchronize(device)
        calls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < limit or calls < 3:
            result = fn()
            calls += 1
        synchronize(device)
        return time.perf_counter() - t0, calls, result

    synchronize(device)
    setup = time.perf_counter() - start
    step_s, step_calls, (frames, sensors) = rate(step, seconds)
    render_s, render_calls, _ = rate(render, seconds / 2)
    return {
        "steps_per_s": step_calls * b / step_s,
        "frames_per_s": render_calls * b / render_s,
        "step_ms": 1e3 * step_s / step_calls,
        "setup_s": setup,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if on_cuda else None,
        "obs_device": str(frames.device),
        "camera_shape": list(frames.shape[1:]),
        "sensors_shape": list(sensors.shape[1:]),
        "sensors_device": str(sensors.device),
    }


def sim_worker(args: argparse.Namespace) -> int:
    """Every B of the ladder for each scenario of ``--scenario``, one result line each; each
    scenario gets an equal share of the time left."""
    import gc

    import torch

    out, camera = Path(args.worker_out), tuple(args.camera)
    for k, env_id in enumerate(args.scenario):
        deadline = time.time() + (args.deadline - time.time()) / (len(args.scenario) - k)
        last_cost = 0.0
        for b in args.batch:
            left = deadline - time.time()
            if last_cost and left < 2 * last_cost + args.seconds:  # B grows along the ladder
                emit(out, {"scenario": env_id, "B": b, "skipped": f"time budget ({left:.0f} s)"})
                continue
            t0 = time.perf_counter()
            row: dict[str, Any] = {"scenario": env_id, "B": b}
            try:
                row.update(sim_rate(env_id, b, camera, args.device, args.seconds))
            except (torch.OutOfMemoryError, MemoryError) as err:
                row.update(error=f"out of memory: {str(err)[:300]}", out_of_memory=True)
            except Exception as err:  # recorded; the next scenario goes on
                row["error"] = f"{type(err).__name__}: {str(err)[:500]}"
            emit(out, row)  # the traceback (and the tensors it held) is gone here
            gc.collect()
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            if "error" in row:
                break  # the ladder stops at an out-of-memory error or any other
            last_cost = time.perf_counter() - t0
    return 0


def train_worker(args: argparse.Namespace) -> int:
    """PPO of one ``TRAIN_RUNS`` entry: one warm-up rollout, then ``--train-steps`` timed."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger

    from drive_attention.agent.run.build import (
        make_algo,
        make_vec_env,
        probe_env,
        resolve_device,
        wrap_normalize,
    )
    from drive_attention.agent.run.config_files import load_config

    path, device, overrides = TRAIN_RUNS[args.run]
    overrides = {**overrides, **(QUICK_TRAIN if args.quick else {})}
    cfg = load_config(ROOT / path, overrides)
    device = resolve_device(device)
    if cfg.train.torch_threads:
        torch.set_num_threads(cfg.train.torch_threads)
    rollout = cfg.algo.n_steps * cfg.env.n_envs
    timed_rollouts = max(1, args.train_steps // rollout)
    deadline = args.deadline

    class Clock(BaseCallback):
        """Times each rollout; stops learning at the deadline."""

        def __init__(self) -> None:
            super().__init__()
            self.starts: list[tuple[float, int]] = []  # (time, num_timesteps) per rollout
            self.collect: list[float] = []  # [s] per rollout

        def _on_rollout_start(self) -> None:
            self.starts.append((time.perf_counter(), self.num_timesteps))

        def _on_rollout_end(self) -> None:
            self.collect.append(time.perf_counter() - self.starts[-1][0])

        def _on_step(self) -> bool:
            return time.time() < deadline

    spec = probe_env(cfg.env)
    venv = wrap_normalize(make_vec_env(cfg.env, cfg.train.seed), cfg.env, cfg.algo.gamma)
    try:
        model = make_algo(cfg, venv, spec, device)
        model.set_logger(Logger(folder=None, output_formats=[]))  # no /tmp/SB3-* folder
        clock = Clock()
        model.learn(rollout * (1 + timed_rollouts), callback=clock)
        end = time.perf_counter()
    finally:
        venv.close()
    if len(clock.starts) < 2:
        raise RuntimeError("the time budget ran out during the warm-up rollout")
    t0, steps0 = clock.starts[1]
    steps, seconds = model.num_timesteps - steps0, end - t0
    collect = sum(clock.collect[1:])
    emit(
        Path(args.worker_out),
        {
            "config": path,
            "env": cfg.env.id,
            "n_envs": cfg.env.n_envs,
            "env_device": str(cfg.env.kwargs.get("device", "cpu")),
            "device": str(model.device),
            "torch_threads": torch.get_num_threads(),
            "rollout_steps": rollout,
            "steps": steps,
            "seconds": seconds,
            "steps_per_s": steps / seconds,
            "collect_s": collect,
            "update_s": seconds - collect,
            "stopped_early": steps < rollout * timed_rollouts,
        },
    )
    return 0


# ------------------------------------------------------------------------------------ parent
class Report:
    """The results so far, written to ``path`` after every change."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = path, data

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, self.path)


def _kill(proc: subprocess.Popen) -> None:
    """End the child and everything it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_child(
    cmd: list[str], timeout: float, records: Path | None, on_record: Callable[[dict], None]
) -> dict[str, Any]:
    """Run ``cmd`` for at most ``timeout`` seconds, passing each result line of ``records`` to
    ``on_record`` as it arrives. Returns the exit status, whether it timed out, the time taken
    and the end of its output."""
    log = Path(tempfile.mkstemp(prefix="bench_gpu_", suffix=".log")[1])
    offset, start, timed_out = 0, time.perf_counter(), False

    def drain() -> None:
        nonlocal offset
        if records is None or not records.exists():
            return
        with open(records) as f:
            f.seek(offset)
            text = f.read()
        complete = text[: text.rfind("\n") + 1]  # whole lines only
        offset += len(complete)
        for line in complete.splitlines():
            on_record(json.loads(line))

    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while True:
                try:
                    proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
                drain()
                if proc.returncode is not None:
                    break
                if time.perf_counter() - start > timeout:
                    timed_out = True
                    _kill(proc)
                    break
        except BaseException:  # Ctrl-C: no child outlives the run
            _kill(proc)
            raise
    drain()
    tail = log.read_text(errors="replace")[-3000:]
    log.unlink()
    return {
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "seconds": round(time.perf_counter() - start, 1),
        "tail": tail,
    }


def worker_cmd(args: argparse.Namespace, kind: str, out: Path, deadline: float) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind]
    cmd += ["--worker-out", str(out), "--deadline", f"{deadline:.3f}", "--device", args.device]
    cmd += ["--seconds", str(args.seconds), "--train-steps", str(args.train_steps)]
    cmd += ["--camera", *map(str, args.camera), "--batch", *map(str, args.batch)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.quick:
        cmd.append("--quick")
    return cmd


def run_tests(args: argparse.Namespace, report: Report, limit: float, tmp: Path) -> bool:
    """``pytest -m cuda``; the counts from its JUnit XML."""
    xml = tmp / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"]
    cmd += [f"--junitxml={xml}", "tests"]
    run = run_child(cmd, limit, None, lambda record: None)
    row: dict[str, Any] = {"seconds": run["seconds"], "returncode": run["returncode"]}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        row.update(
            passed=counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            failed=counts["failures"],
            errors=counts["errors"],
            skipped=counts["skipped"],
        )
    ok = run["returncode"] == 0 and not run["timed_out"] and row.get("passed", 0) > 0
    if run["timed_out"]:
        row["status"] = f"timeout after {limit:.0f} s"
    elif run["returncode"] == 5:
        row["status"] = "no test marked cuda was collected"
    elif run["returncode"] == 0 and not row.get("passed"):
        row["status"] = "no test ran (all skipped: does pytest see the GPU?)"
    else:
        row["status"] = "passed" if ok else "failed"
    if not ok:
        row["tail"] = run["tail"]
    report.data["tests"] = row
    report.write()
    print(f"tests: {row['status']} {_counts(row)} ({row['seconds']:.0f} s)", flush=True)
    return ok


def _counts(row: dict[str, Any]) -> str:
    if "passed" not in row:
        return ""
    keys = ("passed", "failed", "errors", "skipped")
    return "(" + ", ".join(f"{row[k]} {k}" for k in keys) + ")"


def run_sim(args: argparse.Namespace, report: Report, limit: float, tmp: Path) -> bool:
    """The scenarios in child processes, each with an equal share of ``limit``: one child per
    scenario on a GPU (a CUDA error can spoil its process), one for all on the CPU (faster)."""
    sims: dict[str, Any] = report.data["sim"]
    for env_id in args.scenarios:
        sims[env_id] = {"status": "pending", "B": {}}
    cuda = args.device.startswith("cuda")
    groups = [[s] for s in args.scenarios] if cuda else [list(args.scenarios)]
    end, ok, done = time.time() + limit, True, 0
    for k, group in enumerate(groups):
        share = (end - time.time()) * len(group) / (len(args.scenarios) - done)
        done += len(group)
        if share < MIN_CHILD_S:
            for env_id in group:
                sims[env_id]["status"] = "skipped: time budget"
            continue
        out = tmp / f"sim_{k}.jsonl"

        def record(row: dict[str, Any]) -> None:
            env_id, b = row.pop("scenario"), str(row.pop("B"))
            sims[env_id]["B"][b] = row
            report.write()
            print(f"sim {env_id} B={b}: {_sim_line(row)}", flush=True)

        cmd = worker_cmd(args, "sim", out, time.time() + share - MARGIN_S)
        run = run_child([*cmd, "--scenario", *group], share, out, record)
        for env_id in group:
            entry = sims[env_id]
            rows = entry["B"].values()
            errors = [r for r in rows if "error" in r and not r.get("out_of_memory")]
            if run["timed_out"] or run["returncode"] != 0 or errors or not rows:
                entry["status"] = f"timeout after {share:.0f} s" if run["timed_out"] else "error"
                entry["tail"] = run["tail"]
                ok = False
            else:
                entry["status"] = "ok"
            rates = [r["steps_per_s"] for r in rows if "steps_per_s" in r]
            entry["best_steps_per_s"] = max(rates) if rates else None
        report.write()
    return ok


def _sim_line(row: dict[str, Any]) -> str:
    if "steps_per_s" not in row:
        return row.get("error") or row.get("skipped", "")
    memory = row["peak_memory_gb"]
    peak = "" if memory is None else f", peak {memory:.2f} GB"
    return f"{row['steps_per_s']:,.0f} steps/s, {row['frames_per_s']:,.0f} frames/s{peak}"


def run_train(args: argparse.Namespace, report: Report, limit: float, tmp: Path) -> bool:
    """One child per training run, in order, each limited to what is left of ``limit``."""
    runs: dict[str, Any] = report.data["train"]
    end, ok = time.time() + limit, True
    for k, name in enumerate(args.train_runs):
        left = end - time.time()
        if left < 2 * MIN_CHILD_S:
            runs[name] = {"status": "skipped: time budget"}
            continue
        out = tmp / f"train_{k}.jsonl"
        cmd = worker_cmd(args, "train", out, time.time() + left - MARGIN_S)

        def record(row: dict[str, Any], name: str = name) -> None:
            runs[name] = {"status": "ok", **row}
            report.write()
            print(f"train {name}: {row['steps_per_s']:,.1f} steps/s", flush=True)

        run = run_child([*cmd, "--run", name], left, out, record)
        if name not in runs:
            reason = f"timeout after {left:.0f} s" if run["timed_out"] else "error"
            runs[name] = {"status": reason, "tail": run["tail"]}
            ok = False
        report.write()
    return ok


def system_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=torch.cuda.get_device_name(device),
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
        )
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def goal(sims: dict[str, Any]) -> dict[str, Any]:
    best = {k: v.get("best_steps_per_s") for k, v in sims.items()}
    rated = [v for v in best.values() if v]
    top = max(rated) if rated else None
    verdict = (
        "no result"
        if top is None
        else "met"
        if top >= GOAL_STEPS_PER_S
        else "minimum met"
        if top >= MINIMUM_STEPS_PER_S
        else "below minimum"
    )
    return {
        "target_steps_per_s": GOAL_STEPS_PER_S,
        "minimum_steps_per_s": MINIMUM_STEPS_PER_S,
        "best_steps_per_s": best,
        "verdict": verdict,
    }


def print_tables(data: dict[str, Any]) -> None:
    system, settings = data["system"], data["settings"]
    print(
        f"\n{settings['device']} ({system['device_name']}), torch {system['torch']}, "
        f"CUDA {system['cuda']}"
    )
    tests = data["tests"]
    print(f"CUDA tests: {tests.get('status')} {_counts(tests)}")
    h, w = settings["camera_size"]
    print(f"\nsimulator + renderer, {h}x{w} frames, tensors kept on {settings['device']}")
    print(f"{'scenario':38s} {'B':>6} {'steps/s':>12} {'frames/s':>12} {'step ms':>9} {'GB':>6}")
    for env_id, entry in data["sim"].items():
        if not entry["B"]:
            print(f"{env_id:38s} {entry['status']}")
        for b, row in entry["B"].items():
            if "steps_per_s" in row:
                memory = row["peak_memory_gb"]
                print(
                    f"{env_id:38s} {b:>6} {row['steps_per_s']:>12,.0f} "
                    f"{row['frames_per_s']:>12,.0f} {row['step_ms']:>9.1f} "
                    f"{'-' if memory is None else f'{memory:.2f}':>6}"
                )
            else:
                print(f"{env_id:38s} {b:>6} {row.get('error') or row.get('skipped')}")
    g = data["goal"]
    print(f"goal >= {g['target_steps_per_s']:,} steps/s (minimum {g['minimum_steps_per_s']:,}):")
    print(f"  {g['verdict']}")
    print("\ntraining throughput (PPO, rollout collection + update)")
    print(f"{'run':14s} {'env':36s} {'steps':>6} {'steps/s':>9} {'collect s':>10} {'update s':>9}")
    for name, row in data["train"].items():
        if "steps_per_s" not in row:
            print(f"{name:14s} {row['status']}")
            continue
        print(
            f"{name:14s} {row['env'] + ' x' + str(row['n_envs']):36s} {row['steps']:>6} "
            f"{row['steps_per_s']:>9.1f} {row['collect_s']:>10.1f} {row['update_s']:>9.1f}"
        )
    print(f"\n{data['elapsed_s']:.0f} s in all")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, default=ROOT / "runs" / "bench_gpu.json")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    parser.add_argument("--quick", action="store_true", help=f"B = {QUICK_LADDER}, tiny PPO")
    parser.add_argument("--budget", type=float, default=450.0, help="[s] for the whole run")
    parser.add_argument("--batch", type=int, nargs="+", help=f"B ladder (default {LADDER})")
    parser.add_argument("--camera", type=int, nargs=2, default=(64, 64), metavar=("H", "W"))
    parser.add_argument("--seconds", type=float, help="[s] timed per B (default 1.5, quick 0.2)")
    parser.add_argument("--scenarios", nargs="+", help="batched ids (default: all)")
    parser.add_argument("--train-runs", nargs="+", choices=list(TRAIN_RUNS), help="see TRAIN_RUNS")
    parser.add_argument("--train-steps", type=int, help="timed PPO steps per run (default 2048)")
    parser.add_argument("--threads", type=int, help="torch threads of the simulator processes")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    # the parent starts this script again as its workers
    hidden = argparse.SUPPRESS
    parser.add_argument("--worker", choices=["sim", "train"], help=hidden)
    parser.add_argument("--worker-out", help=hidden)
    parser.add_argument("--deadline", type=float, help=hidden)
    parser.add_argument("--scenario", nargs="+", help=hidden)
    parser.add_argument("--run", help=hidden)
    args = parser.parse_args()
    start = time.time()
    args.batch = args.batch or list(QUICK_LADDER if args.quick else LADDER)
    args.seconds = args.seconds or (0.2 if args.quick else 1.5)
    args.train_steps = args.train_steps or (1 if args.quick else 2048)

    if args.worker:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        return sim_worker(args) if args.worker == "sim" else train_worker(args)

    import torch

    from drive_attention import envs

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"error: --device {args.device}: torch {torch.__version__} sees no CUDA device "
            f"(built for CUDA {torch.version.cuda}); run this on a machine with an NVIDIA GPU "
            "and a CUDA build of torch (scripts/install_torch.sh), or pass --device cpu for a "
            "smoke run",
            file=sys.stderr,
        )
        return 2
    unknown = [s for s in args.scenarios or () if s not in envs.BATCHED_IDS]
    if unknown:
        print(f"error: --scenarios {unknown}: use {', '.join(envs.BATCHED_IDS)}", file=sys.stderr)
        return 2
    args.scenarios = args.scenarios or list(envs.BATCHED_IDS)
    on_cpu = args.device == "cpu"
    args.train_runs = args.train_runs or [
        name for name, (_, device, _) in TRAIN_RUNS.items() if not on_cpu or device == "cpu"
    ]
    if on_cpu and any(TRAIN_RUNS[name][1] != "cpu" for name in args.train_runs):
        print("error: --device cpu: pick only .../cpu runs with --train-runs", file=sys.stderr)
        return 2

    report = Report(
        args.json,
        {
            "settings": {
                "device": args.device,
                "quick": args.quick,
                "budget_s": args.budget,
                "camera_size": list(args.camera),
                "batch_sizes": args.batch,
                "seconds_per_b": args.seconds,
                "train_steps": args.train_steps,
            },
            "system": system_info(args.device),
            "tests": {"status": "pending"},
            "sim": {},
            "train": {},
            "goal": {},
            "complete": False,
            "elapsed_s": 0.0,
        },
    )
    report.write()
    print(f"writing {args.json}; budget {args.budget:.0f} s", flush=True)

    parts: dict[str, Callable[..., bool]] = {}
    if args.skip_tests or on_cpu:
        reason = "--skip-tests" if args.skip_tests else "--device cpu (they need CUDA)"
        report.data["tests"] = {"status": "skipped", "reason": reason}
    else:
        parts["tests"] = run_tests
    if not args.skip_sim:
        parts["sim"] = run_sim
    if not args.skip_train:
        parts["train"] = run_train
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        for k, (name, part) in enumerate(parts.items()):
            left = args.budget - (time.time() - start) - MARGIN_S
            shares = [SHARES[n] for n in list(parts)[k:]]
            limit = left * SHARES[name] / sum(shares)
            ok = part(args, report, limit, Path(tmp)) and ok
            report.data["elapsed_s"] = round(time.time() - start, 1)
            report.write()
    report.data["goal"] = goal(report.data["sim"])
    report.data["complete"] = True
    report.data["ok"] = ok
    report.data["elapsed_s"] = round(time.time() - start, 1)
    report.write()
    print_tables(report.data)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
