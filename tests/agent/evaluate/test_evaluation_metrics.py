"""The headline numbers (success, collision, speed, length, return) computed from episodes whose
outcome is written down in advance, so every summary value is known without the code under test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from drive_attention.agent.evaluate.attribution import Attribution
from drive_attention.agent.evaluate.episodes import (
    FAITHFUL_RATIO,
    SUMMARY_KEYS,
    EpisodeResult,
    EvalReport,
    describe_action,
    faithfulness_text,
    format_table,
    table_rows,
    video_caption,
)
from drive_attention.agent.evaluate.mp4 import read_video
from drive_attention.agent.evaluate.recording import Decision, _frame, _legend
from drive_attention.agent.evaluate.rollout import evaluate, run_episode
from drive_attention.agent.evaluate.video import PANEL_WIDTH
from drive_attention.agent.policies.base import (
    AttentionView,
    IdlePolicy,
    RandomPolicy,
    TrainedPolicy,
)
from drive_attention.envs.contract import CLASS_ID

# seed -> (length, reward per step, collision, off_road, success, distance [m], duration [s])
SCRIPTS: dict[int, tuple[int, float, bool, bool, bool, float, float]] = {
    100: (3, 0.5, True, False, False, 60.0, 3.0),  # crashes at step 3
    101: (5, 1.0, False, False, True, 125.0, 5.0),  # arrives
    102: (2, -1.0, False, True, False, 20.0, 2.0),  # leaves the road
    103: (4, 0.25, True, False, False, 48.0, 4.0),  # crashes at step 4
}


class ScriptedEnv(gym.Env):
    """Plays back the episode :data:`SCRIPTS` names for its reset seed, whatever the actions."""

    observation_space = spaces.Dict(
        camera=spaces.Box(0, 255, (8, 8, 3), np.uint8),
        sensors=spaces.Box(-np.inf, np.inf, (2,), np.float32),
    )
    action_space = spaces.Discrete(5)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.script, self.t = SCRIPTS[int(seed)], 0
        return self._obs(), {"speed": 0.0}

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "camera": np.zeros((8, 8, 3), np.uint8),
            "sensors": np.array([self.t, 0.0], np.float32),
        }

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        length, reward, collision, off_road, success, distance, duration = self.script
        self.t += 1
        info: dict[str, Any] = {"speed": 99.0, "reward_terms": {"progress": reward}}
        done = self.t == length
        if done:
            info.update(
                collision=collision,
                off_road=off_road,
                success=success,
                distance=distance,
                mean_speed=distance / duration,
            )
        return self._obs(), reward, done, False, info

    def render(self) -> None:
        return None


class Idle:
    name = "idle"

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> int:
        return 1

    def attention(self, obs: dict[str, np.ndarray]) -> None:
        return None


def test_every_summary_figure_from_scripted_episodes() -> None:
    report = evaluate(ScriptedEnv(), Idle(), episodes=4, seed=100)
    summary = report.summary()
    assert set(SUMMARY_KEYS) <= set(summary) | {"episodes"}
    returns = [3 * 0.5, 5 * 1.0, 2 * -1.0, 4 * 0.25]  # 1.5, 5.0, -2.0, 1.0
    assert summary["mean_return"] == pytest.approx(np.mean(returns))  # 1.375
    assert summary["std_return"] == pytest.approx(np.std(returns))
    assert summary["success_rate"] == pytest.approx(1 / 4)
    assert summary["collision_rate"] == pytest.approx(2 / 4)
    assert summary["mean_speed"] == pytest.approx(np.mean([20.0, 25.0, 10.0, 12.0]))  # 16.75
    assert summary["mean_length"] == pytest.approx(np.mean([3, 5, 2, 4]))  # 3.5
    rows = [e.row() for e in report.episodes]
    assert [r["seed"] for r in rows] == [100, 101, 102, 103]
    assert [r["off_road"] for r in rows] == [False, False, True, False]
    assert [r["distance"] for r in rows] == [60.0, 125.0, 20.0, 48.0]
    assert [r["reward_terms"]["progress"] for r in rows] == pytest.approx(returns)


def test_summary_of_a_subset_of_episodes() -> None:
    """Seeds run consecutively from the given one: two episodes from 102 are 102 and 103."""
    summary = evaluate(ScriptedEnv(), Idle(), episodes=2, seed=102).summary()
    assert summary["collision_rate"] == pytest.approx(0.5)  # off road in the other one
    assert summary["success_rate"] == 0.0
    assert summary["mean_return"] == pytest.approx((-2.0 + 1.0) / 2)
    assert summary["mean_length"] == pytest.approx(3.0)


# ------------------------------------------------------------------ episodes the env leaves bare


class BareEnv(gym.Env):
    """Three steps whose info names no outcome at all; the speed is missing on the middle step.
    Ends by truncation (time limit), and refuses to be stepped past its end."""

    observation_space = ScriptedEnv.observation_space
    action_space = spaces.Discrete(5)
    SPEEDS = (10.0, None, 20.0)

    def __init__(self) -> None:
        self.actions: list[Any] = []
        self.seeds: list[int | None] = []

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.seeds.append(seed)
        return ScriptedEnv._obs(self), {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        assert self.t < 3, "stepped after the episode was truncated"
        self.actions.append(action)
        speed = self.SPEEDS[self.t]
        self.t += 1
        info = {} if speed is None else {"speed": speed}
        return ScriptedEnv._obs(self), 1.0, False, self.t == 3, info


def test_outcomes_the_env_does_not_report_count_as_not_happened() -> None:
    """No success/collision/off-road/distance in the final info: all false/zero; no mean speed:
    the mean of the per-step speeds, a step without one counting as standing still."""
    env = BareEnv()
    (result,) = evaluate(env, IdlePolicy(3), episodes=1, seed=5).episodes
    assert env.seeds == [5] and len(env.actions) == 3  # the truncation ended the episode
    assert result.length == 3 and result.episode_return == pytest.approx(3.0)
    assert result.success is False and result.collision is False and result.off_road is False
    assert result.distance == 0.0
    assert result.mean_speed == pytest.approx((10.0 + 0.0 + 20.0) / 3)
    assert result.reward_terms == {}
    # no video: nothing about attention or the video is claimed
    assert result.video is None and result.camera_attention is None
    assert result.attention_class_mass is None and result.attention_class_lift is None


# ------------------------------------------------------------------ the built-in baseline policies


def test_idle_policy_sends_the_idle_action_every_step() -> None:
    env = BareEnv()
    report = evaluate(env, IdlePolicy(1), episodes=2, seed=0)
    assert report.policy == "idle"
    assert env.actions == [1] * 6 and all(type(a) is int for a in env.actions)


def test_random_policy_is_seeded_by_the_episode_seed() -> None:
    """Episode k of seed S draws the action space's samples seeded with S + k: a rerun gives the
    same actions, and they are the samples of an independently seeded copy of the space."""
    env = BareEnv()
    report = evaluate(env, RandomPolicy(spaces.Discrete(5)), episodes=2, seed=40)
    assert report.policy == "random" and env.seeds == [40, 41]
    expected = []
    for seed in (40, 41):
        space = spaces.Discrete(5)
        space.seed(seed)
        expected += [int(space.sample()) for _ in range(3)]
    assert env.actions == expected
    again = BareEnv()
    evaluate(again, RandomPolicy(spaces.Discrete(5)), episodes=2, seed=40)
    assert again.actions == expected


class SeedRecorder(Idle):
    def __init__(self) -> None:
        self.seeds: list[int] = []

    def reset(self, seed: int) -> None:
        self.seeds.append(seed)


def test_policy_is_reset_with_each_episode_seed() -> None:
    policy = SeedRecorder()
    evaluate(BareEnv(), policy, episodes=3, seed=7)
    assert policy.seeds == [7, 8, 9]


class BoxEnv(BareEnv):
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        assert self.action_space.contains(action), action
        return super().step(action)


class Steerer(Idle):
    def act(self, obs: dict[str, np.ndarray]) -> Any:
        return [[0.25, -0.5]]  # a batch of one, float64: as a model might return it


def test_continuous_actions_reach_the_env_in_its_action_space() -> None:
    env = BoxEnv()
    evaluate(env, Steerer(), episodes=1, seed=0)
    assert len(env.actions) == 3
    for action in env.actions:
        assert action.dtype == np.float32 and action.shape == (2,)
        np.testing.assert_array_equal(action, [0.25, -0.5])


def test_discrete_actions_reach_the_env_as_plain_ints() -> None:
    class ArrayIdle(Idle):
        def act(self, obs: dict[str, np.ndarray]) -> Any:
            return np.array([[2]])  # what a vectorised model's predict gives

    env = BareEnv()
    evaluate(env, ArrayIdle(), episodes=1, seed=0)
    assert env.actions == [2, 2, 2] and all(type(a) is int for a in env.actions)


# ------------------------------------------------------------------------- action captions


def test_describe_action() -> None:
    names = {1: "IDLE", 3: "FASTER"}
    assert describe_action(np.array([3]), names) == "FASTER"
    assert describe_action(np.array([[1]]), names) == "IDLE"
    assert describe_action(3, names) == "FASTER"
    assert describe_action(4, names) == "4"  # an index without a name
    assert describe_action(np.int64(2), None) == "2"  # no names: the number itself
    assert describe_action(np.array([0.123, -0.3]), names) == "steer +0.12 accel -0.30"
    assert describe_action(np.array([[-0.5, 1.0]]), None) == "steer -0.50 accel +1.00"
    assert describe_action(np.array([0.123, 0.456, 1.0]), None) == "[0.12 0.46 1.  ]"


# --------------------------------------------------------------------- reports, JSON, tables


def _episode(k: int, ret: float, length: int, success: bool, collision: bool, speed: float):
    return EpisodeResult(
        episode=k,
        seed=100 + k,
        episode_return=ret,
        length=length,
        success=success,
        collision=collision,
        off_road=False,
        mean_speed=speed,
        distance=speed * length,
    )


TRAINED = EvalReport(
    "trained",
    "DriveAttention/Highway-v0",
    100,
    [_episode(0, 1.0, 10, True, False, 20.0), _episode(1, 3.0, 20, False, True, 25.0)],
)
RANDOM = EvalReport("random", "carla", 7, [_episode(0, -0.5, 3, False, True, 7.5)])


def test_json_report_round_trip(tmp_path) -> None:
    TRAINED.episodes[1].video = "videos/ep01.mp4"
    try:
        path = TRAINED.write_json(tmp_path / "eval" / "final.json", extra={"step": 64})
    finally:
        TRAINED.episodes[1].video = None
    text = path.read_text()
    assert text.endswith("}\n") and '\n  "mean_return": 2.0,\n' in text  # indented, readable
    data = json.loads(text)
    assert data["policy"] == "trained" and data["env_id"] == "DriveAttention/Highway-v0"
    assert data["seed"] == 100 and data["n_episodes"] == 2 and data["step"] == 64
    assert data["mean_return"] == 2.0 and data["std_return"] == 1.0
    assert data["success_rate"] == 0.5 and data["collision_rate"] == 0.5
    assert data["mean_speed"] == 22.5 and data["mean_length"] == 15.0
    first, second = data["episodes"]
    assert first["return"] == 1.0 and second["return"] == 3.0 and "episode_return" not in first
    assert first["seed"] == 100 and second["length"] == 20 and second["collision"] is True
    assert first["video"] is None and second["video"] == "videos/ep01.mp4"
    assert first["distance"] == 200.0 and first["reward_terms"] == {}


def test_evaluate_without_env_id_reports_an_empty_one() -> None:
    report = evaluate(BareEnv(), Idle(), episodes=1, seed=0)
    assert report.env_id == "" and report.to_json()["env_id"] == ""


def test_table_rows() -> None:
    TRAINED.episodes[1].video = "videos/ep01.mp4"
    try:
        rows = table_rows(TRAINED)
    finally:
        TRAINED.episodes[1].video = None
    assert rows == [
        [0, 100, 1.0, 10, True, False, None],
        [1, 101, 3.0, 20, False, True, Path("videos/ep01.mp4")],
    ]


def test_format_table() -> None:
    expected = "\n".join(
        [
            "Evaluation",
            "-" * 82,
            "policy   env         episodes        return  success  collision  speed m/s  length",
            "-" * 82,
            "trained  Highway-v0         2   2.00 ± 1.00      50%        50%       22.5    15.0",
            "random   carla              1  -0.50 ± 0.00       0%       100%        7.5     3.0",
            "-" * 82,
        ]
    )
    assert format_table([TRAINED, RANDOM]) == expected
    assert format_table([RANDOM], title="Final").splitlines()[0] == "Final"


# ------------------------------------------------------------- attention videos (scripted)

ROAD, VEHICLE = CLASS_ID["road"], CLASS_ID["vehicle"]
LABELS = np.full((8, 8), ROAD, np.uint8)
LABELS[:2, :2] = VEHICLE  # a vehicle in the top-left 2x2 pixels, road elsewhere
LEAD = LABELS == VEHICLE


class LabelledEnv(gym.Env):
    """Two steps (reward +0.5 at 10 m/s, then -0.25 at 20 m/s), road labels on every frame; the
    camera's brightness and the first sensor count the steps. The reset info has no speed."""

    observation_space = ScriptedEnv.observation_space
    action_space = spaces.Discrete(5)
    REWARDS = (0.5, -0.25)
    SPEEDS = (10.0, 20.0)

    def __init__(self) -> None:
        self.actions: list[Any] = []

    def _obs(self) -> dict[str, np.ndarray]:
        camera = np.full((8, 8, 3), 40 * self.t, np.uint8)
        camera[:, :4, 0] = 200  # something to see under the heat-map
        return {"camera": camera, "sensors": np.array([self.t, 0.0], np.float32)}

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {"road_labels": LABELS, "lead_vehicle_mask": LEAD}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        assert self.t < 2, "stepped after the episode was truncated"
        self.actions.append(action)
        self.t += 1
        info = {"speed": self.SPEEDS[self.t - 1], "road_labels": LABELS, "lead_vehicle_mask": LEAD}
        return self._obs(), self.REWARDS[self.t - 1], False, self.t == 2, info


def looker_view(t: int) -> AttentionView:
    """On even steps the query looks at patch (0, 0), on odd ones at patch (1, 1); the share of
    attention on the camera is 0.5 + 0.1 t."""
    share = 0.5 + 0.1 * t
    camera = np.zeros((2, 2))
    camera[(0, 0) if t % 2 == 0 else (1, 1)] = share
    return AttentionView(camera, np.array([0.7, 0.3]) * (1 - share), ("ego", "route"), share)


class Looker(Idle):
    name = "looker"

    def act(self, obs: dict[str, np.ndarray]) -> Any:
        return np.array([3])

    def attention(self, obs: dict[str, np.ndarray]) -> AttentionView:
        return looker_view(int(obs["sensors"][0]))


class RecordingWriter:
    """Stands in for the mp4 writer: keeps the frames (uncompressed) and the fps asked for."""

    made: ClassVar[list[RecordingWriter]] = []

    def __init__(self, path: Path, fps: int = 8) -> None:
        self.path, self.fps, self.frames = Path(path), fps, []
        RecordingWriter.made.append(self)

    def append(self, frame: np.ndarray) -> None:
        self.frames.append(frame.copy())

    def close(self) -> Path | None:
        return self.path if self.frames else None


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[RecordingWriter]:
    import drive_attention.agent.evaluate.recording

    RecordingWriter.made = []
    monkeypatch.setattr(drive_attention.agent.evaluate.recording, "VideoWriter", RecordingWriter)
    return RecordingWriter


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The lines of text of each frame the recorder renders, in the order they are drawn:
    what a viewer reads, checked against values worked out by hand (the pixels of the
    renderer itself are tested in test_video.py)."""
    import drive_attention.agent.evaluate.recording
    import drive_attention.agent.evaluate.video

    frames: list[list[str]] = []
    text, render = (
        drive_attention.agent.evaluate.video._text,
        drive_attention.agent.evaluate.video.render_frame,
    )

    def reading(image: np.ndarray, line: str, *args: Any, **kwargs: Any) -> None:
        frames[-1].append(line)
        text(image, line, *args, **kwargs)

    def rendering(*args: Any, **kwargs: Any) -> np.ndarray:
        frames.append([])
        return render(*args, **kwargs)

    monkeypatch.setattr(drive_attention.agent.evaluate.video, "_text", reading)
    monkeypatch.setattr(drive_attention.agent.evaluate.recording, "render_frame", rendering)
    return frames


def test_video_frames_show_step_action_reward_and_attention(tmp_path, recorder, drawn) -> None:
    """Frame t is drawn before step t's action (the last one after the final step, captioned
    "(end)"), with the speed of the info it was observed with, the previous step's reward, the
    return so far, the policy's attention at that observation, and the share of attention per
    road class in the legend (patches of 2x2 px: patch (0, 0) is all vehicle, (1, 1) all road).
    The env exposes no simulation steps, so each decision's frame is held for fps / policy
    frequency (1 Hz here) frames: the video plays at the episode's pace; the scene is drawn at
    256 px (scale 32 for the 8 px camera) and the panel is headed by the episode's outcome."""
    env = LabelledEnv()
    report = evaluate(
        env,
        Looker(),
        episodes=1,
        seed=0,
        video_dir=tmp_path,
        video_prefix="looker_",
        action_names={3: "FASTER"},
        fps=5,
        scale=3,
        cell_px=(2, 2),
    )
    (writer,) = recorder.made
    assert writer.path == tmp_path / "looker_ep00.mp4" and writer.fps == 5
    assert env.actions == [3, 3]
    assert len(writer.frames) == 3 * 5
    for t in range(3):  # held: the 5 frames of a decision are the same
        for repeat in writer.frames[5 * t + 1 : 5 * t + 5]:
            np.testing.assert_array_equal(repeat, writer.frames[5 * t])
    # frame t: the camera share 0.5 + 0.1 t, the rest 70/30 on the ego and route tokens; the
    # speed of the info frame t came with (none at the reset), the reward of the step before,
    # the return so far; the attended patch's road class (vehicle on even steps, road on odd)
    title = "episode 0: no success, return 0.25"
    bar = ["even", "8x"]  # the colour bar's ends
    assert drawn == [
        [title, "camera  50% | sensors  50%", *bar, "ego", "35.0%", "route", "15.0%",
         "step 0", "action FASTER", "speed   0.0 m/s", "reward +0.00", "return +0.00",
         "attention by road element", "vehicle      100.0%"],
        [title, "camera  60% | sensors  40%", *bar, "ego", "28.0%", "route", "12.0%",
         "step 1", "action FASTER", "speed  10.0 m/s", "reward +0.50", "return +0.50",
         "attention by road element", "road         100.0%"],
        [title, "camera  70% | sensors  30%", *bar, "ego", "21.0%", "route", "9.0%",
         "step 2", "action (end)", "speed  20.0 m/s", "reward -0.25", "return +0.25",
         "attention by road element", "vehicle      100.0%"],
    ]  # fmt: skip
    for t, frame in enumerate(writer.frames[::5]):
        assert frame.shape[0] >= 256 and frame.shape[1] == 256 + PANEL_WIDTH
        # the 8 px camera drawn 32x: grey 40 t, its left half red (200); untouched outside the
        # grid of 2x2 px patches (the top-left 128 px)
        grey, red = np.array([40 * t] * 3), np.array([200, 40 * t, 40 * t])
        np.testing.assert_array_equal(frame[200, 200], grey, err_msg=f"frame {t}")
        np.testing.assert_array_equal(frame[200, 40], red, err_msg=f"frame {t}")
        # the attended patch (0, 0) on even steps, (1, 1) on odd ones, is tinted; the other not
        hot, cold = ((32, 32), (96, 96)) if t % 2 == 0 else ((96, 96), (32, 32))
        assert np.abs(frame[hot].astype(int) - red).sum() > 20, f"frame {t}"
        assert np.abs(frame[cold].astype(int) - red).sum() < 10, f"frame {t}"
    (result,) = report.episodes
    assert result.video == str(tmp_path / "looker_ep00.mp4")
    # the camera share of the frames an action was chosen on (0.5 and 0.6)
    assert result.camera_attention == pytest.approx(0.55)
    # all three frames: vehicle, road, vehicle; the grid covers the top-left 4x4 pixels, of
    # which the vehicle is a quarter
    assert result.attention_class_mass == pytest.approx({"road": 1 / 3, "vehicle": 2 / 3})
    assert result.attention_class_lift == pytest.approx(
        {"road": (1 / 3) / (3 / 4), "vehicle": (2 / 3) / (1 / 4)}
    )


def test_attention_spread_over_the_whole_frame_without_cell_size(tmp_path, recorder, drawn) -> None:
    """Without ``cell_px`` the 2x2 grid covers the whole 8x8 frame: patch (0, 0) is then a
    quarter vehicle, patch (1, 1) all road."""
    (result,) = evaluate(LabelledEnv(), Looker(), 1, 0, video_dir=tmp_path).episodes
    vehicle = (0.25 + 0.0 + 0.25) / 3
    assert result.attention_class_mass == pytest.approx({"road": 1 - vehicle, "vehicle": vehicle})
    assert result.attention_class_lift["vehicle"] == pytest.approx(vehicle / (4 / 64))
    (writer,) = recorder.made
    assert writer.path == tmp_path / "ep00.mp4" and writer.fps == 8  # the defaults
    assert writer.frames[0].shape[1] == 256 + PANEL_WIDTH  # at least 256 px of scene
    # the caption names the action by its number when no names are given
    assert drawn[0][8:] == ["step 0", "action 3", "speed   0.0 m/s", "reward +0.00",
                            "return +0.00", "attention by road element", "road         75.0%",
                            "vehicle      25.0%"]  # fmt: skip
    # patch (0, 0) is the top-left 4x4 camera px, 128 px drawn: tinted at 100 px (in a 2x2 px
    # patch's grid, 64 px drawn, that would be the unattended patch (1, 1)); patch (1, 1) not
    frame = writer.frames[0].astype(int)
    assert np.abs(frame[100, 100] - [200, 0, 0]).sum() > 20
    np.testing.assert_array_equal(frame[200, 200], [0, 0, 0])


def writer_camera(t: int) -> np.ndarray:
    camera = np.full((8, 8, 3), 40 * t, np.uint8)
    camera[:, :4, 0] = 200
    return camera


def test_only_the_first_video_episodes_are_filmed(tmp_path, recorder) -> None:
    report = evaluate(LabelledEnv(), Looker(), 3, 0, video_dir=tmp_path, video_episodes=2)
    assert [w.path.name for w in recorder.made] == ["ep00.mp4", "ep01.mp4"]
    assert [e.video is not None for e in report.episodes] == [True, True, False]
    # an episode without a video claims no attention figures
    assert report.episodes[2].camera_attention is None
    assert report.episodes[2].attention_class_mass is None
    default = evaluate(LabelledEnv(), Looker(), 2, 0, video_dir=tmp_path / "one")
    assert [e.video is not None for e in default.episodes] == [True, False]


def test_frames_of_a_policy_without_attention(tmp_path, recorder, drawn) -> None:
    """The plain camera frame and caption; nothing about attention in the episode."""
    (result,) = evaluate(ScriptedEnv(), Idle(), 1, 102, video_dir=tmp_path, scale=2).episodes
    (writer,) = recorder.made
    assert len(writer.frames) == (2 + 1) * 8  # each decision held for 8 frames (8 fps, 1 Hz)
    # each decision's frame: the black camera, the step's figures, no attention
    title, none = "episode 0: off road, return -2.00", "no attention maps for this policy"
    assert drawn == [
        [title, none, "step 0", "action 1", "speed   0.0 m/s", "reward +0.00", "return +0.00"],
        [title, none, "step 1", "action 1", "speed  99.0 m/s", "reward -1.00", "return -1.00"],
        [title, none, "step 2", "action (end)", "speed  99.0 m/s", "reward -1.00",
         "return -2.00"],
    ]  # fmt: skip
    for frame in writer.frames:
        assert frame.shape == (256, 256 + PANEL_WIDTH, 3) and frame[:, :256].max() == 0
    assert result.camera_attention is None and result.attention_class_mass is None
    assert result.video == str(tmp_path / "ep00.mp4")


def test_attention_without_road_labels_or_camera_share(tmp_path, recorder, drawn) -> None:
    """No road labels: no per-class figures and no legend; a view without a camera share
    leaves the episode's camera attention unknown."""

    class SensorLooker(Idle):
        def attention(self, obs: dict[str, np.ndarray]) -> AttentionView:
            return AttentionView(None, np.array([1.0]), ("ego",), None)

    (result,) = evaluate(ScriptedEnv(), SensorLooker(), 1, 102, video_dir=tmp_path).episodes
    assert result.camera_attention is None and result.attention_class_mass is None
    # the sensor token's bar, and neither a camera share nor a legend
    assert drawn[0] == ["episode 0: off road, return -2.00", "even", "8x", "ego", "100.0%",
                        "step 0", "action 1", "speed   0.0 m/s", "reward +0.00",
                        "return +0.00"]  # fmt: skip
    assert recorder.made[0].frames[0][:, :256].max() == 0  # the black camera, untouched


def _decision(t: int, info: dict[str, Any]) -> Decision:
    camera = writer_camera(t)
    return Decision(t, camera, np.array([t, 0.0]), info, looker_view(t), "x", 0.0, 0.0)


def test_legend_adds_lead_vehicle_attention_to_the_attribution() -> None:
    """A decision's attention on the vehicle ahead goes into the attribution it is given, and
    its per-class legend is that frame's alone."""
    attribution = Attribution()
    info = {"road_labels": LABELS, "lead_vehicle_mask": LEAD}
    assert _legend(_decision(0, info), attribution, (2, 2)) == ["vehicle      100.0%"]
    assert _legend(_decision(1, info), attribution, (2, 2)) == ["road         100.0%"]
    assert _legend(_decision(1, {}), attribution, (2, 2)) == []  # no labels: no legend
    summary = attribution.summary()
    assert summary["frames"] == 2
    assert summary["lead_vehicle_mass"] == pytest.approx(0.5)  # all of it, then none
    assert summary["lead_vehicle_lift"] == pytest.approx(0.5 / (4 / 16))


def test_real_mp4_of_an_episode(tmp_path) -> None:
    """The video file itself: each step and the last held for fps / 1 Hz frames, at the fps
    asked for."""
    import cv2

    report = evaluate(LabelledEnv(), Looker(), 2, 0, video_dir=tmp_path, fps=4, video_prefix="t_")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t_ep00.mp4"]
    frames = read_video(tmp_path / "t_ep00.mp4")
    assert frames.shape[0] == 3 * 4 and frames.shape[2] == 256 + PANEL_WIDTH
    capture = cv2.VideoCapture(str(tmp_path / "t_ep00.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(4.0)
    capture.release()
    assert report.episodes[0].video == str(tmp_path / "t_ep00.mp4")


# ------------------------------------------------------------- a real (untrained) SB3 policy


@pytest.fixture(scope="module")
def highway() -> gym.Env:
    from drive_attention import envs  # noqa: F401  (registers the DriveAttention envs)

    env = gym.make("DriveAttention/Highway-v0", duration=4.0, road_labels=True)
    yield env
    env.close()


def _ppo(env: gym.Env, name: str | None) -> Any:
    from stable_baselines3 import PPO

    from drive_attention.models import ExtractorConfig, policy_kwargs

    kwargs = {}
    if name is not None:
        config = ExtractorConfig(name=name, dim=16, heads=2, features_dim=24)
        kwargs = policy_kwargs(config, env.unwrapped.sensor_names)
    return PPO(
        "MultiInputPolicy",
        env,
        n_steps=16,
        batch_size=16,
        policy_kwargs=kwargs,
        device="cpu",
        seed=0,
    )


@pytest.fixture(scope="module")
def attention_model(highway: gym.Env) -> Any:
    return _ppo(highway, "attention")


def test_trained_policy_acts_deterministically(highway, attention_model) -> None:
    """The model's deterministic (most likely) action: an untrained policy is nearly uniform, so
    sampled actions would not repeat it step after step."""
    policy = TrainedPolicy(attention_model)
    assert policy.name == "trained"
    obs, _ = highway.reset(seed=3)
    wanted, _ = attention_model.predict(obs, deterministic=True)
    assert all(int(policy.act(obs)) == int(wanted) for _ in range(20))


def test_trained_policy_attention_is_the_query_row(highway, attention_model) -> None:
    """Camera-patch and sensor-token weights of the policy query: they sum to 1, the camera part
    being the camera share."""
    obs, _ = highway.reset(seed=0)
    view = TrainedPolicy(attention_model).attention(obs)
    assert view.camera.ndim == 2 and view.camera.size > 1
    assert view.sensor_labels[0] == "ego" and view.sensors.shape == (len(view.sensor_labels),)
    assert len(view.sensor_labels) > 1
    assert 0.0 < view.camera_share < 1.0
    assert view.camera.sum() == pytest.approx(view.camera_share, abs=1e-5)
    assert view.camera.sum() + view.sensors.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", ["camera_only", "sensors_only"])
def test_single_modality_policy_attention(highway, name) -> None:
    obs, _ = highway.reset(seed=0)
    view = TrainedPolicy(_ppo(highway, name)).attention(obs)
    if name == "camera_only":
        assert view.sensors is None and view.sensor_labels == ()
        assert view.camera.ndim == 2 and view.camera_share == pytest.approx(1.0, abs=1e-5)
    else:
        assert view.camera is None and view.camera_share == pytest.approx(0.0, abs=1e-5)
        assert view.sensors.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", ["combined", None], ids=["combined", "sb3-default"])
def test_policy_without_attention_maps_shows_none(highway, name) -> None:
    obs, _ = highway.reset(seed=0)
    policy = TrainedPolicy(_ppo(highway, name))
    assert policy.attention(obs) is None
    assert policy.act(obs) in range(5)


def test_trained_policy_sees_the_normalised_observation(highway, attention_model) -> None:
    """With the normalisation training learnt, actions and attention come from the normalised
    observation, not the raw one."""
    from drive_attention.models import attention_from_policy

    def normalise(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"camera": 255 - obs["camera"], "sensors": np.clip(obs["sensors"] * 5, -3, 3)}

    obs, _ = highway.reset(seed=1)
    policy = TrainedPolicy(attention_model, normalize_obs=normalise)
    seen = attention_from_policy(attention_model.policy, normalise(obs)).camera_map()[0].numpy()
    raw = attention_from_policy(attention_model.policy, obs).camera_map()[0].numpy()
    assert not np.allclose(seen, raw, atol=1e-4), "the normalisation must matter for this test"
    np.testing.assert_allclose(policy.attention(obs).camera, seen, atol=1e-6)
    wanted, _ = attention_model.predict(normalise(obs), deterministic=True)
    assert int(policy.act(obs)) == int(wanted)
    np.testing.assert_array_equal(policy.prepare(obs)["camera"], 255 - obs["camera"])


def test_trained_policy_on_highway_with_video(highway, attention_model, tmp_path) -> None:
    """A real episode filmed at its pace: 8 frames per 1 Hz decision plus the last held, the
    ones between decisions drawn from the simulation steps (the traffic moves in them); the
    policy's mean camera share recorded, attention per road class summing to 1 over the
    classes on screen."""
    report = evaluate(
        highway, TrainedPolicy(attention_model), 1, 0, env_id="DriveAttention/Highway-v0",
        video_dir=tmp_path, cell_px=(8, 8),
    )  # fmt: skip
    (result,) = report.episodes
    frames = read_video(result.video)
    assert frames.shape[0] == (result.length + 1) * 8 and frames.std() > 5
    scene = frames[:8, :256, :256].astype(int)  # the first decision and the frames after it
    moved = [np.abs(scene[j + 1] - scene[j]).mean() for j in range(7)]
    assert min(moved) > 0.1, "every frame between two decisions shows the traffic moving"
    assert 0.0 < result.camera_attention < 1.0
    assert sum(result.attention_class_mass.values()) == pytest.approx(1.0)
    assert "road" in result.attention_class_lift
    assert report.policy == "trained" and report.env_id == "DriveAttention/Highway-v0"
    # the filmed map's faithfulness is measured on the episode's frames, and said in the caption
    assert result.occlusion_ratio is not None and result.occlusion_ratio > 0
    assert faithfulness_text(result.occlusion_ratio) in video_caption(result)


def test_faithfulness_verdict_follows_the_occlusion_ratio() -> None:
    assert faithfulness_text(None) == ""
    assert faithfulness_text(FAITHFUL_RATIO - 0.1).startswith("MAP NOT FAITHFUL")
    assert faithfulness_text(FAITHFUL_RATIO + 0.1).startswith("map faithful")


def test_smallest_attention_model_shows_both_modalities() -> None:
    """An 8x8 camera with 8 px patches is one patch; two ego sensors are one token: the view
    still has both, and the two weights are the whole query row."""
    from stable_baselines3 import PPO

    from drive_attention.models import ExtractorConfig, policy_kwargs

    config = ExtractorConfig(name="attention", patch=8, dim=16, heads=2, features_dim=24)
    kwargs = policy_kwargs(config, ("ego.speed", "ego.accel"))
    model = PPO("MultiInputPolicy", ScriptedEnv(), n_steps=16, batch_size=16,
                policy_kwargs=kwargs, device="cpu", seed=0)  # fmt: skip
    obs = {"camera": np.full((8, 8, 3), 50, np.uint8), "sensors": np.array([1, 0], np.float32)}
    view = TrainedPolicy(model).attention(obs)
    assert view.camera.shape == (1, 1) and view.sensors.shape == (1,)
    assert view.sensor_labels == ("ego",)
    assert float(view.camera[0, 0]) == pytest.approx(view.camera_share, abs=1e-6)
    assert float(view.camera[0, 0] + view.sensors[0]) == pytest.approx(1.0, abs=1e-5)


def test_run_episode_video_defaults(tmp_path) -> None:
    """Called on its own, one episode is filmed at 8 fps, the scene drawn 256 px across."""
    import cv2

    path = tmp_path / "one.mp4"
    result = run_episode(LabelledEnv(), Looker(), episode=0, seed=0, video_path=path)
    assert result.video == str(path) and result.length == 2
    frames = read_video(path)
    assert frames.shape[0] == 3 * 8 and frames.shape[2] == 256 + PANEL_WIDTH
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(8.0)
    capture.release()


def test_frame_shows_the_decision_and_its_legend(drawn) -> None:
    """Decision 1 of the looker at 12 m/s (reward 0.5, return 2 so far), drawn 2x: its texts,
    the 8 px camera as 16 px, the attended patch (1, 1) tinted, patch (0, 0) not."""
    info = {"road_labels": LABELS, "speed": 12.0}
    view = looker_view(1)
    decision = Decision(1, writer_camera(1), np.array([1.0, 0.0]), info, view, "IDLE", 0.5, 2.0)
    frame = _frame(decision, None, ["road         100.0%"], 2, (2, 2), None, "")
    assert drawn == [
        ["camera  60% | sensors  40%", "even", "8x", "ego", "28.0%", "route", "12.0%",
         "step 1", "action IDLE", "speed  12.0 m/s", "reward +0.50", "return +2.00",
         "attention by road element", "road         100.0%"]
    ]  # fmt: skip
    assert frame.shape[1] == 16 + PANEL_WIDTH
    grey, red = np.array([40, 40, 40]), np.array([200, 40, 40])
    np.testing.assert_array_equal(frame[10, 10], grey)  # camera px (5, 5): outside the grid
    assert np.abs(frame[6, 6].astype(int) - red).sum() > 20  # patch (1, 1)
    assert np.abs(frame[2, 2].astype(int) - red).sum() < 10  # patch (0, 0)


def test_sac_video_is_filmed_without_a_faithfulness_verdict(tmp_path) -> None:
    """The occlusion probe reads PPO's action distribution; a SAC policy's filmed episode gets
    its video and attention, and no verdict (it used to crash the evaluation)."""
    from stable_baselines3 import SAC

    from drive_attention.models import ExtractorConfig, policy_kwargs

    env = gym.make("DriveAttention/Highway-v0", action="continuous", camera_size=(32, 32),
                   duration=2, road_labels=True)  # fmt: skip
    config = ExtractorConfig(name="attention", dim=16, heads=2, features_dim=24)
    kwargs = policy_kwargs(config, env.unwrapped.sensor_names)
    model = SAC("MultiInputPolicy", env, buffer_size=100, policy_kwargs=kwargs, device="cpu",
                seed=0)  # fmt: skip
    report = evaluate(env, TrainedPolicy(model), 1, 0, video_dir=tmp_path, cell_px=(8, 8))
    env.close()
    (result,) = report.episodes
    assert result.video is not None and result.camera_attention is not None
    assert result.occlusion_ratio is None and "faithful" not in video_caption(result).lower()
