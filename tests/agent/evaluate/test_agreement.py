"""Attention-relevance agreement: the most-attended token or patch against the relevant objects,
and the videos' outline of them."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from drive_attention.agent.evaluate.agreement import (
    BOOTSTRAP,
    TIE,
    Agreement,
    RelevanceJudge,
    _ratio,
    _ratio_interval,
    format_agreement,
    patch_score,
    relevance_env,
    relevant_pixels,
    token_score,
    top_hit,
)
from drive_attention.agent.evaluate.video import RELEVANT_COLOUR, FrameText, render_frame
from drive_attention.agent.policies.relevance import Relevance
from drive_attention.envs.batched.core import BatchedDrive
from drive_attention.envs.batched.sim import EMPTY, IDM
from drive_attention.envs.contract import CLASS_ID


def _frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """A 16 x 16 id map with four objects in different 4 x 4 patches (slots 1, 2, 5, 7), one
    token per object plus two empty rows, and one or two of them relevant."""
    ids = np.full((16, 16), -1, dtype=np.int16)
    cells = rng.choice(16, size=4, replace=False)
    slots = [1, 2, 5, 7]
    for cell, slot in zip(cells, slots):
        r, c = divmod(int(cell), 4)
        ids[4 * r + 1 : 4 * r + 3, 4 * c + 1 : 4 * c + 3] = slot
    token_slots = np.array([*rng.permutation(slots), -1, -1])
    relevant = list(rng.choice(slots, size=int(rng.integers(1, 3)), replace=False))
    return ids, token_slots, relevant


def test_a_uniform_map_scores_the_chance_rate_and_a_focused_one_scores_one() -> None:
    rng = np.random.default_rng(0)
    uniform, focused = Agreement(), Agreement()
    for _ in range(4):
        uniform.start_episode()
        focused.start_episode()
        for _ in range(5):
            ids, token_slots, relevant = _frame(rng)
            flat_tokens, flat_camera = np.full(6, 1 / 6), np.full((4, 4), 1 / 16)
            uniform.add(relevant, False, flat_tokens, token_slots, flat_camera, ids, cell=(4, 4))
            # all the attention on the first relevant object, its token and its patch
            target = relevant[0]
            tokens = np.where(token_slots == target, 0.9, 0.02)
            camera = np.full((4, 4), 0.01)
            r, c = np.argwhere(ids == target)[0] // 4
            camera[r, c] = 0.85
            focused.add(relevant, False, tokens, token_slots, camera, ids, cell=(4, 4))
    u, f = uniform.summary(), focused.summary()
    for part in ("tokens", "patches"):
        assert u[part]["hit"] == pytest.approx(u[part]["chance"])
        assert u[part]["ratio"] == pytest.approx(1.0)
        assert f[part]["hit"] == pytest.approx(1.0)
        assert f[part]["ratio"] == pytest.approx(1.0 / f[part]["chance"])
        assert f[part]["ratio_low"] <= f[part]["ratio"] <= f[part]["ratio_high"]
        assert f[part]["episodes"] == 4 and f[part]["frames"] == 20
    # chance by hand: one or two of the four present tokens; one or two of the 16 patches
    assert 0.25 <= u["tokens"]["chance"] <= 0.5
    assert 1 / 16 <= u["patches"]["chance"] <= 2 / 16


def test_a_map_on_an_irrelevant_object_scores_zero() -> None:
    ids = np.full((8, 8), -1, dtype=np.int16)
    ids[0:2, 0:2], ids[6:8, 6:8] = 3, 4
    camera = np.array([[0.9, 0.0], [0.0, 0.1]])  # on slot 3's patch
    assert patch_score(camera, relevant_pixels(ids, [4]), cell=(4, 4)) == (0.0, 0.25)
    assert patch_score(camera, relevant_pixels(ids, [3]), cell=(4, 4)) == (1.0, 0.25)
    tokens = np.array([0.7, 0.2, 0.1])
    assert token_score(tokens, np.array([3, 4, -1]), [4]) == (0.0, 0.5)
    assert token_score(tokens, np.array([3, 4, -1]), [3]) == (1.0, 0.5)


def test_ties_split_evenly_and_frames_without_a_target_do_not_count() -> None:
    assert top_hit(np.array([0.4, 0.4, 0.2]), np.array([True, False, False])) == 0.5
    # the relevant object is neither among the tokens nor in view
    assert token_score(np.ones(3), np.array([3, 4, -1]), [9]) is None
    assert patch_score(np.ones((2, 2)), relevant_pixels(np.full((8, 8), -1), [9])) is None
    agreement = Agreement()
    agreement.start_episode()
    scores = agreement.add([], False, np.ones(3), np.array([3, 4, -1]), None, None)
    assert scores == {"tokens": None, "patches": None}
    agreement.add([9], False, np.ones(3), np.array([3, 4, -1]), None, None)
    summary = agreement.summary()
    assert (summary["frames"], summary["relevant_frames"]) == (2, 1)
    assert summary["tokens"]["frames"] == 0 and math.isnan(summary["tokens"]["ratio"])


def test_a_relevant_light_is_its_pixels() -> None:
    ids = np.full((8, 8), -1, dtype=np.int16)
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[0:2, 6:8] = CLASS_ID["traffic_light"]
    mask = relevant_pixels(ids, [], labels, light=True)
    assert mask.sum() == 4 and mask[0:2, 6:8].all()
    assert not relevant_pixels(ids, [], labels, light=False).any()
    camera = np.array([[0.1, 0.8], [0.05, 0.05]])
    assert patch_score(camera, mask, cell=(4, 4)) == (1.0, 0.25)


def test_relevance_is_measured_on_the_batched_version() -> None:
    assert relevance_env("DriveAttention/Highway-v0") == "DriveAttention/BatchedHighway-v0"
    assert relevance_env("DriveAttention/BatchedSignalized-v0") == (
        "DriveAttention/BatchedSignalized-v0"
    )
    assert relevance_env("DriveAttention/Carla-v0") is None


def test_videos_outline_the_relevant_objects() -> None:
    camera = np.zeros((16, 16, 3), dtype=np.uint8)
    relevant = np.zeros((16, 16), dtype=bool)
    relevant[6:8, 10:13] = True
    text = FrameText(0, "idle", 20.0, 0.0, 0.0)
    plain = render_frame(camera, text, scale=4)
    marked = render_frame(camera, text, scale=4, relevant=relevant)
    magenta = np.all(marked == RELEVANT_COLOUR, axis=-1)
    assert not np.all(plain == RELEVANT_COLOUR, axis=-1).any()
    rows, cols = np.nonzero(magenta[:64, :64])
    assert len(rows) > 0
    # around the object (rows 24-31, columns 40-51 at scale 4), a few pixels out at most
    assert rows.min() >= 24 - 4 and rows.max() <= 31 + 4
    assert cols.min() >= 40 - 4 and cols.max() <= 51 + 4
    assert not magenta[26:30, 42:50].any(), "an outline, not a fill"


def test_each_object_token_is_drawn_on_its_own_vehicle() -> None:
    from drive_attention.agent.evaluate.video import attention_scale, colour, object_marks

    ids = np.full((16, 16), -1, dtype=np.int16)
    ids[2:4, 3:7] = 5  # slot 5: token 1
    ids[10:12, 9:13] = 8  # slot 8: token 0
    info = {"object_ids": ids, "object_slots": np.array([8, 5, -1])}
    labels = ("ego", "objects.00", "objects.01", "objects.02")
    weights = np.array([0.1, 0.05, 0.8, 0.05])
    marks = object_marks(info, labels, weights)
    assert [(m.index, m.x, m.y) for m in marks] == [(0, 10.5, 10.5), (1, 4.5, 2.5)]
    text = FrameText(0, "idle", 20.0, 0.0, 0.0)
    camera = np.zeros((16, 16, 3), dtype=np.uint8)
    frame = render_frame(
        camera, text, sensor_attention=weights, sensor_labels=labels, scale=8, objects=marks
    ).astype(int)
    for k, (x, y) in ((1, (4.5, 2.5)), (0, (10.5, 10.5))):
        expected = colour(0.2 + 0.8 * float(attention_scale(weights[k + 1], len(labels))))
        pixel = frame[round((y + 0.5) * 8), round((x + 0.5) * 8)]
        assert np.abs(pixel - expected).max() <= 2, (k, pixel, expected)
    # the two tokens differ in attention, so their discs differ in colour
    assert np.abs(frame[28, 40] - frame[88, 88]).max() > 30


def test_a_crash_is_marked_where_the_ego_is() -> None:
    from drive_attention.agent.evaluate.video import CRASH_COLOUR

    text = FrameText(9, "(end)", 0.0, -3.0, 10.0)
    camera = np.zeros((16, 16, 3), dtype=np.uint8)
    frame = render_frame(camera, text, scale=4, crash_at=(4.0, 8.0))
    red = np.all(np.abs(frame.astype(int) - CRASH_COLOUR) <= 40, axis=-1)
    rows, cols = np.nonzero(red[:64, :64])
    assert len(rows) > 20
    # a ring around the ego's pixel ((4.5, 8.5) x 4 = (18, 34)), its word above it
    assert abs(np.median(cols) - 18) <= 8 and rows.max() <= 34 + 17
    assert not red[:64, 40:64].any(), "nowhere near the other side of the frame"


def test_near_ties_within_the_relative_tolerance_split_and_wider_gaps_do_not() -> None:
    relevant = np.array([False, True])
    # exactly TIE below the largest (relative to it): still a tie, half the top is relevant
    assert top_hit(np.array([1.0, 1.0 - TIE]), relevant) == 0.5
    # attention weights are below 1: the tolerance scales with the largest weight
    for top in (0.5, 1e-3):
        assert top_hit(np.array([top, top * (1 - 0.8 * TIE)]), relevant) == 0.5
        assert top_hit(np.array([top, top * (1 - 1.6 * TIE)]), relevant) == 0.0


def test_slot_zero_is_an_object_and_an_empty_token_is_never_the_top() -> None:
    # slot 0 holds an object like any other (only -1 is empty)
    tokens = np.array([0.6, 0.3, 0.1])
    assert token_score(tokens, np.array([0, 3, -1]), [0]) == (1.0, 0.5)
    assert token_score(tokens, np.array([0, 3, -1]), [3]) == (0.0, 0.5)
    # the most attended token is empty: the top among the two objects is slot 4's
    assert token_score(np.array([0.1, 0.2, 0.7]), np.array([3, 4, -1]), [4]) == (1.0, 0.5)
    ids = np.full((8, 8), -1, dtype=np.int16)
    ids[0:2, 0:2], ids[4:6, 4:7] = 0, 3
    mask = relevant_pixels(ids, [0])
    assert mask.sum() == 4 and mask[0:2, 0:2].all()
    # its patch (the top-left of four 4 x 4 patches) is the one covering a relevant pixel
    assert patch_score(np.array([[0.4, 0.2], [0.2, 0.2]]), mask, cell=(4, 4)) == (1.0, 0.25)


def test_a_relevant_light_adds_its_pixels_to_the_objects() -> None:
    ids = np.full((8, 8), -1, dtype=np.int16)
    ids[4:6, 0:2] = 3  # 4 pixels of slot 3
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[0:2, 6:8] = CLASS_ID["traffic_light"]  # 4 pixels of a light
    objects = relevant_pixels(ids, [3], labels)  # the light not relevant: by default
    assert objects.sum() == 4 and objects[4:6, 0:2].all()
    both = relevant_pixels(ids, [3], labels, light=True)
    assert both.sum() == 8 and both[4:6, 0:2].all() and both[0:2, 6:8].all()
    # without road labels there is no light to add
    assert (relevant_pixels(ids, [3], None, light=True) == objects).all()
    # two of the four patches cover something relevant: the light's top-right, slot 3's
    # bottom-left; the top on the bottom-right is neither
    camera = np.array([[0.1, 0.2], [0.3, 0.4]])
    assert patch_score(camera, both, cell=(4, 4)) == (0.0, 0.5)


def _off_grid_frame() -> tuple[np.ndarray, np.ndarray]:
    """An 8 x 8 frame under a 2 x 2 grid of 3 x 3 patches (rows and columns 6-7 in none), one
    relevant pixel at (3, 3): in patch (1, 1) by the cells, in (0, 0) were the grid spread
    over the frame (3 * 2 // 8 = 0); and a map on patch (1, 1)."""
    ids = np.full((8, 8), -1, dtype=np.int16)
    ids[3, 3] = 2
    return ids, np.array([[0.1, 0.1], [0.1, 0.7]])


def test_patches_are_the_stem_cells_when_given() -> None:
    ids, camera = _off_grid_frame()
    mask = relevant_pixels(ids, [2])
    assert patch_score(camera, mask, cell=(3, 3)) == (1.0, 0.25)
    assert patch_score(camera, mask) == (0.0, 0.25)
    # a relevant object past the cells' area is in no patch
    outside = np.zeros((8, 8), dtype=bool)
    outside[7, 7] = True
    assert patch_score(camera, outside, cell=(3, 3)) is None
    agreement = Agreement()
    scores = agreement.add([2], False, None, None, camera, ids, cell=(3, 3))
    assert scores == {"tokens": None, "patches": (1.0, 0.25)}


def test_a_part_needs_both_its_attention_and_its_targets() -> None:
    ids, camera = _off_grid_frame()
    tokens, slots = np.array([0.8, 0.2]), np.array([2, 5])
    agreement = Agreement()
    # weights without slots, slots without weights, no tokens at all
    assert agreement.add([2], False, None, slots, camera, ids, cell=(3, 3))["tokens"] is None
    assert agreement.add([2], False, tokens, None, camera, ids, cell=(3, 3))["tokens"] is None
    empty = np.zeros(0, dtype=np.int64)
    assert agreement.add([2], False, np.zeros(0), empty, None, None)["tokens"] is None
    # a map without ids, ids without a map
    assert agreement.add([2], False, tokens, slots, camera, None) == {
        "tokens": (1.0, 0.5),
        "patches": None,
    }
    assert agreement.add([2], False, tokens, slots, None, ids)["patches"] is None
    assert (agreement.frames, agreement.relevant_frames) == (5, 5)
    summary = agreement.summary()
    assert summary["tokens"]["frames"] == 2 and summary["patches"]["frames"] == 2


def test_a_relevant_light_alone_makes_a_frame_count() -> None:
    ids = np.full((8, 8), -1, dtype=np.int16)
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[0:2, 6:8] = CLASS_ID["traffic_light"]
    camera = np.array([[0.1, 0.6], [0.2, 0.1]])  # on the light's top-right patch
    agreement = Agreement()
    scores = agreement.add([], True, None, None, camera, ids, labels, cell=(4, 4))
    assert scores == {"tokens": None, "patches": (1.0, 0.25)}
    # the same frame with the light not relevant: nothing to find
    assert agreement.add([], False, None, None, camera, ids, labels, cell=(4, 4))["patches"] is None
    assert (agreement.frames, agreement.relevant_frames) == (2, 1)


def _add_tokens(agreement: Agreement, hit: bool, present: int) -> None:
    """A frame of ``present`` object tokens (slots 3, 4, ...), the first most attended, one
    relevant: the first (a hit) or the second (a miss); chance 1 / ``present``."""
    weights = np.full(present, 0.1)
    weights[0] = 0.7
    slots = np.arange(3, 3 + present)
    agreement.add([3 if hit else 4], False, weights, slots, None, None)


def test_episodes_are_the_unit_of_the_means_and_intervals() -> None:
    agreement = Agreement(seed=1)
    agreement.start_episode()  # three hits at chance 1/2
    for _ in range(3):
        _add_tokens(agreement, hit=True, present=2)
    agreement.start_episode()  # one miss at chance 1/4
    _add_tokens(agreement, hit=False, present=4)
    agreement.seconds = 2.0
    s = agreement.summary()
    assert s["frames"] == s["relevant_frames"] == 4
    assert s["relevance_seconds_per_frame"] == pytest.approx(0.5)
    t = s["tokens"]
    assert (t["frames"], t["episodes"]) == (4, 2)
    # episodes' hits 1 and 0 (not the frames' 3 of 4), chances 1/2 and 1/4
    assert t["hit"] == pytest.approx(0.5) and t["chance"] == pytest.approx(0.375)
    # half-widths: t95(1) = 12.706 times sd / sqrt(2): sd 0.7071 -> 6.353, sd 0.1768 -> 1.588
    assert t["hit_ci95"] == pytest.approx(12.706 * 0.5)
    assert t["chance_ci95"] == pytest.approx(12.706 * 0.125)
    assert t["ratio"] == pytest.approx(0.5 / 0.375)
    # resampling two episodes: both the first (ratio 2, p 1/4), one each (4/3, p 1/2), both
    # the second (0, p 1/4): the 2.5% and 97.5% points are the extremes
    assert (t["ratio_low"], t["ratio_high"]) == (0.0, 2.0)
    p = s["patches"]
    assert (p["frames"], p["episodes"]) == (0, 0) and math.isnan(p["ratio"])


def test_an_empty_agreement_summarises_to_no_numbers_quietly() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning about an empty mean
        s = Agreement().summary()
    assert (s["frames"], s["relevant_frames"], s["relevance_seconds_per_frame"]) == (0, 0, None)
    for part in ("tokens", "patches"):
        assert s[part]["frames"] == s[part]["episodes"] == 0
        assert math.isnan(s[part]["ratio"]) and math.isnan(s[part]["ratio_low"])


def test_a_zero_chance_has_no_ratio_and_its_resamples_are_left_out() -> None:
    assert math.isnan(_ratio([0.5], [0.0]))
    assert _ratio([1.0, 0.0], [0.5, 0.5]) == 1.0
    # fewer than two episodes: no interval
    assert all(math.isnan(x) for x in _ratio_interval([1.0], [0.5], seed=0))
    # hits 1 and 0 at chances 1/2 and 0: both the first -> 2, one each -> 0.5 / 0.25 = 2, both
    # the second -> no ratio (left out): every kept resample is 2
    assert _ratio_interval([1.0, 0.0], [0.5, 0.0], seed=0) == (2.0, 2.0)
    assert all(math.isnan(x) for x in _ratio_interval([1.0, 1.0], [0.0, 0.0], seed=0))


def test_the_ratio_interval_is_the_seeded_percentile_bootstrap_over_episodes() -> None:
    hits = [0.9, 0.2, 0.6, 0.4, 0.8, 0.1, 0.5]
    chances = [0.3, 0.25, 0.5, 0.2, 0.4, 0.3, 0.35]
    # the procedure written out: 2000 resamples of the 7 episodes, with replacement, drawn
    # from the seed; the ratio of the means in each; its 2.5th and 97.5th percentiles
    rng = np.random.default_rng(5)
    ratios = []
    for _ in range(BOOTSTRAP):
        pick = rng.integers(0, len(hits), size=len(hits))
        ratios.append(sum(hits[i] for i in pick) / sum(chances[i] for i in pick))
    low, high = _ratio_interval(hits, chances, seed=5)
    assert low == pytest.approx(np.percentile(ratios, 2.5))
    assert high == pytest.approx(np.percentile(ratios, 97.5))
    assert low < sum(hits) / sum(chances) < high
    # the seed is the summary's: the same seed, the same interval; another, another
    summaries = []
    for seed in (5, 5, 6):
        agreement = Agreement(seed=seed)
        for h, c in zip(hits, chances):
            agreement.start_episode()
            agreement.episodes[-1]["tokens"].append((h, c))
        summaries.append(agreement.summary()["tokens"])
    assert summaries[0]["ratio_low"] == pytest.approx(low)
    assert summaries[0]["ratio_high"] == pytest.approx(high)
    assert (summaries[1]["ratio_low"], summaries[1]["ratio_high"]) == (low, high)
    assert (summaries[2]["ratio_low"], summaries[2]["ratio_high"]) != (low, high)


def test_relevance_is_not_measured_on_an_unknown_scenario() -> None:
    assert relevance_env("DriveAttention/Nowhere-v0") is None
    for scenario in ("Merge", "Roundabout", "Intersection"):
        assert relevance_env(f"DriveAttention/{scenario}-v0") == (
            f"DriveAttention/Batched{scenario}-v0"
        )


INTERSECTION = "DriveAttention/BatchedIntersection-v0"


def _place(core, slot: int, arm: int, s: float, speed: float) -> None:
    """An IDM vehicle in ``slot`` on the approach lane of ``arm``, ``s`` [m] along it, going
    straight across (as in the relevance tests)."""
    t, tables = core.traffic, core.traffic_spec._lanes(core.road)
    lane = tables["approach"][arm].reshape(1)
    core.traffic_spec._put(t, core.sim, slot, lane, torch.tensor([s]), torch.tensor([speed]))
    t.kind[0, slot] = IDM
    t.delta[0, slot] = 4.0
    t.route_lock[0, slot] = True
    t.destination[0, slot] = tables["destination"][(arm + 2) % 4]
    t.length[0, slot], t.width[0, slot] = 5.0, 2.0
    t.check_collisions[0, slot] = True
    t.crashed[0, slot] = False
    t.road_order[0, slot] = slot
    core.sim.update_lanes(t)
    t.target_lane[0, slot] = t.lane[0, slot]


def test_a_judge_is_attached_only_to_one_discrete_batched_env(one_thread) -> None:
    continuous = gym.make(INTERSECTION, action="continuous")
    assert RelevanceJudge.attach(continuous) is None
    continuous.close()
    assert RelevanceJudge.attach(gym.make("CartPole-v1")) is None  # no core to ask
    core = BatchedDrive(scenario="intersection", num_envs=2)  # discrete, but two envs
    assert RelevanceJudge.attach(SimpleNamespace(unwrapped=SimpleNamespace(core=core))) is None
    env = gym.make(INTERSECTION)
    judge = RelevanceJudge.attach(env)
    assert isinstance(judge, RelevanceJudge)
    assert judge.teacher.core is env.unwrapped.core
    assert (judge.radius, judge.frames, judge.seconds) == (None, 0, 0.0)
    env.close()


def test_the_judge_asks_the_teacher_now_or_of_a_snapshot_and_counts_its_cost(one_thread) -> None:
    # the ego alone but for a vehicle crossing from its left timed to meet it at the junction
    # (relevant: the ego must yield) and one far behind it on its own approach (not relevant)
    env = gym.make(INTERSECTION, sim={"spawn_probability": 0.0})
    env.reset(seed=0)
    core = env.unwrapped.core
    core.traffic.kind[:, 1:] = EMPTY
    _place(core, 1, arm=1, s=70.0, speed=8.0)
    _place(core, 2, arm=0, s=20.0, speed=5.0)
    judge = RelevanceJudge(core)
    live = judge.now()
    assert live.slots(0) == [1]
    state = judge.snapshot()
    assert state.traffic.x.shape[0] == 1, "one copy of the one environment"
    # the live environment moves on without the crossing vehicle; the snapshot keeps it
    env.step(1)
    core.traffic.kind[0, 1] = EMPTY
    saved = judge.now(state)
    assert saved.slots(0) == [1] and saved.relevant.shape[0] == 1
    gone = judge.now()
    assert gone.slots(0) == []
    assert judge.frames == 3
    assert judge.seconds == pytest.approx(live.seconds + saved.seconds + gone.seconds)
    assert judge.seconds > 0
    # a radius of 1 m around the ego holds no object to test
    near = RelevanceJudge(core, radius=1.0).now(state)
    assert not near.tested.any() and not near.relevant.any()
    env.close()


def test_the_judge_s_mask_is_the_relevant_slots_and_light_pixels() -> None:
    def rel(slots: list[int], light: bool) -> Relevance:
        relevant = torch.zeros(1, 6, dtype=torch.bool)
        relevant[0, slots] = True
        flag = torch.tensor([light])
        return Relevance(relevant, relevant, flag, flag, torch.zeros(1), 0, 0.0)

    ids = np.full((8, 8), -1, dtype=np.int16)
    ids[0:2, 0:2], ids[6:8, 0:3] = 1, 4
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[0:2, 6:8] = CLASS_ID["traffic_light"]
    info = {"object_ids": ids, "road_labels": labels}
    assert RelevanceJudge.mask(rel([4], False), {"road_labels": labels}) is None
    mask = RelevanceJudge.mask(rel([4], False), info)
    assert mask.sum() == 6 and mask[6:8, 0:3].all()
    mask = RelevanceJudge.mask(rel([1], True), info)
    assert mask.sum() == 8 and mask[0:2, 0:2].all() and mask[0:2, 6:8].all()
    # no road labels in the frame: the light has no pixels
    mask = RelevanceJudge.mask(rel([1], True), {"object_ids": ids})
    assert mask.sum() == 4


def test_the_report_lines_give_each_part_its_numbers_or_say_there_were_none() -> None:
    part = {"frames": 12, "episodes": 3, "hit": 0.5, "chance": 0.25, "ratio": 2.0}
    summary = {
        "frames": 40,
        "relevant_frames": 12,
        "tokens": {**part, "ratio_low": 1.256, "ratio_high": 3.004},
        "patches": {**part, "frames": 0, "episodes": 0},
    }
    assert format_agreement(summary).split("\n") == [
        "attention on what matters: 12 of 40 frames have relevant objects (the teacher's "
        "choice changes without them)",
        "  object tokens: top-attended on a relevant object 0.50 (chance 0.25), ratio 2.00 "
        "[1.26, 3.00] over 12 frames, 3 episodes",
        "  camera patches: no frame with a relevant object to find",
    ]
    # the other way round: the tokens' line says none, the patches' still follows
    summary["tokens"], summary["patches"] = summary["patches"], summary["tokens"]
    lines = format_agreement(summary).split("\n")
    assert lines[1] == "  object tokens: no frame with a relevant object to find"
    assert lines[2].startswith("  camera patches: top-attended on a relevant object 0.50")
