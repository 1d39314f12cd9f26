"""What ``scripts/evaluate.py`` does: evaluate a run's policy (or a reference policy) and report.

Writes the JSON (documented keys plus per-episode rows), optional attention videos in the run's
``videos/``, prints a table, and optionally logs to W&B (a run in the training run's group).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from agent.attention_report import analyse_attention, format_attention
from agent.build import make_env, probe_env
from agent.checkpoint import CheckpointError
from agent.config import ConfigError, load_config
from agent.evaluation import (
    TABLE_COLUMNS,
    EpisodeResult,
    EvalReport,
    IdlePolicy,
    RandomPolicy,
    evaluate,
    format_table,
    table_rows,
)
from agent.loading import load_agent, run_config, with_env
from agent.rundir import RunDir
from agent.wandb_logger import RunLogger


@dataclass
class EvaluationRequest:
    """The options of ``scripts/evaluate.py``."""

    run: Path | None
    checkpoint: Path | None = None
    config: Path | None = None  # for reference policies without a run
    policy: str = "trained"  # trained | random | idle
    env_id: str | None = None
    episodes: int = 20
    seed: int = 1000
    video: bool = False
    video_episodes: int = 1
    json_path: Path | None = None
    wandb: str = "disabled"
    device: str = "auto"
    attention: bool = False  # attribution, occlusion check and modality reliance


def run_evaluation(request: EvaluationRequest) -> tuple[EvalReport, Path]:
    """Evaluate as requested; returns the report and the JSON path it was written to."""
    if request.episodes < 1:
        raise ConfigError(f"--episodes: must be at least 1, got {request.episodes}")
    run = RunDir(request.run) if request.run is not None else None
    if run is None and request.checkpoint is not None:  # runs/<name>/checkpoints/step_*.safetensors
        owner = RunDir(Path(request.checkpoint).resolve().parent.parent)
        run = owner if owner.config.is_file() else None
    step = None
    cell_px = None
    if request.policy == "trained":
        agent = load_agent(
            run.path if run else None, request.checkpoint, request.env_id, request.device
        )
        config, spec, policy, step = agent.config, agent.spec, agent.policy, agent.checkpoint.step
        cell_px = (config.model.patch, config.model.patch)
    else:
        if run is not None:
            config = run_config(run)
        elif request.config is not None:
            config = load_config(request.config)
        else:
            raise ConfigError(
                "--policy random/idle needs --run runs/<name> or --config configs/X.yaml"
            )
        config = with_env(config, request.env_id)
        spec = probe_env(config.env)
        policy = (
            RandomPolicy(spec.action_space)
            if request.policy == "random"
            else IdlePolicy(spec.idle_action)
        )
    if config.train.torch_threads:
        torch.set_num_threads(config.train.torch_threads)

    env_short = config.env.id.split("/")[-1]
    tag = f"evaluate_{request.policy}_{env_short}_seed{request.seed}"
    out_dir = run.path if run is not None else Path(config.logging.root) / "evaluations"
    video_dir = (out_dir / "videos") if request.video else None
    json_path = request.json_path or out_dir / "eval" / f"{tag}.json"

    if request.attention and request.policy != "trained":
        raise ConfigError("--attention needs the trained policy (not --policy random/idle)")
    if request.attention and not getattr(policy, "has_attention", False):
        raise ConfigError(
            f"--attention: the run's model '{config.model.name}' has no attention maps; use a "
            "run trained with model.name = attention, camera_only or sensors_only"
        )
    env_kwargs = dict(config.env.kwargs)
    if request.attention:  # road labels give the videos a per-class attention legend
        env_kwargs["road_labels"] = True
    env = make_env(config.env.id, env_kwargs)
    try:
        report = evaluate(
            env,
            policy,
            request.episodes,
            request.seed,
            env_id=config.env.id,
            video_dir=video_dir,
            video_episodes=request.video_episodes,
            video_prefix=f"{tag}_",
            action_names=spec.action_names,
            fps=config.logging.video_fps,
            scale=config.logging.video_scale,
            cell_px=cell_px,
            progress=_print_episode,
        )
    finally:
        env.close()
    extra: dict = {
        "checkpoint": str(agent.checkpoint.path) if request.policy == "trained" else None,
        "step": step,
    }
    if request.attention:
        extra["attention"] = analyse_attention(
            policy,
            config.env.id,
            dict(config.env.kwargs),
            report,
            request.episodes,
            request.seed,
            cell=cell_px,
            progress=lambda line: print(line, file=sys.stderr),
        )
        print(format_attention(extra["attention"]))
    report.write_json(json_path, extra)
    if request.wandb != "disabled":
        _log_wandb(
            report, request, out_dir, config.logging.project, step or 0, tag, extra.get("attention")
        )
    return report, json_path


def _print_episode(e: EpisodeResult) -> None:
    outcome = "success" if e.success else "collision" if e.collision else "no success"
    print(
        f"  episode {e.episode:3d} (seed {e.seed}): return {e.episode_return:7.2f}, "
        f"length {e.length:3d}, {outcome}",
        file=sys.stderr,
    )


def _log_wandb(
    report: EvalReport,
    request: EvaluationRequest,
    out_dir: Path,
    project: str,
    step: int,
    tag: str,
    attention: dict | None = None,
) -> None:
    logger = RunLogger(
        out_dir,
        mode=request.wandb,
        config={"evaluation": {k: str(v) for k, v in vars(request).items()}},
        project=project,
        group=out_dir.name,
        name=f"{out_dir.name}-{tag}",
        job_type="evaluation",
    )
    summary = {f"eval/{k}": v for k, v in report.summary().items()}
    logger.log(summary, step)
    logger.summary(summary)
    video = next((e.video for e in report.episodes if e.video), None)
    if video:
        logger.log_video("eval/attention_video", video, step)
    logger.log_table("eval/episodes", TABLE_COLUMNS, table_rows(report), step)
    if attention is not None:
        # per-class attention along the evaluation frames (a time series per class)
        for frame, row in enumerate(attention["per_frame"]):
            logger.log({f"attention/class_mass/{k}": v for k, v in row.items()}, step + frame)
        figures = {f"attention/class_lift/{k}": v for k, v in attention["class_lift"].items()}
        figures["attention/occlusion_ratio"] = attention["occlusion_ratio"]
        figures["attention/camera_share"] = attention["camera_share"]
        logger.summary(figures)
        logger.log_bar("attention/class_mass_bar", "class", "mass", attention["class_mass"], step)
        modality = [
            [
                mode,
                row["mean_return"],
                row["success_rate"],
                row["collision_rate"],
                row["camera_share"],
            ]
            for mode, row in attention["modality"].items()
        ]
        logger.log_table(
            "attention/modality",
            ("condition", "mean_return", "success_rate", "collision_rate", "camera_share"),
            modality,
            step,
        )
    logger.finish()


def main_table(report: EvalReport, json_path: Path) -> str:
    """The printed result: the table and where the JSON went."""
    last = report.seed + len(report.episodes) - 1
    title = f"Evaluation of the {report.policy} policy, seeds {report.seed}..{last}"
    return f"{format_table([report], title=title)}\nJSON: {json_path}"


__all__ = ["CheckpointError", "ConfigError", "EvaluationRequest", "main_table", "run_evaluation"]
