"""highway-env's collision rule between oriented boxes, for B environments of N slots at once.

highway-env 1.12.1 (``Road.step``, ``RoadObject.handle_collisions`` and ``_is_colliding``,
``utils.are_polygons_intersecting``) checks, after every vehicle has stepped, each pair of road
objects twice over: whether their boxes overlap now (``intersecting``: both crash at once), and
whether they will overlap within the next frame if each moves by ``velocity * dt``
(``will_intersect``). A pair that will intersect gets an *impact*: the minimum translation
vector that separates the displaced boxes, half to each vehicle (all of it to a vehicle that
hits an obstacle), which ``Vehicle.step`` adds to the position at the vehicle's next frame and
then marks it crashed. So a crash is flagged either when boxes overlap or one frame after they
were about to, and crashed vehicles keep being pushed apart.

What this module reproduces, and how:

- the pairs: ``Road.step`` visits, for each vehicle ``i`` in ``road.vehicles`` order, the later
  vehicles and then every object (obstacles never meet obstacles); a pair is checked when
  either side has ``check_collisions`` (HighwayEnvFast: only the ego). That order is
  ``Traffic.road_order`` (the slot order unless a scenario or ``import_state`` says otherwise):
  it decides which vehicle of a pair is ``self``. A vehicle keeps the impact of the *last* pair
  in that order that gives it one (``handle_collisions`` overwrites, it does not add), so the
  impacts are resolved by the largest visit rank per vehicle;
- the spherical pre-check, exactly: centres farther apart than their half diagonals plus the
  *first* vehicle's ``speed * dt`` are not tested (the other's speed does not count);
- the separating-axis test on the eight edge normals in highway-env's order, with its one-sided
  ``interval_distance`` (not a symmetric penetration depth) and its tie rule (the first axis of
  least distance wins), the sign taken from the centre difference (``-normal`` when it is 0).

Not modelled: ``collidable`` and ``solid`` (true for every vehicle and obstacle here) and the
``hit`` flag of non-solid objects (landmarks, which the batched scenarios do not have).

Slots are (B, N) tensors of :class:`envs.batched.sim.Traffic`. A float32 distance filter over
(B, R, N) picks (K,) candidate pairs (``nonzero``: the one host sync on a GPU); the exact
pre-check and the box test run on those in float64 from the stored positions, and the results
go back to slots by scatters, without boolean indexing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # sim.py imports this module
    from drive_attention.envs.batched.sim import Traffic

FILTER_SLACK = 1e-3  # [m] the float32 distance filter keeps pairs this much beyond the exact one
ORDER_LIMIT = 2**31  # road orders must stay below this (visit ranks are int64)


@dataclass
class Contacts:
    """The outcome of one frame's collision check, (B, N) per slot."""

    crashed: torch.Tensor  # bool, boxes overlapping now
    impact: torch.Tensor  # (B, N, 2) [m] push to apply at the vehicle's next step
    has_impact: torch.Tensor  # bool, where ``impact`` is set (highway-env: not None)


@dataclass
class PairTest:
    """``are_polygons_intersecting`` of (K,) pairs (a, b) displaced by velocity * dt."""

    intersecting: torch.Tensor  # (K,) bool
    will_intersect: torch.Tensor  # (K,) bool
    translation: torch.Tensor  # (K, 2) float64 [m], pushes a away from b (0 where not will)


def contacts(t: Traffic, obstacle: torch.Tensor, dt: float, ego_only: bool) -> Contacts:
    """highway-env's ``Road.step`` collision pass over every pair of ``t``.

    ``obstacle``: (B, N) bool, slots that are highway-env ``road.objects`` (they never move and
    never receive an impact). ``ego_only``: only slot 0 can check collisions (HighwayEnvFast),
    so only its pairs are looked at; the result is the same as with every pair.
    """
    b, n = t.x.shape
    rows = 1 if ego_only else n
    alive = t.alive
    # float32 filter: centres within half diagonals + the faster one's travel (+ slack)
    diag = torch.hypot(t.length, t.width)  # (B, N) [m]
    gap = torch.hypot(t.x[:, :rows, None] - t.x[:, None], t.y[:, :rows, None] - t.y[:, None])
    travel = torch.maximum(t.speed[:, :rows, None].abs(), t.speed[:, None].abs()) * dt
    reach = (diag[:, :rows, None] + diag[:, None]) / 2 + travel + FILTER_SLACK  # (B, R, N)
    near = (gap <= reach) & alive[:, :rows, None] & alive[:, None]
    near &= torch.ones(rows, n, dtype=torch.bool, device=t.x.device).triu(1)  # i < j, once
    near &= t.check_collisions[:, :rows, None] | t.check_collisions[:, None]
    near &= ~(obstacle[:, :rows, None] & obstacle[:, None])  # objects never meet objects
    env, i, j = near.nonzero(as_tuple=True)  # (K,) pairs i < j

    crashed = torch.zeros_like(t.crashed)
    impact = torch.zeros(b, n, 2, dtype=t.x.dtype, device=t.x.device)
    has_impact = torch.zeros_like(t.crashed)
    if env.numel() == 0:
        return Contacts(crashed, impact, has_impact)
    # highway-env's roles: `self` comes first in road.vehicles; an object is always `other`
    order = t.road_order
    swap = obstacle[env, i] | (~obstacle[env, j] & (order[env, j] < order[env, i]))
    a, c = torch.where(swap, j, i), torch.where(swap, i, j)  # (K,) self, other
    state = _state(t)
    box_a, box_c = state[env, a], state[env, c]  # (K, 6)
    test = box_test(box_a, box_c, dt)
    checked = _within_reach(box_a, box_c, dt)  # the pairs highway-env tests exactly
    # below, masks instead of boolean indexing: no host sync after the nonzero above
    flat_a, flat_c = env * n + a, env * n + c  # (K,) flat slots
    hit = (test.intersecting & checked).long()
    crashed_flat = torch.zeros(b * n, dtype=torch.long, device=t.x.device)
    crashed_flat.scatter_reduce_(0, torch.cat([flat_a, flat_c]), torch.cat([hit, hit]), "amax")
    crashed = crashed_flat.view(b, n).bool()

    # impacts, the last pair in Road.step's order winning
    to_object = obstacle[env, c]
    # (K,) visit order of the pair: by self, then other vehicles before objects; -1: no impact
    rank = (order[env, a] * 2 + to_object.long()) * ORDER_LIMIT + order[env, c]
    rank = torch.where(test.will_intersect & checked, rank, -1)
    tr = test.translation.to(t.x.dtype)
    push = torch.where(to_object[:, None], tr, tr / 2)  # whole push against an obstacle
    flat = torch.cat([flat_a, flat_c])  # (2K,) receivers: self, then other (never an object)
    rec_rank = torch.cat([rank, torch.where(to_object, -1, rank)])
    rec_push = torch.cat([push, -push])
    last = torch.full((b * n,), -1, dtype=torch.long, device=t.x.device)
    last.scatter_reduce_(0, flat, rec_rank, reduce="amax")
    wins = (rec_rank == last[flat]) & (rec_rank >= 0)  # one per slot: two slots meet once
    impact = torch.zeros(b * n, 2, dtype=t.x.dtype, device=t.x.device)
    impact.index_put_((flat,), torch.where(wins[:, None], rec_push, 0.0), accumulate=True)
    return Contacts(crashed, impact.view(b, n, 2), (last >= 0).view(b, n))


def _state(t: Traffic) -> torch.Tensor:
    """(B, N, 6) float64 x, y [m], heading [rad], speed [m/s], length, width [m] of every slot:
    what the box test reads, gathered once per pair."""
    return torch.stack([t.x, t.y, t.heading, t.speed, t.length, t.width], -1).double()


def _within_reach(a: torch.Tensor, c: torch.Tensor, dt: float) -> torch.Tensor:
    """(K,) ``_is_colliding``'s spherical pre-check passes for boxes ``a``, ``c`` ((K, 6) from
    :func:`_state`): |c - a| <= half diagonals + the speed of ``a`` (signed, as highway-env)
    times dt."""
    dist = torch.hypot(c[:, 0] - a[:, 0], c[:, 1] - a[:, 1])
    diag_a = torch.sqrt(a[:, 4] ** 2 + a[:, 5] ** 2)
    diag_c = torch.sqrt(c[:, 4] ** 2 + c[:, 5] ** 2)
    return dist <= (diag_a + diag_c) / 2 + a[:, 3] * dt


def corners(box: torch.Tensor) -> torch.Tensor:
    """(K, 4, 2) corners [m] of boxes (K, 6) from :func:`_state`, in ``RoadObject.polygon``'s
    order (rear right, rear left, front left, front right in the vehicle frame)."""
    x, y, h, _, length, width = box.unbind(1)
    c, s = torch.cos(h)[:, None], torch.sin(h)[:, None]
    hl, hw = length[:, None] / 2, width[:, None] / 2
    lx = torch.cat([-hl, -hl, hl, hl], 1)  # (K, 4) along the heading
    ly = torch.cat([-hw, hw, hw, -hw], 1)  # across it
    return torch.stack([c * lx - s * ly + x[:, None], s * lx + c * ly + y[:, None]], -1)


def _interval_distance(
    min_a: torch.Tensor, max_a: torch.Tensor, min_b: torch.Tensor, max_b: torch.Tensor
) -> torch.Tensor:
    """highway-env's ``utils.interval_distance`` (negative when the intervals overlap)."""
    return torch.where(min_a < min_b, min_b - max_a, min_a - max_b)


def pairs_colliding(
    t: Traffic, env: torch.Tensor, a: torch.Tensor, c: torch.Tensor, dt: float
) -> PairTest:
    """:func:`box_test` of slots ``a`` and ``c`` of environments ``env`` ((K,) each)."""
    state = _state(t)
    return box_test(state[env, a], state[env, c], dt)


def box_test(box_a: torch.Tensor, box_c: torch.Tensor, dt: float) -> PairTest:
    """``utils.are_polygons_intersecting`` of boxes ``box_a`` and ``box_c`` ((K, 6) from
    :func:`_state`), displaced by their velocities (speed along the heading) times ``dt``.

    Touching counts as intersecting. The translation is the least ``interval_distance`` over
    the eight edge normals (a's four, then c's, first one on ties), turned to push ``a`` away
    from ``c``.
    """
    pa, pc = corners(box_a), corners(box_c)  # (K, 4, 2)
    edges = torch.cat([pa.roll(-1, 1) - pa, pc.roll(-1, 1) - pc], 1)  # (K, 8, 2) p2 - p1
    normal = torch.stack([-edges[..., 1], edges[..., 0]], -1)
    normal = normal / torch.linalg.vector_norm(normal, dim=-1, keepdim=True)
    proj_a = (normal[:, :, None] * pa[:, None]).sum(-1)  # (K, 8 axes, 4 corners)
    proj_c = (normal[:, :, None] * pc[:, None]).sum(-1)
    min_a, max_a = proj_a.amin(-1), proj_a.amax(-1)  # (K, 8)
    min_c, max_c = proj_c.amin(-1), proj_c.amax(-1)
    intersecting = (_interval_distance(min_a, max_a, min_c, max_c) <= 0).all(1)

    def velocity(box: torch.Tensor) -> torch.Tensor:
        h, v = box[:, 2], box[:, 3]
        return torch.stack([v * torch.cos(h), v * torch.sin(h)], -1)  # (K, 2) [m/s]

    shift = (normal * ((velocity(box_a) - velocity(box_c)) * dt)[:, None]).sum(-1)  # (K, 8)
    min_a = min_a + shift.clamp(max=0)
    max_a = max_a + shift.clamp(min=0)
    distance = _interval_distance(min_a, max_a, min_c, max_c)  # (K, 8)
    will_intersect = (distance <= 0).all(1)

    axis = distance.abs().argmin(1)  # first of the least (torch: lowest index on ties)
    best = normal.gather(1, axis[:, None, None].expand(-1, 1, 2))[:, 0]  # (K, 2)
    depth = distance.abs().gather(1, axis[:, None])  # (K, 1)
    centre = pa.mean(1) - pc.mean(1)  # (K, 2) a's centre minus c's
    sign = torch.where((centre * best).sum(-1, keepdim=True) > 0, 1.0, -1.0)
    translation = torch.where(will_intersect[:, None], depth * sign * best, 0.0)
    return PairTest(intersecting, will_intersect, translation)
