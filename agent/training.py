"""A training run from a validated config: build, learn with callbacks, checkpoint, evaluate.

:func:`prepare` does every check (config, env kwargs, model, checkpoint, run folder) before any
work starts and takes the run's lock; :class:`Trainer` then runs, holding it, and returns the
process exit status. Nothing is written to the run folder until every check has passed.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecNormalize

from agent.build import (
    ALGORITHMS,
    EnvSpec,
    make_algo,
    make_env,
    make_vec_env,
    policy_kwargs,
    probe_env,
    resolve_device,
    wrap_normalize,
)
from agent.callbacks import (
    EpisodeMetrics,
    Periodic,
    ProgressBar,
    StopOnSignal,
    exit_status,
    graceful_stop,
    signal_name,
)
from agent.checkpoint import (
    Checkpoint,
    CheckpointError,
    algo_state,
    check_state_dict,
    checkpoint_path,
    load_checkpoint,
    restore_algo_state,
    save_checkpoint,
)
from agent.config import (
    ConfigError,
    ExperimentConfig,
    Overrides,
    apply_overrides,
    config_diff,
    load_config,
    read_yaml,
    resolve_config,
    save_config,
    to_dict,
)
from agent.evaluation import (
    SUMMARY_KEYS,
    TABLE_COLUMNS,
    EpisodeResult,
    EvalReport,
    IdlePolicy,
    RandomPolicy,
    TrainedPolicy,
    evaluate,
    format_table,
    table_rows,
    video_caption,
)
from agent.files import UnsafePathError, remove_orphan_temps, write_text
from agent.rule_policy import has_rule, rule_policy
from agent.rundir import STEP_FILE, RunDir, RunDirError, RunLock, default_run_name
from agent.wandb_logger import RunLogger, SB3Writer

EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT); SIGTERM exits 143: 128 + the signal number
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
WRITE_FAILURES = (*DISK_FULL, errno.EROFS)  # reported in one line, not as a traceback


@dataclass
class Prepared:
    """A validated run, ready to train; holds the run's lock until :meth:`Trainer.run` ends."""

    config: ExperimentConfig
    run: RunDir
    spec: EnvSpec
    device: str
    checkpoint: Checkpoint | None = None
    lock: RunLock | None = None

    def release(self) -> None:
        """Give the run's lock back (a prepared run that will not be trained)."""
        if self.lock is not None:
            self.lock.release()


def prepare(
    config_path: str | Path | None,
    overrides: Overrides = (),
    resume: str | Path | None = None,
    checkpoint: str | Path | None = None,
    *,
    empty_folder: bool = False,
    base: Mapping[str, Any] | None = None,
) -> Prepared:
    """Validate everything a run needs, before any work: config, env kwargs, model, checkpoint,
    run folder; then take the run's lock (a run that another process trains is refused at once).

    Nothing is written but the lock file (and, for a new run, its folder). ``overrides`` are
    command-line items or data (see :data:`agent.config.Overrides`). ``resume``: continue that
    run from its latest checkpoint, or from ``checkpoint`` (one of the run's own); the config is
    the one stored in the checkpoint with ``overrides`` on top (``config.yaml``, which anyone can
    edit, is only compared with it). ``base``: the experiment ``config_path`` held, already read
    (a study reads its base once, so that editing the file mid-study changes none of its runs).
    A new run never reuses a folder that holds a run;
    ``empty_folder`` (the command line) refuses any non-empty folder, else files that are not a
    run's (a benchmark's log) may be there already.
    """
    if resume is not None:
        return _prepare_resume(RunDir(Path(resume)), overrides, checkpoint)
    if checkpoint is not None:
        raise ConfigError(
            "--checkpoint picks the checkpoint a run continues from: give the run with --resume "
            "runs/<name> (to evaluate a checkpoint, use scripts/evaluate.py --checkpoint)"
        )
    if config_path is None:
        raise ConfigError("give --config configs/<experiment>.yaml (or --resume runs/<name>)")
    config = load_config(base if base is not None else config_path, overrides)
    if config.logging.name is None:
        config.logging.name = default_run_name(config_path)
    if config.logging.group is None:  # seeds and arms of one experiment share a W&B group
        config.logging.group = Path(config_path).stem
    run = RunDir(Path(config.logging.root) / config.logging.name)
    run.check_writable()
    run.check_not_in_use()
    run.check_new(strict=empty_folder)
    device = resolve_device(config.train.device)
    spec = probe_env(config.env)  # validates env.id and env.kwargs
    check_model(config, spec)
    check_eval_env(config, spec)
    lock = run.lock()
    try:
        run.check_new(strict=empty_folder)  # under the lock: nobody started it meanwhile
    except BaseException:
        lock.release()
        raise
    return Prepared(config, run, spec, device, None, lock)


def _prepare_resume(run: RunDir, overrides: Overrides, checkpoint: str | Path | None) -> Prepared:
    if not run.path.is_dir():
        raise ConfigError(
            f"--resume {run.path}: no such run folder; give runs/<name> of a run that "
            "scripts/train.py wrote"
        )
    run.check_writable()
    lock = run.lock()  # before reading the checkpoints: no other process writes them now
    try:
        config, ckpt = _resume_config(run, overrides, checkpoint)
        device = resolve_device(config.train.device)
        spec = probe_env(config.env)
        check_resumed_reward(run, config)
        check_model(config, spec)
        check_eval_env(config, spec)
        _check_checkpoint_fits(config, spec, ckpt)
    except BaseException:
        lock.release()
        raise
    return Prepared(config, run, spec, device, ckpt, lock)


def _resume_config(
    run: RunDir, overrides: Overrides, checkpoint: str | Path | None
) -> tuple[ExperimentConfig, Checkpoint]:
    """The checkpoint to continue from and the run's config: the checkpoint's own, overrides on
    top. ``config.yaml`` is only compared with it (and a difference reported)."""
    if checkpoint is not None:
        ckpt = load_checkpoint(run.own_checkpoint(checkpoint))
    else:
        found = run.latest_checkpoint()
        if found is None:
            raise CheckpointError(
                f"--resume {run.path}: no checkpoint in {run.checkpoints}, so there is nothing to "
                "continue; start a new run with --config and another --name"
            )
        try:
            ckpt = load_checkpoint(found)
        except CheckpointError as err:
            raise CheckpointError(f"{err}{_fallback_hint(run, found)}") from None
    try:
        resolve_config(ckpt.config)
    except ConfigError as err:
        raise CheckpointError(
            f"{ckpt.path}: the config stored in the checkpoint is invalid here: {err}"
        ) from None
    note = _config_yaml_note(run, ckpt)
    if note:
        print(note, file=sys.stderr)
    raw = apply_overrides(apply_overrides(ckpt.config, overrides), {"logging.name": run.name})
    config = resolve_config(raw)
    changed = config_diff(ckpt.config, to_dict(config))
    if changed:
        print("resuming with changed options:\n  " + "\n  ".join(changed), file=sys.stderr)
    return config, ckpt


def _weights_text(weights: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in weights.items()) + "}"


def check_resumed_reward(run: RunDir, config: ExperimentConfig) -> None:
    """Refuse to continue a run under other reward weights than it was trained with, unless
    ``env.kwargs.reward_weights`` names each term that changes. A run records its weights in
    ``run.json``; the config leaves the defaults out, so a change of defaults would otherwise
    change a resumed run's reward without a word. A run made before runs recorded them gets a
    warning (its weights are unknown)."""
    import envs

    current = envs.reward_weights(config.env.id, **config.env.kwargs)
    recorded = run.read_info().get("reward_weights")
    keep = f"env.kwargs.reward_weights='{_weights_text(current)}'"
    if recorded is None:
        print(
            f"warning: {run.path} does not record the reward weights it was trained with (made "
            f"before runs recorded them); it continues under {_weights_text(current)}. If it was "
            "trained under other weights (before issue 17 every scenario used alive 0, progress "
            "0.5, collision 1), give them with env.kwargs.reward_weights='{...}'",
            file=sys.stderr,
        )
        return
    recorded = {k: float(v) for k, v in recorded.items()}
    # a term the record lacks did not exist when the run was trained: it weighed 0
    changed = [k for k in current if recorded.get(k, 0.0) != current[k]]
    # the terms the command line (or the run's own config) names are asked for; any other term
    # whose weight differs from the recorded one changed under the run without a word
    named = config.env.kwargs.get("reward_weights") or {}
    unasked = [k for k in changed if k not in named]
    if not unasked:
        return
    text = ", ".join(f"{k} {recorded.get(k, 'unset')} -> {current[k]:g}" for k in unasked)
    trained = f"env.kwargs.reward_weights='{_weights_text(recorded)}'"
    raise ConfigError(
        f"--resume {run.path}: the run was trained with the reward weights "
        f"{_weights_text(recorded)}, and this version's defaults would change them ({text}); "
        f"to continue with the reward it was trained under, add {trained}; to switch to the new "
        f"reward on purpose, add {keep}"
    )


def _fallback_hint(run: RunDir, damaged: Path) -> str:
    """What to run instead when the latest checkpoint cannot be read: the newest readable one."""
    match = STEP_FILE.match(damaged.name)
    damaged_step = int(match.group(1)) if match else None
    for step, path in reversed(run.checkpoint_files()):
        if path == damaged or (damaged_step is not None and step >= damaged_step):
            continue
        try:
            load_checkpoint(path)
        except CheckpointError:
            continue
        return (
            "; to continue from the previous checkpoint instead, run: python scripts/train.py "
            f"--resume {run.path} --checkpoint {path}"
        )
    return f"; {run.path} has no earlier readable checkpoint: start a new run (--config, --name)"


def _config_yaml_note(run: RunDir, ckpt: Checkpoint) -> str | None:
    """One line when ``config.yaml`` is missing, unreadable or differs from the checkpoint's."""
    saved = f"the config saved in the checkpoint {ckpt.path.name if ckpt.path else ''}".rstrip()
    rewritten = (
        "(config.yaml is rewritten from it; to change an option, give key.sub=value on the "
        "command line)"
    )
    using = f"using {saved} {rewritten}"
    if not run.config.is_file():
        return f"warning: {run.config} is missing; {using}"
    try:
        raw = read_yaml(run.config)
    except (ConfigError, ValueError, OSError):
        return (
            f"warning: {run.config} is corrupted (not a readable YAML mapping) and ignored; {using}"
        )
    if not raw:
        return f"warning: {run.config} is empty and ignored; {using}"
    try:  # read as a config is read (5e-4 as a number, defaults for what is left out)
        resolved = to_dict(resolve_config(raw))
    except Exception:  # whatever is wrong with it, it is compared as written
        resolved = raw
    try:
        keys = [line.split(":", 1)[0] for line in config_diff(ckpt.config, resolved)]
    except Exception:
        return f"warning: {run.config} is corrupted (not a config) and ignored; {using}"
    if not keys:
        return None
    shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
    return (
        f"warning: {run.config} differs from {saved} in {shown} and is ignored: using the "
        f"checkpoint's {rewritten}"
    )


def check_model(config: ExperimentConfig, spec: EnvSpec) -> None:
    """Build the policy once on the probe spaces so model errors surface before any work."""
    try:
        kwargs = policy_kwargs(config, spec)
        extractor_class = kwargs["features_extractor_class"]
        extractor_class(spec.observation_space, **kwargs["features_extractor_kwargs"])
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"model: {err}") from None


def eval_env_id(config: ExperimentConfig) -> str:
    """The env id the run is evaluated on: ``train.eval_env``, else the training env's."""
    return config.train.eval_env or config.env.id


def check_eval_env(config: ExperimentConfig, spec: EnvSpec) -> None:
    """A ``train.eval_env`` other than ``env.id`` must give the policy the same observations
    and actions (same sensor names, spaces); asked before any work."""
    import envs

    eval_id = eval_env_id(config)
    if eval_id == config.env.id:
        return

    def scenario(env_id: str) -> str | None:
        return envs.HIGHWAY_IDS.get(env_id) or envs.BATCHED_IDS.get(env_id)

    if scenario(eval_id) != scenario(config.env.id):
        raise ConfigError(
            f"train.eval_env: {eval_id} is not the scenario of env.id {config.env.id}; judge a "
            "run on another backend of the same scenario, or leave train.eval_env out"
        )
    other = probe_env(replace(config.env, id=eval_id))
    same = (
        other.sensor_names == spec.sensor_names
        and other.observation_space == spec.observation_space
        and other.action_space == spec.action_space
    )
    if not same:
        raise ConfigError(
            f"train.eval_env: {eval_id} with env.kwargs gives other observations or actions "
            f"than env.id {config.env.id} (sensors {len(other.sensor_names)} vs "
            f"{len(spec.sensor_names)}, {other.observation_space} vs {spec.observation_space}); "
            "evaluate on a backend of the same scenario, or leave train.eval_env out"
        )


def _check_checkpoint_fits(config: ExperimentConfig, spec: EnvSpec, checkpoint: Checkpoint) -> None:
    """Build the bare policy and compare its parameters with the checkpoint's."""
    algo_class = ALGORITHMS[config.algo.name]
    if checkpoint.state.get("algo") != algo_class.__name__:
        raise CheckpointError(
            f"{checkpoint.path} was written by {checkpoint.state.get('algo')}, the config asks for "
            f"{algo_class.__name__}; keep algo.name as it was"
        )
    normalizes = config.env.normalize_sensors or config.env.normalize_reward
    if normalizes and not checkpoint.state.get("vec_normalize"):
        raise CheckpointError(
            f"{checkpoint.path}: the config normalises sensors or rewards (env.normalize_*) but "
            "the checkpoint holds no normalisation statistics; resume with the options it was "
            "trained with"
        )
    policy = algo_class.policy_aliases["MultiInputPolicy"](
        spec.observation_space,
        spec.action_space,
        lambda _: config.algo.learning_rate,
        **policy_kwargs(config, spec),
    )
    try:
        check_state_dict(policy.state_dict(), checkpoint.state["params"]["policy"], "policy")
    except CheckpointError as err:
        changed = config_diff(checkpoint.config, to_dict(config))
        hint = f" (options changed since: {'; '.join(changed)})" if changed else ""
        raise CheckpointError(f"{checkpoint.path}: {err}{hint}") from None


class Trainer:
    """Trains one prepared run; :meth:`run` returns the exit status."""

    def __init__(self, prepared: Prepared) -> None:
        self.config = prepared.config
        self.run_dir = prepared.run
        self.spec = prepared.spec
        self.device = prepared.device
        self.checkpoint = prepared.checkpoint
        self.lock = prepared.lock
        self.model: Any = None
        self.vec_normalize: VecNormalize | None = None
        self.logger: RunLogger | None = None
        self.progress: ProgressBar | None = None
        self.eval_env: Any = None
        self.best_return = -np.inf  # the best periodic evaluation's mean return so far
        self.checkpoints: dict[int, Path] = {}  # step -> checkpoint written by this process

    # ------------------------------------------------------------------ pieces
    def save(self, step: int | None = None) -> Path:
        """Write a checkpoint of the current state (atomic)."""
        step = self.model.num_timesteps if step is None else step
        path = checkpoint_path(self.run_dir.checkpoints, step)
        state = algo_state(self.model, self.vec_normalize)
        try:
            save_checkpoint(path, Checkpoint(step=step, config=to_dict(self.config), state=state))
            self.checkpoints[step] = path
        except (OSError, SafetensorError, CheckpointError) as err:
            # save_checkpoint reports a failed write as a CheckpointError raised while handling
            # the OSError: name the OSError's cause (a full disk) and what to do next
            cause = err.__context__ if isinstance(err, CheckpointError) else err
            if not isinstance(cause, (OSError, SafetensorError)):
                raise
            raise RunDirError(self._write_failure(path, cause)) from None
        return path

    def _write_failure(self, path: Path, err: BaseException) -> str:
        """One line: what could not be written, why, what is kept and how to go on."""
        code = getattr(err, "errno", None)
        text = str(err)
        if code in DISK_FULL or "No space left" in text or "os error 28" in text:
            reason = "disk full"
        else:
            reason = getattr(err, "strerror", None) or text
        run = self.run_dir
        latest = run.latest_checkpoint()
        if latest is None:
            kept = "no checkpoint had been saved yet"
            then = f"start the run again (remove {run.path} or pick another --name)"
        else:
            kept = f"the checkpoints saved before are intact (latest: {latest.name})"
            then = f"continue with: python scripts/train.py --resume {run.path}"
        return f"cannot write {path}: {reason}; {kept}. Free space or fix the folder, then {then}"

    def _trained_policy(self) -> TrainedPolicy:
        normalize = None
        if self.vec_normalize is not None and self.vec_normalize.norm_obs:
            normalize = self.vec_normalize.normalize_obs
        return TrainedPolicy(self.model, normalize)

    def _cell_px(self) -> tuple[int, int]:
        camera = self.eval_env.unwrapped.camera_geometry  # envs.observation.CameraGeometry
        return camera.patch_cell(self.config.model.patch)

    def _evaluate(self, policy: Any, episodes: int, prefix: str, video: bool) -> EvalReport:
        cfg = self.config
        return evaluate(
            self.eval_env,
            policy,
            episodes,
            cfg.train.eval_seed,
            env_id=eval_env_id(cfg),
            video_dir=self.run_dir.videos if video else None,
            video_episodes=1,
            video_prefix=prefix,
            action_names=self.spec.action_names,
            fps=cfg.logging.video_fps,
            scale=cfg.logging.video_scale,
            cell_px=self._cell_px(),
        )

    def periodic_eval(self, step: int) -> EvalReport:
        """Evaluate on the seeded eval env; log metrics, the attention video and a table."""
        cfg = self.config
        started = time.perf_counter()
        report = self._evaluate(
            self._trained_policy(),
            cfg.train.eval_episodes,
            f"eval_step{step:010d}_",
            cfg.logging.video,
        )
        report.write_json(self.run_dir.eval / f"step_{step:010d}.json", {"step": step})
        self._log_report("eval", report, step)
        self.logger.log({"time/eval_seconds": time.perf_counter() - started}, step)
        s = report.summary()
        if s["mean_return"] > self.best_return:  # this policy becomes the artifact's "best"
            self.best_return = s["mean_return"]
            path = self.checkpoints.get(step) or self.save(step)
            self._log_checkpoint(path, step, ("best", "latest"), s)
        self._say(
            f"eval @ {step}: return {s['mean_return']:.2f} ± {s['std_return']:.2f}, success "
            f"{s['success_rate']:.0%}, collision {s['collision_rate']:.0%}"
        )
        return report

    def _log_report(self, prefix: str, report: EvalReport, step: int) -> None:
        metrics: dict[str, Any] = {f"{prefix}/{k}": v for k, v in report.summary().items()}
        terms: dict[str, list[float]] = {}
        for episode in report.episodes:
            for name, value in episode.reward_terms.items():
                terms.setdefault(name, []).append(value)
        metrics.update({f"{prefix}/reward/{k}": float(np.mean(v)) for k, v in terms.items()})
        ratios = [e.occlusion_ratio for e in report.episodes if e.occlusion_ratio is not None]
        if ratios:  # of the filmed episodes' maps: below FAITHFUL_RATIO they explain little
            metrics["attention/video_occlusion_ratio"] = float(np.mean(ratios))
        shares = [e.camera_attention for e in report.episodes if e.camera_attention is not None]
        if shares:
            metrics["attention/camera_share"] = float(np.mean(shares))
        for kind in ("mass", "lift"):  # attention per road class, over the video episodes
            rows = [getattr(e, f"attention_class_{kind}") for e in report.episodes]
            rows = [r for r in rows if r]
            for name in sorted({k for r in rows for k in r}):
                values = [r[name] for r in rows if name in r]
                metrics[f"attention/class_{kind}/{name}"] = float(np.mean(values))
        self.logger.log(metrics, step)
        for episode in report.episodes:  # a successful and a failed one, where both exist
            if episode.video:
                kind = "success" if episode.success else "failure"
                self.logger.log_video(
                    f"{prefix}/attention_video_{kind}",
                    episode.video,
                    step,
                    caption=f"step {step}: {video_caption(episode)}",
                )
        self.logger.log_table(f"{prefix}/episodes", TABLE_COLUMNS, table_rows(report), step)

    def final_eval(self, step: int) -> dict[str, EvalReport]:
        """The trained policy against the random, idle and rule references (rule where it has
        one: :func:`agent.rule_policy.has_rule`), same seeds."""
        cfg = self.config
        episodes = cfg.train.final_eval_episodes
        self._say(f"final evaluation: {episodes} episodes each, seeds {cfg.train.eval_seed}+")
        reports = {
            "trained": self._evaluate(
                self._trained_policy(), episodes, "final_trained_", cfg.logging.video
            ),
            "random": self._evaluate(RandomPolicy(self.spec.action_space), episodes, "", False),
            "idle": self._evaluate(IdlePolicy(self.spec.idle_action), episodes, "", False),
        }
        env_id, kwargs = eval_env_id(cfg), cfg.env.kwargs
        rule = None
        if has_rule(env_id):
            try:  # e.g. continuous actions on the roundabout: no rule, the table goes without
                spec = self.spec
                rule = rule_policy(env_id, kwargs, spec.sensor_names, spec.action_space)
            except ConfigError as err:
                self._say(f"no rule reference here: {err}")
        if rule is not None:
            reports["rule"] = self._evaluate(rule, episodes, "", False)
        for name, report in reports.items():
            report.write_json(self.run_dir.eval / f"final_{name}.json", {"step": step})
        comparison = {name: report.summary() for name, report in reports.items()}
        write_text(
            self.run_dir.eval / "final.json",
            json.dumps(
                {"step": step, "episodes": episodes, "seed": cfg.train.eval_seed, **comparison},
                indent=2,
            )
            + "\n",
        )
        self._log_report("final", reports["trained"], step)
        self.logger.summary(
            {
                f"final/{name}/{k}": v
                for name, summary in comparison.items()
                for k, v in summary.items()
            }
        )
        rows = [[name, *(summary[k] for k in SUMMARY_KEYS)] for name, summary in comparison.items()]
        self.logger.log_table("final/comparison", ("policy", *SUMMARY_KEYS), rows, step)
        return reports

    def _say(self, text: str) -> None:
        if self.progress is not None and self.progress.bar is not None:
            self.progress.write(text)
        else:
            print(text, file=sys.stderr)

    # ------------------------------------------------------------------ the run
    def run(self) -> int:
        """Train, holding the run's lock throughout (taken here if :func:`prepare` did not)."""
        lock = self.lock if self.lock is not None and self.lock.held else self.run_dir.lock()
        try:
            return self._run()
        except OSError as err:
            if isinstance(err, UnsafePathError):
                raise RunDirError(str(err)) from None
            if err.errno in WRITE_FAILURES:
                path = Path(err.filename) if err.filename else self.run_dir.path
                raise RunDirError(self._write_failure(path, err)) from None
            raise
        finally:
            lock.release()

    def _run(self) -> int:
        cfg = self.config
        if cfg.train.torch_threads:
            torch.set_num_threads(cfg.train.torch_threads)
        start_step = self.checkpoint.step if self.checkpoint else 0
        seed = cfg.train.seed + start_step  # a resumed run does not replay the first episodes

        venv = wrap_normalize(make_vec_env(cfg.env, seed), cfg.env, cfg.algo.gamma)
        self.vec_normalize = venv if isinstance(venv, VecNormalize) else None
        try:
            self.model = make_algo(cfg, venv, self.spec, self.device, seed=seed)
            if self.checkpoint is not None:
                restore_algo_state(self.model, self.checkpoint.state, self.vec_normalize)
            # every check has passed: only from here on is the run folder written
            run = self.run_dir
            self._tidy()
            run.create()
            save_config(cfg, run.config)  # atomic, never through a link
            return self._learn(start_step)
        finally:
            venv.close()
            if self.eval_env is not None:
                self.eval_env.close()
            if self.logger is not None:
                self.logger.finish()

    def _tidy(self) -> None:
        """Remove temp files a killed process left (the lock is held: no other writer exists);
        when resuming from an earlier checkpoint, move the later ones out of the way."""
        run = self.run_dir
        removed = []
        for folder in (run.path, run.checkpoints, run.eval, run.videos):
            removed += remove_orphan_temps(folder)
        if removed:
            names = ", ".join(p.name for p in removed[:3]) + (" ..." if len(removed) > 3 else "")
            print(
                f"removed {len(removed)} temp file(s) of an interrupted write: {names}",
                file=sys.stderr,
            )
        if self.checkpoint is None or self.checkpoint.path is None:
            return
        match = STEP_FILE.match(self.checkpoint.path.name)
        chosen = int(match.group(1)) if match else self.checkpoint.step
        later = [path for step, path in run.checkpoint_files() if step > chosen]
        if not later:
            return
        aside = run.path / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir(exist_ok=True)
        for path in later:
            os.replace(path, aside / path.name)
        print(
            f"continuing from step {chosen}: moved the {len(later)} later checkpoint(s) "
            f"({', '.join(p.name for p in later)}) to {aside}",
            file=sys.stderr,
        )

    def _learn(self, start_step: int) -> int:
        cfg, run = self.config, self.run_dir
        info = run.read_info()
        self.logger = RunLogger(
            run.path,
            mode=cfg.logging.wandb,
            config=to_dict(cfg),
            project=cfg.logging.project,
            entity=cfg.logging.entity,
            group=cfg.logging.group,
            tags=cfg.logging.tags,
            name=run.name,
            run_id=info.get("wandb_id"),
            system_metrics=cfg.logging.system_metrics,
        )
        import envs

        run.update_info(
            wandb_id=self.logger.run_id or info.get("wandb_id"),
            device=self.device,
            reward_weights=envs.reward_weights(cfg.env.id, **cfg.env.kwargs),
        )
        self.model.set_logger(Logger(folder=None, output_formats=[SB3Writer(self.logger)]))
        # road labels on the eval env: its attention videos get per-class attention figures
        self.eval_env = make_env(eval_env_id(cfg), {**cfg.env.kwargs, "road_labels": True})

        remaining = cfg.train.steps - start_step
        print(
            f"run {run.path}: {cfg.algo.name.upper()} + {cfg.model.name} on {cfg.env.id}, "
            f"{cfg.env.n_envs} env(s), device {self.device}, "
            f"steps {start_step} -> {cfg.train.steps}",
            file=sys.stderr,
        )
        stopped_by: int | None = None  # the signal that stopped training early
        if remaining > 0:
            with graceful_stop() as flag:
                self.progress = ProgressBar(cfg.train.steps)
                callbacks = [StopOnSignal(flag), self.progress, EpisodeMetrics()]
                if cfg.train.checkpoint_every:
                    callbacks.append(Periodic(cfg.train.checkpoint_every, self._periodic_save))
                if cfg.train.eval_every:
                    callbacks.append(Periodic(cfg.train.eval_every, self.periodic_eval))
                try:
                    self.model.learn(
                        total_timesteps=remaining,
                        callback=callbacks,
                        reset_num_timesteps=start_step == 0,
                        log_interval=1,
                    )
                finally:  # an error's message starts on a line of its own
                    self.progress.close()
                    self.progress = None
                stopped_by = flag.signal
        else:
            print(f"already at step {start_step} >= train.steps; nothing to train", file=sys.stderr)

        step = int(self.model.num_timesteps)
        final = self.save(step)
        if stopped_by is not None:
            print(
                f"interrupted ({signal_name(stopped_by)}) at step {step}; checkpoint saved to "
                f"{final}\ncontinue with: python scripts/train.py --resume {run.path}",
                file=sys.stderr,
            )
            return exit_status(stopped_by)
        print(f"checkpoint: {final}", file=sys.stderr)
        if cfg.train.final_eval_episodes:
            reports = self.final_eval(step)
            print(
                format_table(
                    list(reports.values()), title=f"Final evaluation of {run.name} at step {step}"
                )
            )
            print(
                f"reproduce: python scripts/evaluate.py --run {run.path} --episodes "
                f"{cfg.train.final_eval_episodes} --seed {cfg.train.eval_seed} "
                + (f"--env {cfg.train.eval_env} " if cfg.train.eval_env else "")
                + "[--policy random|idle|rule]"
            )
            print(videos_text(reports["trained"].episodes, run.videos))
        self._log_checkpoint(final, step, ("latest", "final"))
        return 0

    def _log_checkpoint(
        self,
        path: Path,
        step: int,
        aliases: tuple[str, ...],
        summary: dict[str, float] | None = None,
    ) -> None:
        """``path`` (and the run's config) as a version of the run's W&B model artifact."""
        cfg = self.config
        metadata: dict[str, Any] = {"step": step, "algo": cfg.algo.name, "model": cfg.model.name}
        metadata.update({f"eval/{k}": v for k, v in (summary or {}).items()})
        self.logger.log_model(
            [path, self.run_dir.config], f"{self.run_dir.name}-model", metadata, aliases
        )

    def _periodic_save(self, step: int) -> None:
        path = self.save(step)
        self.logger.log({"time/checkpoint_step": step}, step)
        self._log_checkpoint(path, step, ("latest",))
        self._say(f"checkpoint: {path}")


def videos_text(episodes: list[EpisodeResult], folder: Path) -> str:
    """Where an evaluation's attention videos are, one line each, or why there is none."""
    filmed = [e for e in episodes if e.video]
    if not filmed:
        return f"videos: none written (logging.video is off, or no episode ran); folder {folder}"
    lines = [f"attention videos (in {folder}):"]
    lines += [f"  {e.video}  ({video_caption(e)})" for e in filmed]
    return "\n".join(lines)
