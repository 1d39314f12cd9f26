"""A training run from a validated config: build, learn with callbacks, checkpoint, evaluate.

:func:`prepare` does every check (config, env kwargs, model, checkpoint) before any work starts;
:class:`Trainer` then runs and returns the process exit status.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
from agent.callbacks import EpisodeMetrics, Periodic, ProgressBar, StopOnSignal, graceful_stop
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
    EvalReport,
    IdlePolicy,
    RandomPolicy,
    TrainedPolicy,
    evaluate,
    format_table,
    table_rows,
)
from agent.rundir import RunDir, default_run_name
from agent.wandb_logger import RunLogger, SB3Writer

EXIT_INTERRUPTED = 130


@dataclass
class Prepared:
    """A validated run, ready to train."""

    config: ExperimentConfig
    run: RunDir
    spec: EnvSpec
    device: str
    checkpoint: Checkpoint | None = None


def prepare(
    config_path: str | Path | None,
    overrides: Overrides = (),
    resume: str | Path | None = None,
) -> Prepared:
    """Validate everything a run needs, before any work: config, env kwargs, model, checkpoint.

    ``overrides`` are command-line items or data (see :data:`agent.config.Overrides`)."""
    checkpoint = None
    if resume is not None:
        run = RunDir(Path(resume))
        raw = read_yaml(
            run.config, missing=f"--resume {resume}: no config.yaml there; is it a run directory?"
        )
        found = run.latest_checkpoint()
        if found is None:
            raise CheckpointError(f"--resume {resume}: no checkpoint in {run.checkpoints}")
        checkpoint = load_checkpoint(found)
        raw = apply_overrides(apply_overrides(raw, overrides), {"logging.name": run.name})
        config = resolve_config(raw)
        changed = config_diff(checkpoint.config, to_dict(config))
        if changed:
            print("resuming with changed options:\n  " + "\n  ".join(changed), file=sys.stderr)
    else:
        if config_path is None:
            raise ConfigError("give --config configs/<experiment>.yaml (or --resume runs/<name>)")
        config = load_config(config_path, overrides)
        if config.logging.name is None:
            config.logging.name = default_run_name(config_path)
        run = RunDir(Path(config.logging.root) / config.logging.name)
        if run.latest_checkpoint() is not None:
            raise ConfigError(
                f"logging.name: {run.path} already holds a run; continue it with "
                f"--resume {run.path}, or pick another --name"
            )
    device = resolve_device(config.train.device)
    spec = probe_env(config.env)  # validates env.id and env.kwargs
    check_model(config, spec)
    if checkpoint is not None:
        _check_checkpoint_fits(config, spec, checkpoint)
    return Prepared(config, run, spec, device, checkpoint)


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


def _check_checkpoint_fits(config: ExperimentConfig, spec: EnvSpec, checkpoint: Checkpoint) -> None:
    """Build the bare policy and compare its parameters with the checkpoint's."""
    algo_class = ALGORITHMS[config.algo.name]
    if checkpoint.state.get("algo") != algo_class.__name__:
        raise CheckpointError(
            f"{checkpoint.path} was written by {checkpoint.state.get('algo')}, the config asks for "
            f"{algo_class.__name__}; keep algo.name as it was"
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
        self.model: Any = None
        self.vec_normalize: VecNormalize | None = None
        self.logger: RunLogger | None = None
        self.progress: ProgressBar | None = None
        self.eval_env: Any = None

    # ------------------------------------------------------------------ pieces
    def save(self, step: int | None = None) -> Path:
        """Write a checkpoint of the current state (atomic)."""
        step = self.model.num_timesteps if step is None else step
        path = checkpoint_path(self.run_dir.checkpoints, step)
        state = algo_state(self.model, self.vec_normalize)
        save_checkpoint(path, Checkpoint(step=step, config=to_dict(self.config), state=state))
        return path

    def _trained_policy(self) -> TrainedPolicy:
        normalize = None
        if self.vec_normalize is not None and self.vec_normalize.norm_obs:
            normalize = self.vec_normalize.normalize_obs
        return TrainedPolicy(self.model, normalize)

    def _cell_px(self) -> tuple[int, int]:
        patch = int(getattr(self.config.model, "patch", 8))
        return (patch, patch)

    def _evaluate(self, policy: Any, episodes: int, prefix: str, video: bool) -> EvalReport:
        cfg = self.config
        return evaluate(
            self.eval_env,
            policy,
            episodes,
            cfg.train.eval_seed,
            env_id=cfg.env.id,
            video_dir=self.run_dir.videos if video else None,
            video_episodes=1,
            video_prefix=prefix,
            action_names=self.spec.action_names,
            fps=cfg.logging.video_fps,
            scale=cfg.logging.video_scale,
            cell_px=self._cell_px(),
        )

    def periodic_eval(self, step: int) -> None:
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
        self._say(
            f"eval @ {step}: return {s['mean_return']:.2f} ± {s['std_return']:.2f}, success "
            f"{s['success_rate']:.0%}, collision {s['collision_rate']:.0%}"
        )

    def _log_report(self, prefix: str, report: EvalReport, step: int) -> None:
        metrics: dict[str, Any] = {f"{prefix}/{k}": v for k, v in report.summary().items()}
        terms: dict[str, list[float]] = {}
        for episode in report.episodes:
            for name, value in episode.reward_terms.items():
                terms.setdefault(name, []).append(value)
        metrics.update({f"{prefix}/reward/{k}": float(np.mean(v)) for k, v in terms.items()})
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
        video = next((e.video for e in report.episodes if e.video), None)
        if video:
            self.logger.log_video(f"{prefix}/attention_video", video, step, caption=f"step {step}")
        self.logger.log_table(f"{prefix}/episodes", TABLE_COLUMNS, table_rows(report), step)

    def final_eval(self, step: int) -> dict[str, EvalReport]:
        """The trained policy against the random and idle references, same seeds."""
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
        for name, report in reports.items():
            report.write_json(self.run_dir.eval / f"final_{name}.json", {"step": step})
        comparison = {name: report.summary() for name, report in reports.items()}
        (self.run_dir.eval / "final.json").write_text(
            json.dumps(
                {"step": step, "episodes": episodes, "seed": cfg.train.eval_seed, **comparison},
                indent=2,
            )
            + "\n"
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
        cfg = self.config
        run = self.run_dir.create()
        save_config(cfg, run.config)
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
            return self._learn(start_step)
        finally:
            venv.close()
            if self.eval_env is not None:
                self.eval_env.close()
            if self.logger is not None:
                self.logger.finish()

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
        )
        run.update_info(wandb_id=self.logger.run_id or info.get("wandb_id"), device=self.device)
        self.model.set_logger(Logger(folder=None, output_formats=[SB3Writer(self.logger)]))
        # road labels on the eval env: its attention videos get per-class attention figures
        self.eval_env = make_env(cfg.env.id, {**cfg.env.kwargs, "road_labels": True})

        remaining = cfg.train.steps - start_step
        print(
            f"run {run.path}: {cfg.algo.name.upper()} + {cfg.model.name} on {cfg.env.id}, "
            f"{cfg.env.n_envs} env(s), device {self.device}, "
            f"steps {start_step} -> {cfg.train.steps}",
            file=sys.stderr,
        )
        interrupted = False
        if remaining > 0:
            with graceful_stop() as flag:
                self.progress = ProgressBar(cfg.train.steps)
                callbacks = [StopOnSignal(flag), self.progress, EpisodeMetrics()]
                if cfg.train.checkpoint_every:
                    callbacks.append(Periodic(cfg.train.checkpoint_every, self._periodic_save))
                if cfg.train.eval_every:
                    callbacks.append(Periodic(cfg.train.eval_every, self.periodic_eval))
                self.model.learn(
                    total_timesteps=remaining,
                    callback=callbacks,
                    reset_num_timesteps=start_step == 0,
                    log_interval=1,
                )
                interrupted = flag.is_set
            self.progress = None
        else:
            print(f"already at step {start_step} >= train.steps; nothing to train", file=sys.stderr)

        step = int(self.model.num_timesteps)
        final = self.save(step)
        if interrupted:
            print(
                f"interrupted at step {step}; checkpoint saved to {final}\ncontinue with: "
                f"python scripts/train.py --resume {run.path}",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
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
                "[--policy random|idle]"
            )
        self.logger.log_model(
            [final, run.config],
            f"{run.name}-model",
            {"step": step, "algo": cfg.algo.name, "model": cfg.model.name},
        )
        return 0

    def _periodic_save(self, step: int) -> None:
        path = self.save(step)
        self.logger.log({"time/checkpoint_step": step}, step)
        self._say(f"checkpoint: {path}")
