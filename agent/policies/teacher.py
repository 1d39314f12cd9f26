"""A fast privileged teacher on the batched simulator (``--policy teacher``).

The lookahead's planner (:mod:`agent.policies.lookahead`) for every environment of a batch at
once: at each decision, each first meta-action followed by each fixed plan (:data:`PLANS`; a
plan's last action repeats) is tried to the end of the episode or :attr:`TeacherConfig.horizon`
seconds, and the first action of the best outcome is taken: arriving (scenarios with a goal)
before surviving before failing (a crash, ending off the road, and on the signalised
intersection a red-light run or a pedestrian hit); among arrivals the earliest, among survivals
the longest distance, among failures the latest. Ties go to the first action of
:attr:`Teacher.first_actions` (idle first) and the first plan listed, as the lookahead's do.

The B environments' states are copied into one batch of B x candidates
(:class:`envs.batched.planning.PlanningBatch`: traffic, lights, pedestrians, routes, the clock
and each episode's own random stream, so the copies foresee the arrivals) and stepped together.
Plans that share their first actions share one copy until they part; an environment stops
planning once one of its candidates arrives (none can arrive earlier) or all have ended.

It is a teacher, not a deployable agent: it reads the simulator's exact state and future
(positions, intentions, light phases, arrivals), which no sensor gives. Batched ids and
discrete meta-actions only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs
from agent.policies.base import AttentionView
from agent.policies.lookahead import FASTER, IDLE, LEFT, PLANS, RIGHT, SLOWER
from envs.batched.core import BatchedDrive
from envs.configuration import ConfigError, closest
from envs.contract import DISCRETE_ACTIONS


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher's settings: how far it looks [s] and the plans it tries after each first
    meta-action (action indices in :data:`envs.contract.DISCRETE_ACTIONS` order)."""

    horizon: float = 15.0  # [s]
    plans: tuple[tuple[int, ...], ...] = PLANS

    def __post_init__(self) -> None:
        if not self.horizon > 0:
            raise ConfigError(f"teacher horizon: must be positive [s], got {self.horizon}")
        if not self.plans or any(not plan for plan in self.plans):
            raise ConfigError("teacher plans: give at least one plan of at least one action")
        n = len(DISCRETE_ACTIONS)
        if any(not 0 <= a < n for plan in self.plans for a in plan):
            raise ConfigError(f"teacher plans: actions are 0..{n - 1} ({DISCRETE_ACTIONS})")


def parse_plans(text: str) -> tuple[tuple[int, ...], ...]:
    """Plans written as ``"faster;idle;slower,faster"`` (plans by ``;``, actions by ``,``,
    action names of :data:`envs.contract.DISCRETE_ACTIONS`)."""
    plans = []
    for part in text.split(";"):
        names = [name.strip() for name in part.split(",") if name.strip()]
        for name in names:
            if name not in DISCRETE_ACTIONS:
                raise ConfigError(
                    f"--plans: {name!r} is not a meta-action{closest(name, DISCRETE_ACTIONS)}; "
                    f"use {', '.join(DISCRETE_ACTIONS)}"
                )
        plans.append(tuple(DISCRETE_ACTIONS.index(name) for name in names))
    return TeacherConfig(plans=tuple(plans)).plans


def check_can_teach(env_id: str) -> None:
    """:class:`ConfigError` unless ``env_id`` is a batched id (asked before the env is made)."""
    if env_id not in envs.BATCHED_IDS:
        raise ConfigError(
            f"--policy teacher: {env_id} is not a batched id; the teacher plans in copies of the "
            f"batched simulator ({', '.join(envs.BATCHED_IDS)}); on highway-env ids use "
            "--policy lookahead"
        )


@dataclass
class _Stage:
    """Step ``k`` of the candidates' tree: the groups of candidates with the same actions so far
    (one copy each), their parent group at step ``k - 1``, and their action at step ``k``."""

    parent: torch.Tensor  # (G,) long
    action: torch.Tensor  # (G,) long
    members: torch.Tensor  # (G, C) bool, the candidates of each group
    split: bool  # whether any group has more than one child at this step


@dataclass
class Decision:
    """One decision of every environment: ``action`` (B,) long; each candidate's outcome
    ``rank`` (B, C) long (2 arrived, 1 survived, 0 failed, -1 not needed) and ``value`` (B, C)
    its tie-break; ``rows_stepped``: copies times policy steps simulated (the cost)."""

    action: torch.Tensor
    rank: torch.Tensor
    value: torch.Tensor
    rows_stepped: int


class Teacher:
    """The planner for every environment of a :class:`BatchedDrive` (see the module)."""

    def __init__(self, core: BatchedDrive, config: TeacherConfig | None = None) -> None:
        if not core.discrete:
            raise ConfigError(
                "--policy teacher plans over the discrete meta-actions; the env has "
                "action='continuous' (evaluate with action: discrete)"
            )
        self.core = core
        self.config = config or TeacherConfig()
        # on the route scenarios the lane controller follows the route: lane changes would be
        # the same as idle, so they are not tried (as the lookahead)
        routes = bool(core.scenario.destinations)
        lanes = () if routes else (LEFT, RIGHT)
        self.first_actions = (IDLE, FASTER, SLOWER, *lanes)
        self.steps = max(1, round(self.config.horizon * core.config.policy_frequency))
        self.stages = self._tree()

    @property
    def candidates(self) -> int:
        return len(self.first_actions) * len(self.config.plans)

    def _tree(self) -> list[_Stage]:
        """The candidates' actions step by step, grouped by their actions so far."""
        plans = self.config.plans
        seqs = [
            tuple(first if k == 0 else plan[min(k - 1, len(plan) - 1)] for k in range(self.steps))
            for first in self.first_actions
            for plan in plans
        ]  # candidate c = first index * len(plans) + plan index
        dev = self.core.device
        stages, previous = [], None
        for k in range(self.steps):
            groups: dict[tuple[int, ...], int] = {}
            of = [groups.setdefault(seq[: k + 1], len(groups)) for seq in seqs]  # (C,) group ids
            parent = [0] * len(groups)
            action = [0] * len(groups)
            members = torch.zeros(len(groups), len(seqs), dtype=torch.bool)
            for c, g in enumerate(of):
                parent[g] = previous[c] if previous is not None else g
                action[g] = seqs[c][k]
                members[g, c] = True
            split = previous is not None and len(groups) != len(set(previous))
            stages.append(
                _Stage(
                    torch.tensor(parent, device=dev),
                    torch.tensor(action, device=dev),
                    members.to(dev),
                    split,
                )
            )
            previous = of
        return stages

    @torch.no_grad()
    def decide(self) -> Decision:
        """Plan every environment of the core from its current state (the core is untouched)."""
        core, stages = self.core, self.stages
        b, c, dev = core.num_envs, self.candidates, core.device
        rank = torch.full((b, c), -1, dtype=torch.long, device=dev)
        value = torch.zeros(b, c, dtype=torch.float64, device=dev)
        open_ = torch.ones(b, c, dtype=torch.bool, device=dev)  # not ended yet
        g0 = len(stages[0].action)
        env = torch.arange(b, device=dev).repeat_interleave(g0)  # (R,) each row's environment
        group = torch.arange(g0, device=dev).repeat(b)  # (R,) its candidates' group
        batch = core.planning_batch(g0)
        stepped = 0
        for k, stage in enumerate(stages):
            if k > 0 and stage.split:  # branch each row into its group's children
                r, group = (group[:, None] == stage.parent[None, :]).nonzero(as_tuple=True)
                env, batch = env[r], batch.select(r)
            out = batch.step(stage.action[group])
            stepped += len(env)
            ends = out.done | (k == len(stages) - 1)
            if bool(ends.any()):
                # rank and tie-break of the lookahead's outcome(), for every candidate ending now
                row_rank = torch.where(out.failed, 0, torch.where(out.arrived, 2, 1))
                row_value = torch.where(
                    out.failed,
                    float(k),
                    torch.where(out.arrived, -float(k), out.distance.double()),
                )
                fin = ends.nonzero()[:, 0]
                who = stage.members[group[fin]]  # (F, C)
                f, cand = who.nonzero(as_tuple=True)
                e = env[fin][f]
                rank[e, cand] = row_rank[fin][f]
                value[e, cand] = row_value[fin][f]
                open_[e, cand] = False
            # an environment is decided once a candidate arrived (later arrivals rank lower) or
            # every candidate has ended
            decided = (rank == 2).any(1) | ~open_.any(1)
            keep = ~ends & ~decided[env]
            if not bool(keep.all()):
                idx = keep.nonzero()[:, 0]
                if idx.numel() == 0:
                    break
                env, group, batch = env[idx], group[idx], batch.select(idx)
        # the best (rank, value), ties to the first candidate (first action, then plan)
        best_rank = rank.max(1, keepdim=True).values
        top = rank == best_rank
        masked = torch.where(top, value, -torch.inf)
        top &= masked == masked.max(1, keepdim=True).values
        best = top.int().argmax(1)  # the first maximal
        firsts = torch.tensor(self.first_actions, device=dev)
        action = firsts[torch.div(best, len(self.config.plans), rounding_mode="floor")]
        return Decision(action=action, rank=rank, value=value, rows_stepped=stepped)


class TeacherPolicy:
    """The teacher as an evaluated policy (:class:`agent.policies.base.Policy`) on a one-env
    batched Gymnasium env: privileged, a teacher, not a deployable agent."""

    name = "teacher"

    def __init__(self, env: gym.Env, config: TeacherConfig | None = None) -> None:
        core = getattr(env.unwrapped, "core", None)
        if not isinstance(core, BatchedDrive):
            check_can_teach(env.spec.id if env.spec else type(env.unwrapped).__name__)
            raise ConfigError("--policy teacher: the env has no batched core to copy")
        self.teacher = Teacher(core, config)

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> Any:
        return int(self.teacher.decide().action[0])

    def attention(self, obs: dict[str, np.ndarray]) -> AttentionView | None:
        return None


def decision_rate(
    core: BatchedDrive, config: TeacherConfig | None = None, rounds: int = 2
) -> dict[str, float]:
    """The teacher driving every environment of ``core`` (reset already) for ``rounds``
    decisions each (finished episodes start anew): ``decisions_per_s`` (B decisions per round
    over the planning time only), ``rows_per_s`` (copies times policy steps simulated per
    second), ``seconds`` (planning time in all) and ``candidates``."""
    teacher = Teacher(core, config)
    planning, rows = 0.0, 0
    for _ in range(rounds):
        start = time.perf_counter()
        decision = teacher.decide()
        planning += time.perf_counter() - start
        rows += decision.rows_stepped
        out = core.step(decision.action)
        core.reset_envs(out.terminated | out.truncated)
    return {
        "decisions_per_s": rounds * core.num_envs / planning,
        "rows_per_s": rows / planning,
        "seconds": planning,
        "candidates": float(teacher.candidates),
    }
