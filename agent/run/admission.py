"""Admission of a training run: every check (config, env kwargs, model, checkpoint, run folder)
before any work starts, and the run's lock (:func:`prepare`); :class:`agent.training.Trainer`
then runs what was admitted. Nothing is written to the run folder until every check has passed."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from drive_attention import envs
from drive_attention.agent.run.algo_state import check_state_dict
from drive_attention.agent.run.build import (
    ALGORITHMS,
    EnvSpec,
    policy_kwargs,
    probe_env,
    resolve_device,
)
from drive_attention.agent.run.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from drive_attention.agent.run.config import ConfigError, ExperimentConfig, resolve_config
from drive_attention.agent.run.config_files import (
    Overrides,
    apply_overrides,
    config_diff,
    load_config,
    read_yaml,
    to_dict,
)
from drive_attention.agent.run.memory import check_run_memory
from drive_attention.agent.run.rundir import STEP_FILE, RunDir, RunLock, default_run_name


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
    command-line items or data (see :data:`agent.run.config_files.Overrides`). ``resume``:
    continue that run from its latest checkpoint, or from ``checkpoint`` (one of the run's own);
    the config is the one stored in the checkpoint with ``overrides`` on top (``config.yaml``,
    which anyone can edit, is only compared with it). ``base``: the experiment ``config_path``
    held, already read (a study reads its base once, so that editing the file mid-study changes
    none of its runs).
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
    check_run_memory(config, spec.observation_space)
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
        check_run_memory(config, spec.observation_space)
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
    current = envs.reward_weights(config.env.id, **config.env.kwargs)
    recorded = run.read_info().get("reward_weights")
    keep = f"env.kwargs.reward_weights='{_weights_text(current)}'"
    if recorded is None:
        print(
            f"warning: {run.path} does not record the reward weights it was trained with (made "
            f"before runs recorded them); it continues under {_weights_text(current)}. If it was "
            "trained under other weights (before the alive term, every scenario used alive 0, "
            "progress 0.5, collision 1), give them with env.kwargs.reward_weights='{...}'",
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
    eval_id = eval_env_id(config)
    if eval_id == config.env.id:
        return

    def scenario(env_id: str) -> str | None:
        return envs.HIGHWAY_IDS.get(env_id) or envs.BATCHED_IDS.get(env_id)

    if scenario(eval_id) != scenario(config.env.id):
        same = [i for i in envs.HIGHWAY_IDS if scenario(i) == scenario(config.env.id)]
        fix = f"set train.eval_env={same[0]} (the same scenario on highway-env)" if same else ""
        raise ConfigError(
            f"train.eval_env: {eval_id} is not the scenario of env.id {config.env.id}; "
            f"{fix or 'judge a run on another backend of the same scenario'}, or leave "
            "train.eval_env out"
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
