"""What ``scripts/evaluate.py`` does: evaluate a run's policy (or a reference policy) and report.

Writes the JSON (documented keys plus per-episode rows), optional attention videos in the run's
``videos/``, prints a table, and optionally logs to W&B (a run in the training run's group).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from drive_attention.agent.evaluate.attention_report import analyse_attention, format_attention
from drive_attention.agent.evaluate.episodes import (
    TABLE_COLUMNS,
    EpisodeResult,
    EvalReport,
    format_table,
    table_rows,
    video_caption,
)
from drive_attention.agent.evaluate.recording import video_name_pattern
from drive_attention.agent.evaluate.rollout import evaluate
from drive_attention.agent.policies.base import IdlePolicy, Policy, RandomPolicy
from drive_attention.agent.policies.lookahead import LookaheadPolicy, check_can_look_ahead
from drive_attention.agent.policies.rule import check_has_rule, rule_policy
from drive_attention.agent.policies.teacher import TeacherPolicy, check_can_teach
from drive_attention.agent.run.build import EnvSpec, make_env, probe_env
from drive_attention.agent.run.checkpoint import Checkpoint, CheckpointError
from drive_attention.agent.run.config import (
    ConfigError,
    ExperimentConfig,
    check_env_id,
    resolve_config,
)
from drive_attention.agent.run.config_files import load_config, to_dict
from drive_attention.agent.run.files import UnsafePathError, check_writable, creation_problem
from drive_attention.agent.run.limits import check_episodes
from drive_attention.agent.run.loading import load_agent, run_config, with_env
from drive_attention.agent.run.rundir import RunDir
from drive_attention.agent.run.wandb_logger import RunLogger
from drive_attention.envs import camera_geometry


@dataclass
class EvaluationRequest:
    """The options of ``scripts/evaluate.py``."""

    run: Path | None
    checkpoint: Path | None = None
    config: Path | None = None  # for reference policies without a run
    policy: str = "trained"  # trained | random | idle | rule | lookahead | teacher
    env_id: str | None = None
    episodes: int = 20
    seed: int = 1000
    video: bool = False
    video_episodes: int = 1
    json_path: Path | None = None
    wandb: str = "disabled"
    device: str = "auto"
    attention: bool = False  # attribution, occlusion check and modality reliance
    relevance_frames: int = 256  # with attention: frames whose relevance is computed
    allow_pickle: bool = False  # accept an SB3 .zip checkpoint (unpickling can run its code)


PLANNERS = ("lookahead", "teacher")  # policies made with the env they plan in
SEED_MAX = 2**31 - 1  # seeds stay 32-bit signed for every simulator's random generator


def run_evaluation(request: EvaluationRequest) -> tuple[EvalReport, Path]:
    """Evaluate as requested; returns the report and the JSON path it was written to.

    Output goes only where the command line says: the run folder of ``--run`` (or of the run
    that holds ``--checkpoint``), or beside ``--json``; never where a checkpoint's or run's own
    config (``logging.root``) points. Options and output paths are checked before any episode.
    """
    _check_options(request)
    run = RunDir(request.run) if request.run is not None else None
    if run is None and request.checkpoint is not None:
        run = _owner_run(Path(request.checkpoint))
    if request.policy == "trained" and run is None:
        if request.checkpoint is None:
            raise ConfigError("give --run runs/<name> (or --checkpoint PATH with --json OUT)")
        if request.json_path is None:
            raise ConfigError(
                f"--checkpoint {request.checkpoint} is not inside a run folder "
                "(runs/<name>/checkpoints/), so there is no run to write the results into: give "
                "--run runs/<name> (results go to its eval/ folder) or --json OUT"
            )
    step = None
    cell_px = None
    label = None
    if request.policy == "trained":
        agent = load_agent(
            run.path if run else None,
            request.checkpoint,
            request.env_id,
            request.device,
            allow_pickle=request.allow_pickle,
        )
        config, spec, policy, step = agent.config, agent.spec, agent.policy, agent.checkpoint.step
        camera = camera_geometry(config.env.id, **config.env.kwargs)
        cell_px = camera.patch_cell(config.model.patch)
        label = _checkpoint_label(run, agent.checkpoint)
    else:
        if run is not None:
            config = run_config(run)
        elif request.config is not None:
            config = load_config(request.config)
            check_env_id(config.env.id, key=f"{request.config}: env.id")
        elif request.env_id is not None:  # the env's default options
            check_env_id(request.env_id, key="--env")
            config = resolve_config({"env": {"id": request.env_id}})
        else:
            raise ConfigError(
                f"--policy {request.policy} needs --run runs/<name>, --config configs/X.yaml "
                "or --env ID"
            )
        config = with_env(config, request.env_id)
        if request.policy == "rule":
            check_has_rule(config.env.id)  # before the env is made (CARLA needs a server)
        if request.policy == "lookahead":
            check_can_look_ahead(config.env.id)
        if request.policy == "teacher":
            check_can_teach(config.env.id)
        spec = probe_env(config.env)
        if request.policy not in PLANNERS:  # made below, with the env they plan in
            policy = _reference_policy(request.policy, config, spec)
    if config.train.torch_threads:
        torch.set_num_threads(config.train.torch_threads)

    env_short = config.env.id.split("/")[-1]
    tag = f"evaluate_{request.policy}_{env_short}_seed{request.seed}"
    if label is not None:  # not the run's own latest checkpoint: keep its results apart
        tag = f"{tag}_{label}"
    if run is not None:
        out_dir = run.path
    elif request.json_path is not None:
        out_dir = request.json_path.parent
    else:  # a reference policy of the user's own --config: its logging.root
        out_dir = Path(config.logging.root) / "evaluations"
    video_dir = (out_dir / "videos") if request.video else None
    json_path = request.json_path or out_dir / "eval" / f"{tag}.json"
    _check_output(json_path, "--json" if request.json_path else "the evaluation JSON")
    if video_dir is not None:
        # any episode may be filmed (the first successful and the first failed ones): the files
        # already there under the videos' names, not one path per episode (the writer checks
        # each video again when it starts it)
        videos = _existing_videos(video_dir, f"{tag}_")
        _check_writable([video_dir, *videos], "--video")
    if request.wandb != "disabled":
        _check_writable([out_dir / "metrics.jsonl"], "--wandb")
    if label is not None and run is not None and request.json_path is None:
        print(
            f"note: {agent.checkpoint.path} is not {run.path}'s latest checkpoint; its results "
            f"go to {json_path}",
            file=sys.stderr,
        )

    if request.attention and request.policy != "trained":
        raise ConfigError(f"--attention needs the trained policy (not --policy {request.policy})")
    if request.attention and not getattr(policy, "has_attention", False):
        raise ConfigError(
            f"--attention: {agent.source} has no attention maps; use a "
            "run trained with model.name = attention, camera_only or sensors_only"
        )
    env_kwargs = dict(config.env.kwargs)
    if request.attention:  # road labels give the videos a per-class attention legend
        env_kwargs["road_labels"] = True
    env = make_env(config.env.id, env_kwargs)
    try:
        if request.policy == "lookahead":  # it plans in copies of this env
            policy = LookaheadPolicy(env)
        if request.policy == "teacher":  # in copies of this env's batched state
            policy = TeacherPolicy(env)
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
            relevance=request.attention,  # the videos outline what the teacher's choice needs
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
            relevance_frames=request.relevance_frames,
        )
        print(format_attention(extra["attention"]))
    try:
        report.write_json(json_path, extra)
    except OSError as err:  # checked before, so: the disk filled up, or a link appeared since
        figures = ", ".join(f"{k} {v:.4g}" for k, v in report.summary().items())
        raise ConfigError(
            f"could not write {json_path} ({err}); the results were: {figures}; free some space "
            "or choose another path with --json and evaluate again"
        ) from None
    if request.wandb != "disabled":
        _log_wandb(report, request, out_dir, config, step or 0, tag, extra.get("attention"))
    return report, json_path


def _reference_policy(name: str, config: ExperimentConfig, spec: EnvSpec) -> Policy:
    """The reference policy ``name`` (random, idle or rule) for ``config``'s env."""
    if name == "random":
        return RandomPolicy(spec.action_space)
    if name == "idle":
        return IdlePolicy(spec.idle_action)
    return rule_policy(config.env.id, config.env.kwargs, spec.sensor_names, spec.action_space)


def _check_options(request: EvaluationRequest) -> None:
    """Refuse options that would fail (or be lost) only after the evaluation."""
    if request.episodes < 1:
        raise ConfigError(f"--episodes: must be at least 1, got {request.episodes}")
    check_episodes("--episodes", request.episodes)
    if not 0 <= request.seed <= SEED_MAX - request.episodes + 1:
        raise ConfigError(
            f"--seed: must be in [0, {SEED_MAX - request.episodes + 1}] (episode k uses seed "
            f"SEED + k, and seeds are non-negative 32-bit numbers), got {request.seed}"
        )
    if request.relevance_frames < 0:
        raise ConfigError(
            f"--relevance-frames: must be 0 (none) or more, got {request.relevance_frames}"
        )
    check_episodes("--relevance-frames", request.relevance_frames)
    if request.video_episodes < 0:
        raise ConfigError(
            f"--video-episodes: must be 0 or more (episodes rendered with --video), got "
            f"{request.video_episodes}"
        )
    if request.json_path is not None:
        _check_output(request.json_path, "--json")


def _existing_videos(video_dir: Path, prefix: str) -> list[Path]:
    """The entries of ``video_dir`` named as this evaluation's videos (``<prefix>ep<k>.mp4``),
    links included: as many as the folder holds, however many episodes are asked for."""
    if not video_dir.is_dir() or video_dir.is_symlink():
        return []
    name = video_name_pattern(prefix)
    return sorted(p for p in video_dir.iterdir() if name.fullmatch(p.name))


def _check_output(path: Path, what: str) -> None:
    """Refuse an output file that cannot be written, or must not be: a folder, a symbolic link,
    an existing file that is not JSON, a path under a file or an unwritable folder."""
    hint = "choose another path with --json OUT"
    if path.is_dir():
        raise ConfigError(
            f"{what} {path} is a folder; give a file name, e.g. --json {path / 'eval.json'}"
        )
    _check_writable([path], what)
    if path.exists() and path.suffix.lower() != ".json":
        raise ConfigError(
            f"{what} {path} exists and is not a .json file; refusing to overwrite it ({hint})"
        )
    problem = creation_problem(path)
    if problem is not None:
        raise ConfigError(f"{what} {path}: {problem}; {hint}")


def _check_writable(paths: list[Path], what: str) -> None:
    """Each path can be written without following a symbolic link (see agent.run.files)."""
    for path in paths:
        try:
            check_writable(path)
        except UnsafePathError as err:
            raise ConfigError(f"{what}: {err}") from None


def _owner_run(checkpoint: Path) -> RunDir | None:
    """The run folder holding ``checkpoint`` (``<run>/checkpoints/step_*.safetensors`` or
    ``<run>`` itself), if it is one (has a config.yaml)."""
    path = checkpoint.resolve()
    if (path / "config.yaml").is_file():  # --checkpoint runs/<name>
        return RunDir(path)
    if path.parent.name == "checkpoints" and (path.parent.parent / "config.yaml").is_file():
        return RunDir(path.parent.parent)
    return None


def _checkpoint_label(run: RunDir | None, checkpoint: Checkpoint) -> str | None:
    """None for the run's latest checkpoint (the default); else what tells this checkpoint's
    results apart in file names: ``step<N>`` for an older one of the run, ``<run>-step<N>`` for
    another run's (named by its folder, never by the config inside it)."""
    path = Path(checkpoint.path).resolve()
    if run is not None:
        latest = run.latest_checkpoint()
        if latest is not None and latest.resolve() == path:
            return None
        if path.parent == run.checkpoints.resolve():
            return f"step{checkpoint.step}"
    source = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{source}-step{checkpoint.step}").strip(".-")
    return label[:100] or f"step{checkpoint.step}"


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
    config: ExperimentConfig,
    step: int,
    tag: str,
    attention: dict | None = None,
) -> None:
    """A W&B run of job type ``evaluation`` in the training run's group, with its config."""
    logger = RunLogger(
        out_dir,
        mode=request.wandb,
        config={
            **to_dict(config),
            "evaluation": {k: str(v) for k, v in vars(request).items()},
        },
        project=config.logging.project,
        entity=config.logging.entity,
        group=config.logging.group or out_dir.name,
        tags=config.logging.tags,
        name=f"{out_dir.name}-{tag}",
        job_type="evaluation",
        system_metrics=config.logging.system_metrics,
    )
    summary = {f"eval/{k}": v for k, v in report.summary().items()}
    logger.log(summary, step)
    logger.summary(summary)
    for episode in report.episodes:  # a successful and a failed one, where both exist
        if episode.video:
            kind = "success" if episode.success else "failure"
            caption = video_caption(episode)
            logger.log_video(f"eval/attention_video_{kind}", episode.video, step, caption)
    logger.log_table("eval/episodes", TABLE_COLUMNS, table_rows(report), step)
    if attention is not None:
        # per-class attention along the evaluation frames, on their own "frame" axis
        logger.log_frames(
            [
                {f"attention/frame/class_mass/{k}": v for k, v in row.items()}
                for row in attention["per_frame"]
            ]
        )
        figures = {f"attention/class_lift/{k}": v for k, v in attention["class_lift"].items()}
        figures["attention/occlusion_ratio"] = attention["occlusion_ratio"]
        figures["attention/camera_share"] = attention["camera_share"]
        for part in ("tokens", "patches"):  # attention-relevance agreement, where measured
            row = (attention.get("relevance") or {}).get(part) or {}
            if row.get("frames"):
                for key in ("hit", "chance", "ratio"):
                    figures[f"attention/relevance/{part}_{key}"] = row[key]
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
    text = f"{format_table([report], title=title)}\nJSON: {json_path}"
    filmed = [e for e in report.episodes if e.video]
    if filmed:
        text += "\nattention videos:\n" + "\n".join(
            f"  {e.video}  ({video_caption(e)})" for e in filmed
        )
    return text


__all__ = ["CheckpointError", "ConfigError", "EvaluationRequest", "main_table", "run_evaluation"]
