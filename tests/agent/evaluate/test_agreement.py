"""Attention-relevance agreement: the most-attended token or patch against the relevant objects,
and the videos' outline of them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drive_attention.agent.evaluate.agreement import (
    Agreement,
    patch_score,
    relevance_env,
    relevant_pixels,
    token_score,
    top_hit,
)
from drive_attention.agent.evaluate.video import RELEVANT_COLOUR, FrameText, render_frame
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
