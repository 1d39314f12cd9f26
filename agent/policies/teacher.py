"""A fast privileged teacher on the batched simulator (``--policy teacher``).

The lookahead's planner (:mod:`agent.policies.lookahead`) for every environment of a batch at
once: at each decision, each first meta-action followed by each fixed plan (:data:`PLANS`; a
plan's last action repeats) is tried to the end of the episode or :attr:`TeacherConfig.horizon`
seconds, and the first action of the best outcome is taken: arriving (scenarios with a goal)
before surviving before failing (a crash, ending off the road, and on the signalised
intersection a red-light run or a pedestrian hit); among arrivals the earliest, among
survivals the longest distance (within :data:`TIE`), among failures the latest. Ties go to the
first action of :attr:`Teacher.first_actions` (idle first) and the first plan listed, as the
lookahead's do.

The B environments' states are copied into one batch of B x candidates
(:class:`envs.batched.planning.PlanningBatch`: traffic, lights, pedestrians, routes, the clock
and each episode's own random stream, so the copies foresee the arrivals) and stepped together.
Candidates share one copy while their actions so far have had the same effect (the same
actions, or speed actions that leave the same target speed: faster at the top speed is idle);
an environment stops planning once one of its candidates arrives (none can arrive earlier) or
all have ended.

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

from drive_attention import envs
from drive_attention.agent.policies.base import AttentionView
from drive_attention.agent.policies.lookahead import FASTER, IDLE, LEFT, PLANS, RIGHT, SLOWER
from drive_attention.envs.batched.core import BatchedDrive
from drive_attention.envs.batched.planning import PlanningBatch
from drive_attention.envs.configuration import ConfigError, closest
from drive_attention.envs.contract import DISCRETE_ACTIONS

TIE = 1e-3  # [m] distances this close are a tie: copies in other rows of a batch may differ in
# their last float32 bits (e.g. a lane change where there is no lane, which acts as idle)


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
        self.schedule = self._schedule()  # (steps, C)

    @property
    def candidates(self) -> int:
        return len(self.first_actions) * len(self.config.plans)

    def _schedule(self) -> torch.Tensor:
        """(steps, C) long: each candidate's action at each step, candidate ``c`` being first
        action ``c // len(plans)`` then plan ``c % len(plans)`` (its last action repeating)."""
        plans = self.config.plans
        seqs = [
            [first if k == 0 else plan[min(k - 1, len(plan) - 1)] for k in range(self.steps)]
            for first in self.first_actions
            for plan in plans
        ]
        return torch.tensor(seqs, dtype=torch.long, device=self.core.device).T

    def _effective(self, batch: PlanningBatch) -> torch.Tensor:
        """(R, A) the action each meta-action of each row acts as: the first of idle, faster,
        slower that leaves the same speed index (lane changes are themselves)."""
        t, sim = batch.traffic, self.core.sim
        n = len(DISCRETE_ACTIONS)
        out = torch.arange(n, device=t.x.device).repeat(len(batch), 1)  # (R, A)
        speed_actions = (IDLE, FASTER, SLOWER)
        index = {
            a: sim.meta_speed_index(t, torch.full_like(t.speed_index, a)) for a in speed_actions
        }
        for i, a in enumerate(speed_actions):
            for earlier in reversed(speed_actions[:i]):
                same = index[a] == index[earlier]
                out[:, a] = torch.where(same, out[:, earlier], out[:, a])
        return out

    @torch.no_grad()
    def decide(self, start: PlanningBatch | None = None) -> Decision:
        """Plan every environment of the core from its current state (the core is untouched),
        or each row of ``start`` (copies of the core's environments, possibly altered: see
        :mod:`agent.policies.relevance`); the decision has one entry per row."""
        core, schedule = self.core, self.schedule
        batch = core.planning_batch(1) if start is None else start
        b, c, dev = len(batch), self.candidates, core.device
        n = len(DISCRETE_ACTIONS)
        rank = torch.full((b, c), -1, dtype=torch.long, device=dev)
        value = torch.zeros(b, c, dtype=torch.float64, device=dev)
        open_ = torch.ones(b, c, dtype=torch.bool, device=dev)  # not ended yet
        env = torch.arange(b, device=dev)  # (R,) each row's environment
        members = torch.ones(b, c, dtype=torch.bool, device=dev)  # (R, C) its candidates
        stepped = 0
        for k in range(self.steps):
            # branch each row by the action its candidates take now, as that action acts
            acts = torch.nn.functional.one_hot(schedule[k], n).bool()  # (C, A)
            effect = torch.nn.functional.one_hot(self._effective(batch), n).bool()  # (R, A, A')
            # (R, A', C): the candidates of each row whose action acts as A'
            child = torch.einsum("rc,ca,rab->rbc", members.float(), acts.float(), effect.float())
            r, action = child.sum(2).nonzero(as_tuple=True)  # (R',) rows to step, their actions
            members = child[r, action] > 0
            if len(r) != len(env):  # a row branches (each has one child at least)
                batch = batch.select(r)
            env = env[r]
            out = batch.step(action)
            stepped += len(env)
            ends = out.done | (k == self.steps - 1)
            if bool(ends.any()):
                # rank and tie-break of the lookahead's outcome(), for every candidate ending now
                row_rank = torch.where(out.failed, 0, torch.where(out.arrived, 2, 1))
                row_value = torch.where(
                    out.failed,
                    float(k),
                    torch.where(out.arrived, -float(k), out.distance.double()),
                )
                fin = ends.nonzero()[:, 0]
                f, cand = members[fin].nonzero(as_tuple=True)
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
                env, members, batch = env[idx], members[idx], batch.select(idx)
        # the best (rank, value), ties to the first candidate (first action, then plan)
        best_rank = rank.max(1, keepdim=True).values
        top = rank == best_rank
        masked = torch.where(top, value, -torch.inf)
        top &= masked >= masked.max(1, keepdim=True).values - TIE
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
