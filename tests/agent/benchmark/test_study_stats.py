"""The study's statistics one at a time, on small hand-made inputs whose answers are worked out
here: the interquartile mean and its percentile-bootstrap interval, the trailing mean of a success
curve, the band of learning curves on a grid, success at equal wall time, and the parts of
:func:`aggregate` that the hand-made study of ``test_study_report.py`` does not reach (an arm with
no finished run, runs without ablations or with a missing one, an unmeasured env rate, the
attention-relevance agreement, the signalised scenario's attribution)."""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Any

import numpy as np
import pytest

from drive_attention.agent.benchmark import (
    EVAL_METRICS,
    BenchmarkConfig,
    EvalSpec,
    ScenarioSpec,
    aggregate,
    curve_band,
    iqm,
    iqm_interval,
)
from drive_attention.agent.benchmark.stats import at_equal_time, smooth

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}  # two-sided 95% Student-t quantile by df
NAN = math.nan


def t_half(values: list[float]) -> float:
    """Half-width of the 95% Student-t interval of the mean, by hand."""
    n = len(values)
    return T95[n - 1] * statistics.stdev(values) / math.sqrt(n)


def trimmed_mean(values: list[float]) -> float:
    """The interquartile mean by its definition: floor(n / 4) runs cut from each end."""
    cut = len(values) // 4
    return statistics.mean(sorted(values)[cut : len(values) - cut])


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


# ----------------------------------------------------------------------------- IQM
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([4.0, 1.0, 3.0, 2.0], 2.5),  # 4 runs: the best and the worst cut
        ([9.0, 0.0, 5.0, 1.0, 2.0, 3.0, 4.0], 3.0),  # 7 runs: floor(1.75) = 1 cut from each end
        ([8, 1, 7, 2, 6, 3, 5, 4], 4.5),  # 8 runs (integers): 2 cut from each end
        ([2.0, 7.0, 3.0], 4.0),  # 3 runs: none cut
        ([5.0], 5.0),
    ],
)
def test_the_iqm_is_the_mean_of_the_middle_half_of_the_sorted_runs(values, expected):
    assert iqm(values) == pytest.approx(expected)


def test_the_iqm_of_no_runs_is_nan_and_says_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice"
        assert math.isnan(iqm([]))


def test_iqm_interval_leaves_out_unknown_values_and_gives_no_bounds_below_two_runs():
    for values in ([], [None, NAN, math.inf]):
        cell = iqm_interval(values)
        assert list(cell) == ["iqm", "low", "high", "n"]
        assert cell["n"] == 0
        assert all(math.isnan(cell[k]) for k in ("iqm", "low", "high"))
    cell = iqm_interval([None, 3.0, NAN])
    assert list(cell) == ["iqm", "low", "high", "n"]
    assert cell["n"] == 1 and cell["iqm"] == 3.0
    assert math.isnan(cell["low"]) and math.isnan(cell["high"])


def test_two_runs_get_a_bootstrap_interval_spanning_both():
    """Resamples of [0, 1]: (0, 0), (0, 1), (1, 0), (1, 1), the IQM of two runs their mean; a
    quarter of the 2000 resamples give 0 and a quarter 1, more than the 2.5% at each end."""
    cell = iqm_interval([0.0, 1.0])
    assert cell == {"iqm": 0.5, "low": 0.0, "high": 1.0, "n": 2}


def test_the_bootstrap_interval_is_the_2_5_and_97_5_percentiles_of_seeded_resamples():
    """The recipe written out: 2000 resamples of the runs with replacement, drawn with
    ``numpy.random.default_rng(0)`` unless another seed is given, the IQM of each (its own
    trimmed mean here), and the 2.5th and 97.5th percentiles of those."""
    values = [3.0, 9.0, 1.0, 4.0, 7.0, 2.0, 8.0, 5.0]

    def by_hand(seed: int) -> tuple[float, float]:
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(values), size=(2000, len(values)))
        stats = [trimmed_mean([values[i] for i in row]) for row in picks]
        low, high = np.percentile(stats, [2.5, 97.5])
        return float(low), float(high)

    cell = iqm_interval(values)
    assert cell["iqm"] == pytest.approx(4.75)  # (3 + 4 + 5 + 7) / 4: 1, 2 and 8, 9 cut
    assert cell["n"] == 8
    low, high = by_hand(0)
    assert (cell["low"], cell["high"]) == pytest.approx((low, high))
    assert low < 4.75 < high
    other = iqm_interval(values, seed=7)
    assert (other["low"], other["high"]) == pytest.approx(by_hand(7))


# ----------------------------------------------------------------------------- curves
def test_smooth_is_a_trailing_mean_over_the_window():
    out = smooth([1.0, 2.0, 3.0, 4.0, 5.0], window=2)
    assert out.tolist() == pytest.approx([1.0, 1.5, 2.5, 3.5, 4.5])
    out = smooth([1.0, 2.0, 3.0, 4.0, 5.0], window=3)
    assert out.tolist() == pytest.approx([1.0, 1.5, 2.0, 3.0, 4.0])
    # the default window: the last ten points
    assert smooth(list(range(12)))[-1] == pytest.approx(statistics.mean(range(2, 12)))


def test_smooth_ignores_points_with_no_finished_episode():
    out = smooth([NAN, 2.0, NAN, 4.0, NAN, NAN, NAN], window=3)
    expected = [NAN, 2.0, 2.0, 3.0, 4.0, 4.0, NAN]  # the last: three NaN in its window
    assert all(same(a, b) for a, b in zip(out.tolist(), expected, strict=True)), out


def test_curve_band_is_the_mean_and_t_half_width_over_runs_where_every_run_has_data():
    """Three runs on the grid 0..5: a covers 0-4, b only 1-3 (its band is NaN outside, not its
    end values), c 0-4; nothing covers 5."""
    grid = np.arange(6.0)
    curves = [
        ([0, 2, 4], [0, 2, 4]),  # a: y = x
        ([1.0, 3.0], [10.0, 30.0]),  # b: y = 10 x
        ([0.0, 4.0], [2.0, 2.0]),  # c: 2
    ]
    mean, half = curve_band(curves, grid)
    columns = [
        [0.0, 2.0],  # x = 0: a and c
        [1.0, 10.0, 2.0],
        [2.0, 20.0, 2.0],
        [3.0, 30.0, 2.0],
        [4.0, 2.0],  # x = 4: a and c
    ]
    for x, values in enumerate(columns):
        assert half[x] == pytest.approx(t_half(values)), x
    assert half[2] == pytest.approx(4.303 * 6.0)  # deviations -6, 12, -6: sd sqrt(108)
    assert half[0] == pytest.approx(12.706)  # 0 and 2: sd sqrt(2), over sqrt(2)
    assert math.isnan(half[5])
    assert mean[1:4].tolist() == pytest.approx([13 / 3, 8.0, 35 / 3])
    assert math.isnan(mean[0]) and math.isnan(mean[4]) and math.isnan(mean[5])  # b has none


def test_curve_band_of_one_run_is_its_curve_with_no_width():
    mean, half = curve_band([([0.0, 10.0], [1.0, 3.0])], np.array([0.0, 5.0, 10.0]))
    assert mean.tolist() == pytest.approx([1.0, 2.0, 3.0])
    assert all(math.isnan(h) for h in half)


def test_curve_band_is_quiet_on_columns_no_run_reaches_even_where_numpy_raises():
    curves = [([0.0, 1.0], [1.0, 2.0]), ([0.0, 1.0], [3.0, 6.0])]
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, half = curve_band(curves, np.array([0.5, 2.0]))
    assert mean[0] == pytest.approx(3.0)  # 1.5 and 4.5
    assert half[0] == pytest.approx(12.706 * math.sqrt(4.5) / math.sqrt(2))
    assert math.isnan(mean[1]) and math.isnan(half[1])


# ----------------------------------------------------------------------------- equal time
def test_success_before_a_run_s_first_known_point_is_unknown_not_its_first_value():
    """The fast arm ends at 10 s. At 10 s, slow s0 has no known success yet (its first finished
    episodes at 20 s): unknown, left out; slow s1 is known from 10 s on; a run without a
    success curve counts for steps only; one whose success curve is cut short too."""
    runs = {
        "fast": [{"curve": {"seconds": [5.0, 10.0], "steps": [10, 20], "success": [0.2, 0.4]}}],
        "slow": [
            {"curve": {"seconds": [5, 10, 20], "steps": [5, 10, 20], "success": [NAN, NAN, 1.0]}},
            {"curve": {"seconds": [5, 10, 20], "steps": [6, 12, 24], "success": [NAN, 0.6, 0.8]}},
            {"curve": {"seconds": [5, 10, 20], "steps": [7, 14, 28]}},
            {"curve": {"seconds": [5, 10, 20], "steps": [8, 16, 32], "success": [0.0, 1.0]}},
        ],
        "never": [{"curve": {"seconds": [], "steps": [], "success": []}}],
    }
    out = at_equal_time(runs)
    assert out["seconds"] == 10.0
    assert list(out["arms"]) == ["fast", "slow"]  # no logged point: left out
    fast = out["arms"]["fast"]
    assert fast["success"]["values"] == pytest.approx([0.3])  # trailing mean of 0.2, 0.4
    assert fast["steps"]["values"] == [20.0]
    slow = out["arms"]["slow"]
    assert slow["success"]["values"] == pytest.approx([0.6])
    assert slow["steps"]["values"] == [10.0, 12.0, 14.0, 16.0]


def test_equal_time_with_no_logged_point_anywhere_is_empty():
    assert at_equal_time({"a": [{"curve": {"seconds": [], "steps": [], "success": []}}]}) == {}


# ----------------------------------------------------------------------------- aggregate
def config(arms: tuple[str, ...] = ("attention", "combined"), seeds=(0, 1)) -> BenchmarkConfig:
    return BenchmarkConfig(
        name="unit",
        scenarios={
            "highway": ScenarioSpec(
                train="DriveAttention/BatchedHighway-v0", reference="DriveAttention/Highway-v0"
            )
        },
        arms={arm: {} for arm in arms},
        seeds=list(seeds),
        evaluation=EvalSpec(episodes=5, seed=500, relevance_frames=0),
    )


ATTRIBUTION = {  # what every attribution arm's run records (its figures not checked here)
    "class_mass": {"vehicle": 0.5},
    "class_lift": {"vehicle": 2.0},
    "class_share": {"vehicle": 0.25},
    "camera_share": 0.4,
    "occlusion_ratio": None,
}


def record(arm: str, seed: int, value: float, train: float = 100.0, env: float = 500.0, **more):
    """A finished run whose every evaluation figure is ``value`` (no curve logged); an
    ``attention`` given adds to the attribution every attribution arm records."""
    figures = {m: value for m in EVAL_METRICS}
    if "attention" in more:
        more["attention"] = {**ATTRIBUTION, **more["attention"]}
    return {
        "scenario": "highway",
        "arm": arm,
        "seed": seed,
        "status": "finished",
        "curve": {"seconds": [], "steps": [], "success": []},
        "evaluation": {"batched": dict(figures), "reference": dict(figures)},
        "throughput": {"train_steps_per_s": train, "env_steps_per_s": env},
        **more,
    }


def test_an_arm_with_no_finished_run_leaves_the_arms_after_it_in_the_table():
    results = [
        {"scenario": "highway", "arm": "attention", "seed": 0, "status": "failed"},
        record("combined", 0, 2.0),
        record("combined", 1, 4.0),
    ]
    summary = aggregate(config(seeds=(0, 1)), results, {})
    assert summary["name"] == "unit"
    table = summary["results"]["highway"]
    assert list(table) == ["combined"]
    assert table["combined"]["reference"]["mean_return"]["mean"] == pytest.approx(3.0)
    assert table["combined"]["iqm"]["mean_speed"] == {"iqm": 3.0, "low": 2.0, "high": 4.0, "n": 2}
    assert table["combined"]["robustness"] == {}  # no run was ablated
    assert summary["attention_over_combined_speed"] == {}  # no attention arm to compare
    assert summary["at_equal_time"] == {"highway": {}}
    assert [(r["arm"], r["seed"]) for r in summary["not_finished"]] == [("attention", 0)]
    assert summary["missing"] == [{"scenario": "highway", "arm": "attention", "seed": 1}]


def test_robustness_keeps_the_ablations_every_run_has_in_the_first_run_s_order():
    def ablated(*modes: str) -> dict[str, Any]:
        figures = dict.fromkeys(("mean_return", "success_rate", "collision_rate"), 1.0)
        return {mode: dict(figures) for mode in modes}

    results = [
        record("attention", 0, 1.0, robustness=ablated("intact", "noise", "blank", "zero")),
        record("attention", 1, 1.0, robustness=ablated("blank", "intact", "noise")),
    ]
    row = aggregate(config(arms=("attention",)), results, {})["results"]["highway"]["attention"]
    assert list(row["robustness"]) == ["intact", "noise", "blank"]  # "zero": run 1 has none


def test_an_unmeasured_rate_is_left_out_of_the_train_over_env_ratio_and_speed_is_a_ratio():
    results = [
        record("attention", 0, 1.0, train=100.0, env=400.0),
        record("attention", 1, 1.0, train=300.0, env=0.0),  # env rate not measured
        record("attention", 2, 1.0, train=0.0, env=500.0),  # training rate not measured
        record("combined", 0, 1.0, train=0.5, env=100.0),
        record("combined", 1, 1.0, train=0.5, env=100.0),
        record("combined", 2, 1.0, train=0.5, env=100.0),
    ]
    summary = aggregate(config(seeds=(0, 1, 2)), results, {})
    throughput = summary["results"]["highway"]["attention"]["throughput"]
    assert throughput["train_over_env"]["values"] == [0.25]
    assert throughput["train_steps_per_s"]["mean"] == pytest.approx(400.0 / 3)
    # attention trains at 400/3 steps/s on average, combined at 0.5
    assert summary["attention_over_combined_speed"]["highway"] == pytest.approx(800.0 / 3)


def test_no_speed_ratio_when_the_combined_arm_s_training_rate_is_zero():
    results = [record("attention", 0, 1.0, train=50.0), record("combined", 0, 1.0, train=0.0)]
    speed = aggregate(config(seeds=(0,)), results, {})["attention_over_combined_speed"]
    assert math.isnan(speed["highway"])


def test_relevance_agreement_is_averaged_over_the_runs_that_scored_frames():
    relevance = [
        {
            "tokens": {"frames": 10, "hit": 0.6, "chance": 0.2, "ratio": 3.0},
            "patches": {"frames": 0, "hit": NAN, "chance": NAN, "ratio": NAN},
        },
        {
            "tokens": {"frames": 30, "hit": 0.8, "chance": 0.4, "ratio": 2.0},
            "patches": {"frames": 5, "hit": 0.5, "chance": 0.25, "ratio": 2.0},
        },
        {"tokens": {"frames": 20, "hit": 0.4, "chance": 0.3, "ratio": 4 / 3}},  # no patches
    ]
    results = [
        record("attention", seed, 1.0, attention={"relevance": r})
        for seed, r in enumerate(relevance)
    ]
    results.append(record("combined", 0, 1.0))
    table = aggregate(config(seeds=(0, 1, 2)), results, {})["results"]["highway"]
    assert "relevance" not in table["combined"]
    out = table["attention"]["relevance"]
    assert list(out) == ["tokens", "patches"]
    tokens = out["tokens"]
    assert (tokens["runs"], tokens["frames"]) == (3, 60)
    for key, values in (("hit", [0.6, 0.8, 0.4]), ("chance", [0.2, 0.4, 0.3])):
        assert tokens[key]["mean"] == pytest.approx(statistics.mean(values)), key
        assert tokens[key]["ci95"] == pytest.approx(t_half(values)), key
    assert tokens["ratio"]["values"] == pytest.approx([3.0, 2.0, 4 / 3])
    patches = out["patches"]
    assert (patches["runs"], patches["frames"]) == (1, 5)  # the run with 0 frames left out
    assert patches["hit"]["values"] == [0.5]
    assert patches["chance"]["values"] == [0.25] and patches["ratio"]["values"] == [2.0]


def test_relevance_is_left_out_when_one_run_has_none():
    results = [
        record("attention", 0, 1.0, attention={"relevance": {}}),
        record("attention", 1, 1.0, attention={"relevance": {"tokens": {"frames": 3}}}),
    ]
    row = aggregate(config(arms=("attention",)), results, {})["results"]["highway"]["attention"]
    assert "relevance" not in row


def light_block(frames: int, mass: float, shown_as: str) -> dict[str, Any]:
    return {
        "frames": frames,
        **{c: {"light_mass": mass} for c in ("as_is", "blanked", "swapped", "control")},
        "shown_as": shown_as,
    }


def test_the_signalised_attribution_is_averaged_per_situation_and_light_state():
    """Run 0 saw the light green only, run 1 ran no light test, run 2 saw no pedestrian."""
    attention = [
        {
            "situations": {
                "red_light": {"frames": 4, "light_mass": 0.5, "light_lift": 3.0},
                "pedestrian": {"frames": 2, "pedestrian_mass": 0.2},
            },
            "light_test": {"green": light_block(8, 0.3, "red")},
        },
        {"situations": {"red_light": {"frames": 6, "light_mass": 0.7, "light_lift": 5.0}}},
        {"situations": {"red_light": {"frames": 1, "light_mass": 0.9}}},
    ]
    results = [record("attention", seed, 1.0, attention=a) for seed, a in enumerate(attention)]
    row = aggregate(config(arms=("attention",), seeds=(0, 1, 2)), results, {})
    signals = row["results"]["highway"]["attention"]["signals"]
    situations = signals["situations"]
    assert list(situations) == ["pedestrian", "red_light"]
    red = situations["red_light"]
    assert red["frames"] == 11
    assert red["light_mass"]["mean"] == pytest.approx(0.7)
    assert red["light_mass"]["ci95"] == pytest.approx(t_half([0.5, 0.7, 0.9]))
    assert red["light_lift"]["values"] == [3.0, 5.0]  # run 2 has no lift
    assert situations["pedestrian"]["frames"] == 2
    assert situations["pedestrian"]["pedestrian_mass"]["values"] == [0.2]
    light = signals["light_test"]
    assert list(light) == ["green"]  # no run tested the light red
    green = light["green"]
    assert (green["runs"], green["frames"], green["shown_as"]) == (1, 8, "red")
    assert green["swapped"]["light_mass"]["values"] == [0.3]


def test_each_light_state_is_averaged_over_the_runs_that_tested_it():
    attention = [
        {
            "situations": {},
            "light_test": {
                "red": light_block(10, 0.2, "green"),
                "green": light_block(4, 0.6, "red"),
            },
        },
        {"situations": {}, "light_test": {"red": light_block(30, 0.4, "green")}},
    ]
    results = [record("attention", seed, 1.0, attention=a) for seed, a in enumerate(attention)]
    row = aggregate(config(arms=("attention",)), results, {})["results"]["highway"]["attention"]
    light = row["signals"]["light_test"]
    assert list(light) == ["red", "green"]
    assert (light["red"]["runs"], light["red"]["frames"]) == (2, 40)
    assert light["red"]["as_is"]["light_mass"]["mean"] == pytest.approx(0.3)
    assert light["red"]["shown_as"] == "green"
    assert (light["green"]["runs"], light["green"]["frames"]) == (1, 4)
    assert light["green"]["control"]["light_mass"]["values"] == [0.6]


def test_per_class_attention_keeps_the_classes_every_run_has_in_the_first_run_s_order():
    def attention(mass: dict[str, float]) -> dict[str, Any]:
        return {
            "class_mass": mass,
            "class_lift": {"vehicle": 2.0},
            "class_share": {"vehicle": 0.5},
            "camera_share": 0.4,
            "occlusion_ratio": None,
        }

    results = [
        record("attention", 0, 1.0, attention=attention({"vehicle": 0.6, "road": 0.1})),
        record(
            "attention", 1, 1.0, attention=attention({"sign": 0.0, "road": 0.3, "vehicle": 0.4})
        ),
    ]
    row = aggregate(config(arms=("attention",)), results, {})["results"]["highway"]["attention"]
    mass = row["attention"]["class_mass"]
    assert list(mass) == ["vehicle", "road"]  # "sign": run 0 has none
    assert mass["vehicle"]["mean"] == pytest.approx(0.5)
    assert mass["road"]["mean"] == pytest.approx(0.2)
    assert row["attention"]["occlusion_ratio"]["n"] == 0
    assert row["attention"]["occlusion_runs"] == [None, None]
