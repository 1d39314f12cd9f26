"""The batched teacher held to the highway-env lookahead it reproduces (``--policy teacher``
beside ``--policy lookahead``), from the same starts.

Per scenario that both backends have and episode seed ``s``: highway-env's episode of seed ``s``
is driven by the lookahead (:class:`agent.policies.lookahead.LookaheadPolicy`); at each of its
decisions the highway-env state is copied into the batched simulator
(:func:`envs.batched.scenarios.import_state`, with the episode's elapsed steps) and the teacher
decides from it too: a *shared state*, where the two first actions are compared. Then the
teacher drives its own episode on the batched simulator from the imported start. Arrivals of new
traffic are random draws on each side (the intersection), so the two episodes part once one
arrives; the comparison is of outcome rates, not of episodes.

Each episode's row is written to ``OUT/<scenario>/seed<s>.json`` as soon as it is done, and a
seed whose file exists is not run again: a long validation resumes where it stopped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from drive_attention.agent.policies.lookahead import LookaheadPolicy
from drive_attention.agent.policies.teacher import Teacher, TeacherConfig
from drive_attention.envs.batched.core import BatchedDrive
from drive_attention.envs.batched.scenarios import import_state
from drive_attention.envs.validation import REFERENCE_IDS

SCENARIOS = tuple(REFERENCE_IDS)  # the batched scenarios highway-env has too
AGREEMENT = 0.9  # the share of shared states with the same first action asked for
STDERRS = 3.0  # success rates must agree within this many standard errors


def _import(core: BatchedDrive, ref: Any, steps: int, seed: int) -> bool:
    """Start ``core`` (B=1) from ``ref``'s current state, ``steps`` decisions into its episode;
    False when highway-env holds more vehicles than the batched scenario has slots."""
    base = ref.unwrapped
    try:
        traffic = import_state(base.sim, core.road, core.traffic_spec.n_slots(), base.destination)
    except AssertionError:
        return False
    traffic.rng[:] = seed  # the episode's own stream of arrivals
    core.restart_from(traffic)
    core.stats.steps[:] = steps  # the time left is the episode's
    return True


def _outcome(info: dict[str, Any], length: int) -> dict[str, Any]:
    return {
        "success": bool(info.get("success", False)),
        "collision": bool(info.get("collision", False)),
        "mean_speed": float(info.get("mean_speed", 0.0)),
        "length": length,
    }


def run_episode(scenario: str, seed: int, config: TeacherConfig) -> dict[str, Any]:
    """One seed of ``scenario``: the lookahead's episode with the teacher's choice at each of its
    states, then the teacher's own episode from the same start (see the module)."""
    ref = gym.make(REFERENCE_IDS[scenario])
    core = BatchedDrive(scenario=scenario)
    teacher = Teacher(core, config)
    lookahead = LookaheadPolicy(ref, horizon=config.horizon)
    try:
        obs, _ = ref.reset(seed=seed)
        assert _import(core, ref, 0, seed), "the start fits the batched slots"
        start = core.traffic.clone()
        pairs: list[list[int]] = []  # (lookahead, teacher) first action at each shared state
        length, info = 0, {}
        while True:
            action = int(lookahead.act(obs))
            if _import(core, ref, length, seed):
                pairs.append([action, int(teacher.decide().action[0])])
            obs, _, terminated, truncated, info = ref.step(action)
            length += 1
            if terminated or truncated:
                break
        looked = _outcome(info, length)
        core.restart_from(start)
        length = 0
        while True:
            out = core.step(teacher.decide().action)
            length += 1
            if bool(out.terminated[0] | out.truncated[0]):
                break
        episode = {k: v[0].item() for k, v in out.episode.items()}
        taught = _outcome(episode, length)
    finally:
        ref.close()
    same = sum(a == b for a, b in pairs)
    return {
        "scenario": scenario,
        "seed": seed,
        "lookahead": looked,
        "teacher": taught,
        "shared_states": len(pairs),
        "same_first_action": same,
        "actions": pairs,
    }


def validate(
    out: Path,
    scenarios: tuple[str, ...],
    episodes: int,
    seed: int,
    config: TeacherConfig,
    progress: Any = None,
) -> dict[str, Any]:
    """Run (or resume) ``episodes`` seeds from ``seed`` per scenario into ``out``; the summary
    of every row there (:func:`summarise`)."""
    for scenario in scenarios:
        folder = out / scenario
        folder.mkdir(parents=True, exist_ok=True)
        for s in range(seed, seed + episodes):
            path = folder / f"seed{s}.json"
            if path.exists():
                continue
            row = run_episode(scenario, s, config)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(row) + "\n")
            tmp.replace(path)  # a row is there whole or not at all
            if progress is not None:
                progress(row)
    return summarise(out, scenarios, seed, episodes)


def _rate(values: list[bool]) -> tuple[float, float]:
    """Mean and its standard error."""
    a = np.asarray(values, dtype=float)
    if len(a) < 2:
        return float(a.mean()) if len(a) else math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a)))


def summarise(out: Path, scenarios: tuple[str, ...], seed: int, episodes: int) -> dict[str, Any]:
    """Per scenario, over the rows written for seeds ``seed .. seed + episodes - 1``: success
    and collision rates of both planners, whether the success rates agree within
    :data:`STDERRS` standard errors (of their difference), and the share of shared states
    where both chose the same first action (asked: at least :data:`AGREEMENT`)."""
    summary: dict[str, Any] = {}
    for scenario in scenarios:
        rows = []
        for s in range(seed, seed + episodes):
            path = out / scenario / f"seed{s}.json"
            if path.exists():
                rows.append(json.loads(path.read_text()))
        if not rows:
            continue
        entry: dict[str, Any] = {"episodes": len(rows)}
        for who in ("lookahead", "teacher"):
            entry[f"{who}_success"], entry[f"{who}_success_se"] = _rate(
                [r[who]["success"] for r in rows]
            )
            entry[f"{who}_collision"] = _rate([r[who]["collision"] for r in rows])[0]
            entry[f"{who}_mean_speed"] = float(np.mean([r[who]["mean_speed"] for r in rows]))
        diff = entry["teacher_success"] - entry["lookahead_success"]
        se = math.hypot(entry["teacher_success_se"], entry["lookahead_success_se"])
        entry["success_difference"] = diff
        # with no spread on either side (e.g. both 100%), only equal rates agree
        entry["success_agrees"] = bool(abs(diff) <= STDERRS * se) if se > 0 else diff == 0
        shared = sum(r["shared_states"] for r in rows)
        same = sum(r["same_first_action"] for r in rows)
        entry["shared_states"] = shared
        entry["same_first_action"] = same / shared if shared else math.nan
        entry["actions_agree"] = bool(shared and same / shared >= AGREEMENT)
        summary[scenario] = entry
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a table."""
    head = (
        f"{'scenario':<13}{'episodes':>9}{'lookahead':>11}{'teacher':>9}{'within 3 SE':>13}"
        f"{'same 1st action':>17}"
    )
    lines = [head, "-" * len(head)]
    for scenario, e in summary.items():
        same = f"{e['same_first_action']:.0%} of {e['shared_states']}"
        lines.append(
            f"{scenario:<13}{e['episodes']:>9}{e['lookahead_success']:>11.0%}"
            f"{e['teacher_success']:>9.0%}{'yes' if e['success_agrees'] else 'no':>13}{same:>17}"
        )
    return "\n".join(lines)
