"""A training run from an admitted config: build, learn with callbacks, checkpoint, evaluate.

:func:`agent.run.admission.prepare` does every check (config, env kwargs, model, checkpoint, run
folder) before any work starts and takes the run's lock; :class:`Trainer` then runs, holding it,
and returns the process exit status.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecNormalize

from drive_attention import envs
from drive_attention.agent.engine import learner
from drive_attention.agent.evaluate.episodes import (
    SUMMARY_KEYS,
    TABLE_COLUMNS,
    EpisodeResult,
    EvalReport,
    format_table,
    table_rows,
    video_caption,
)
from drive_attention.agent.evaluate.rollout import evaluate
from drive_attention.agent.policies.base import IdlePolicy, RandomPolicy, TrainedPolicy
from drive_attention.agent.policies.rule import has_rule, rule_policy
from drive_attention.agent.run.admission import Prepared, eval_env_id
from drive_attention.agent.run.algo_state import algo_state, restore_algo_state
from drive_attention.agent.run.build import make_algo, make_env, make_vec_env, wrap_normalize
from drive_attention.agent.run.callbacks import (
    EpisodeMetrics,
    Periodic,
    ProgressBar,
    StopOnSignal,
    exit_status,
    graceful_stop,
    signal_name,
)
from drive_attention.agent.run.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    save_checkpoint,
)
from drive_attention.agent.run.config import ConfigError
from drive_attention.agent.run.config_files import save_config, to_dict
from drive_attention.agent.run.files import UnsafePathError, remove_orphan_temps, write_text
from drive_attention.agent.run.rundir import STEP_FILE, RunDirError
from drive_attention.agent.run.version import code_version, git_commit
from drive_attention.agent.run.wandb_logger import RunLogger, SB3Writer

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
WRITE_FAILURES = (*DISK_FULL, errno.EROFS)  # reported in one line, not as a traceback


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
        one: :func:`agent.policies.rule.has_rule`), same seeds."""
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
        """Train, holding the run's lock throughout (taken here if
        :func:`agent.run.admission.prepare` did not)."""
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

        run.update_info(
            wandb_id=self.logger.run_id or info.get("wandb_id"),
            device=self.device,
            code=code_version(),
            commit=git_commit(),
            reward_weights=envs.reward_weights(cfg.env.id, **cfg.env.kwargs),
        )
        self.model.set_logger(Logger(folder=None, output_formats=[SB3Writer(self.logger)]))
        # road labels on the eval env: its attention videos get per-class attention figures
        self.eval_env = make_env(eval_env_id(cfg), {**cfg.env.kwargs, "road_labels": True})

        remaining = cfg.train.steps - start_step
        print(
            f"run {run.path}: {cfg.algo.name.upper()} + {cfg.model.name} on {cfg.env.id}, "
            f"{cfg.env.n_envs} env(s), device {self.device}, {cfg.train.engine} engine, "
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
                    learner(self.model, cfg).learn(
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
        if step >= self.config.train.steps:
            # the last rollout: the final checkpoint follows, after this rollout's update, and
            # must not share a name with a file holding the weights from before it (a failed
            # final save would leave that file to pass for the final one)
            return
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
