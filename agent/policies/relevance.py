"""Ground-truth relevance: which objects decide the teacher's choice, per decision.

For every environment of a batched core and every object in it (a vehicle or a pedestrian
within ``radius`` of the ego; and, on the signalised intersection while the ego faces a light,
the light as one element), the teacher (:class:`agent.policies.teacher.Teacher`) plans once more
in a copy of the environment without that object (its traffic slot emptied) or with the light
flipped (the lights' clock moved by half a cycle: the ego's green becomes red and the cross
street's red green, with everything that follows from it). An object is *relevant* when its
removal changes the teacher's chosen first action or the outcome it foresees (arrive, survive,
fail, and when: the step of an arrival or a crash, the distance of a survival beyond
:data:`MARGIN`). All copies of all environments are planned in one batch: the cost is one teacher
decision on ``B x (1 + objects + light)`` rows (:attr:`Relevance.rows_stepped`,
:attr:`Relevance.seconds`).

Removing an object leaves the episode's random stream as it is, so arrivals and pedestrians
appear as they would have; an arrival may take the emptied slot. Like the teacher, this reads
the simulator's exact state: ground truth for measuring attention, not an input to the agent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from drive_attention.agent.policies.teacher import Decision, Teacher
from drive_attention.envs.batched.planning import PlanningBatch
from drive_attention.envs.batched.signals import NO_LIGHT
from drive_attention.envs.batched.sim import EGO, EMPTY


@dataclass
class Relevance:
    """What decides each environment's decision; (B, N) tensors over traffic slots."""

    relevant: torch.Tensor  # bool: removing this object changes the decision or its outcome
    tested: torch.Tensor  # bool: the objects tried (alive, not the ego, within the radius)
    light: torch.Tensor  # (B,) bool: flipping the light changes it
    light_tested: torch.Tensor  # (B,) bool: the ego faces a light (the signalised scenario)
    action: torch.Tensor  # (B,) long, the teacher's action with everything in place
    rows_stepped: int  # copies times policy steps simulated
    seconds: float

    def slots(self, env: int) -> list[int]:
        """The relevant slots of environment ``env``."""
        return self.relevant[env].nonzero()[:, 0].tolist()


MARGIN = 5.0  # [m] survivals' distances closer than this are a tie (arrival and failure times
# are whole policy steps: any difference counts)


def _by_first_action(teacher: Teacher, decision: Decision) -> torch.Tensor:
    """(R, F, 2) the best (rank, value) over the plans after each first action, per row
    (value -inf where no candidate of that action was needed: the row was decided earlier)."""
    r, c = decision.rank.shape
    f = len(teacher.first_actions)
    rank = decision.rank.reshape(r, f, c // f).double()
    value = torch.where(rank >= 0, decision.value.reshape(r, f, c // f), -torch.inf)
    key = rank * 1e9 + value.clamp(-1e8, 1e8)  # rank first, then the tie-break
    i = key.argmax(2, keepdim=True)
    return torch.cat([rank.gather(2, i), value.gather(2, i)], 2)  # (R, F, 2)


def _tolerance(rank: torch.Tensor, margin: float) -> torch.Tensor:
    """How far tie-break values of outcome ``rank`` may differ and still tie: ``margin`` [m]
    for survivals (distance), half a step for arrivals and failures (whole policy steps)."""
    return torch.where(rank == 1, margin, 0.5)


def _worse(
    best: torch.Tensor, a: torch.Tensor, chosen: torch.Tensor, margin: float
) -> torch.Tensor:
    """(V,) bool: in the world of ``best`` (V, F, 2), first action ``a`` (V,) is clearly worse
    than the ``chosen`` one (a lower outcome rank, or the same by more than the tolerance). An
    action that world never needed to finish planning (rank -1) counts as worse."""
    ra = best[torch.arange(len(a)), a]  # (V, 2)
    rc = best[torch.arange(len(a)), chosen]
    slack = _tolerance(rc[:, 0], margin)
    return (ra[:, 0] < rc[:, 0]) | ((ra[:, 0] == rc[:, 0]) & (ra[:, 1] < rc[:, 1] - slack))


def _moved(one: torch.Tensor, other: torch.Tensor, margin: float) -> torch.Tensor:
    """(V,) bool: the foreseen outcomes ``one`` and ``other`` ((V, 2) rank, value) differ: in
    rank, or in the tie-break by more than the tolerance (an arrival or a crash at another
    step, a survival that gets further or less far)."""
    slack = _tolerance(one[:, 0], margin)
    return (one[:, 0] != other[:, 0]) | ((one[:, 1] - other[:, 1]).abs() > slack)


def relevance(
    teacher: Teacher,
    radius: float | None = None,
    margin: float = MARGIN,
    state: PlanningBatch | None = None,
) -> Relevance:
    """The relevant objects of every environment of ``teacher.core`` as it stands now (the core
    is untouched). ``radius`` [m]: only objects whose centre is this close to the ego's are
    tried (all by default); the others are reported as not tested. ``margin`` [m]:
    survivals' distances closer than this are ties. ``state``: a saved copy
    (``core.planning_batch(1)`` taken earlier) to judge instead of the core as it stands,
    e.g. a recorded episode's decision."""
    start_time = time.perf_counter()
    core = teacher.core
    if state is None:
        assert core.traffic is not None, "reset the core before asking for relevance"
        state = core.planning_batch(1)
    t = state.traffic
    b, dev = t.x.shape[0], core.device
    tested = t.alive & (t.kind != EGO)
    if radius is not None:
        tested &= torch.hypot(t.x - t.x[:, :1], t.y - t.y[:, :1]) <= radius
    env_o, slot_o = tested.nonzero(as_tuple=True)  # (O,) one copy per object
    signals = core.signals
    if signals is not None:
        light_tested = signals.ego_view(core.sim, t)["light_state"] != NO_LIGHT
    else:
        light_tested = torch.zeros(b, dtype=torch.bool, device=dev)
    env_l = light_tested.nonzero()[:, 0]  # (L,) one copy per light faced
    base = torch.arange(b, device=dev)
    start = state.select(torch.cat([base, env_o, env_l]))
    copies = start.traffic
    rows_o = b + torch.arange(len(env_o), device=dev)
    copies.kind[rows_o, slot_o] = EMPTY
    if len(env_l):
        rows_l = b + len(env_o) + torch.arange(len(env_l), device=dev)
        timing = signals.timing
        copies.clock[rows_l] = torch.remainder(copies.clock[rows_l] + timing.half, timing.cycle)
    decision = teacher.decide(start)
    action = decision.action
    best = _by_first_action(teacher, decision)  # (R, F) each first action's best (rank, value)
    first = {a: i for i, a in enumerate(teacher.first_actions)}
    choice = torch.tensor([first[a] for a in action.tolist()], device=dev)  # (R,)
    origin = torch.cat([env_o, env_l])  # (V,) the environment each altered copy is of
    rows = torch.arange(b, len(action), device=dev)
    # relevant: the outcome the teacher foresees moves, or its choice in one world is clearly
    # worse in the other (either way round); a choice among near-equals that flips is not
    chosen = best[torch.arange(len(action), device=dev), choice]  # (R, 2)
    changed = (
        _moved(chosen[rows], chosen[origin], margin)
        | _worse(best[rows], choice[origin], choice[rows], margin)
        | _worse(best[origin], choice[rows], choice[origin], margin)
    )
    relevant = torch.zeros_like(tested)
    relevant[env_o, slot_o] = changed[: len(env_o)]
    light = torch.zeros(b, dtype=torch.bool, device=dev)
    light[env_l] = changed[len(env_o) :]
    return Relevance(
        relevant=relevant,
        tested=tested,
        light=light,
        light_tested=light_tested,
        action=action[:b],
        rows_stepped=decision.rows_stepped,
        seconds=time.perf_counter() - start_time,
    )
