"""``results.md`` line by line: :func:`markdown` of hand-made study summaries (shaped as
:func:`aggregate` returns them) compared, whole, with the text written out here; the learning-curve
figure's axes, lines and bands against values computed by hand; and :func:`write_report`'s files.

Every figure differs from its neighbours, so a cell read from the wrong backend, arm or column
gives another text; the summaries also hold the cases the report writes differently: an unknown
mean (``n/a``), no interval (one seed), a missing metric, a scenario with no arms, a scenario
judged on the batched simulator, a robustness mode the report does not know, a relevance part
with no runs. Each test builds its own input: mutmut maps a test to the code it runs only when
the test itself runs it (no shared fixture)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
from test_study_report import COMMAND, reference_rows, study_config, study_results

from drive_attention.agent.benchmark import markdown, write_report
from drive_attention.agent.benchmark.report import plot_curves

NAN = math.nan
BATCHED, HIGHWAY_ENV = "DriveAttention/BatchedHighway-v0", "DriveAttention/Highway-v0"
SIGNALIZED = "DriveAttention/BatchedSignalized-v0"


def cell(mean: float, half: float = NAN) -> dict[str, float]:
    """A mean and the half-width of its 95% interval (NaN: one seed, no interval)."""
    return {"mean": mean, "ci95": half}


def iqm(value: float, low: float = NAN, high: float = NAN, n: int = 4) -> dict[str, float]:
    return {"iqm": value, "low": low, "high": high, "n": n}


def throughput(train: float, env: float, ratio: dict[str, float]) -> dict[str, Any]:
    return {
        "train_steps_per_s": {"mean": train},
        "env_steps_per_s": {"mean": env},
        "train_over_env": ratio,
    }


def policy(ret: float, success: float, collision: float, speed: float | None, **more) -> dict:
    """A reference policy: the same episodes on both backends."""
    rates = {"success_rate": success, "collision_rate": collision, "mean_speed": speed}
    return {"batched": {"mean_return": ret}, "reference": {"mean_return": ret, **rates, **more}}


def study_summary() -> dict[str, Any]:
    """Three scenarios: highway (judged on highway-env; two arms, reference policies, IQM,
    robustness, equal wall time, attribution), one with no finished arm, and a signalised one
    judged on the batched simulator (infractions, attention by situation, the light test). One
    planned run never ran."""
    highway = {
        "attention": {
            "seeds": [0, 1, 2, 3],
            "batched": {"mean_return": cell(12.5, 1.25)},
            "reference": {
                "mean_return": cell(8.0, 2.0),
                "success_rate": cell(0.6, 0.25),
                "collision_rate": cell(0.3),  # no interval
                "mean_speed": cell(21.0, 0.5),
            },
            "iqm": {
                "success_rate": iqm(0.7, 0.5, 0.9),
                "collision_rate": iqm(0.2),
                "mean_speed": iqm(20.5, 19.25, 21.75),
                "mean_return": iqm(NAN),
            },
            "robustness": {  # not in the report's order; one mode it does not know
                "sensor_noise": {"mean_return": cell(4.0, 1.0)},
                "wind": {"mean_return": cell(1.0)},
                "sensors_zeroed": {"mean_return": cell(2.5, 0.75)},
                "intact": {"mean_return": cell(8.0, 2.0)},
                "camera_blanked": {"mean_return": cell(3.0, 0.5)},
            },
            "throughput": throughput(150.4, 1200.6, cell(0.126, 0.03)),
            "attention": {
                "camera_share": cell(0.45, 0.1),
                "occlusion_ratio": cell(2.5, 1.2),
                "occlusion_runs": [2.0, 1.99, NAN, None],
                "class_mass": {"vehicle": cell(0.7, 0.1), "road": cell(0.2)},
                "class_share": {"vehicle": cell(0.1, 0.05), "road": cell(0.6, 0.0)},
                "class_lift": {"vehicle": cell(7.0, 1.5), "road": cell(0.33)},
            },
            "relevance": {
                "tokens": {
                    "hit": cell(0.5, 0.1),
                    "chance": cell(0.25, 0.05),
                    "ratio": cell(2.0, 0.4),
                    "frames": 120,
                    "runs": 3,
                },
                "patches": {
                    "hit": cell(0.4, 0.2),
                    "chance": cell(0.04, 0.01),
                    "ratio": cell(9.0, 3.0),
                    "frames": 80,
                    "runs": 2,
                },
            },
        },
        "combined": {
            "seeds": [0, 1],
            "batched": {"mean_return": cell(NAN, NAN)},  # unknown
            "reference": {  # recorded before speed was
                "mean_return": cell(-1.5, 0.75),
                "success_rate": cell(0.0, 0.0),
                "collision_rate": cell(1.0, 0.0),
            },
            "iqm": {
                "success_rate": iqm(0.0, 0.0, 0.0, n=2),
                "collision_rate": iqm(1.0, n=2),
                "mean_speed": iqm(NAN, n=2),
                "mean_return": iqm(-1.5, n=2),
            },
            "robustness": {
                "intact": {"mean_return": cell(-1.5, 0.75)},
                "sensor_noise": {"mean_return": cell(-2.0, 0.5)},
            },
            "throughput": throughput(300.0, 2000.0, cell(0.15, 0.01)),
        },
    }
    signalized = {
        "combined": {  # no infraction figures, no signals
            "seeds": [0, 1],
            "batched": {"mean_return": cell(4.0, 0.5)},
            "reference": {
                "mean_return": cell(4.0, 0.5),
                "success_rate": cell(0.3, 0.1),
                "collision_rate": cell(0.2, 0.1),
                "mean_speed": cell(7.0, 0.2),
            },
            "robustness": {},
            "throughput": throughput(90.0, 450.0, cell(0.2)),
        },
        "attention": {
            "seeds": [0, 1],
            "batched": {"mean_return": cell(5.0, 1.0)},
            "reference": {
                "mean_return": cell(5.0, 1.0),
                "success_rate": cell(0.4, 0.2),
                "collision_rate": cell(0.1, 0.1),
                "mean_speed": cell(7.5, 0.25),
                "red_light_rate": cell(0.15, 0.05),
                "pedestrian_collision_rate": cell(0.05),
            },
            "robustness": {},
            "throughput": throughput(80.0, 400.0, cell(0.2, 0.02)),
            "signals": {
                "situations": {
                    "light_red": {
                        "frames": 40,
                        "traffic_light_share": cell(0.02, 0.01),
                        "traffic_light_mass": cell(0.1, 0.03),
                        "traffic_light_lift": cell(5.0, 1.0),
                    },
                    "light_green": {"frames": 0},  # never in view: no row
                    "pedestrian_ahead": {
                        "frames": 12,
                        "pedestrian_share": cell(0.04, 0.02),
                        "pedestrian_mass": cell(0.12),
                        "pedestrian_lift": cell(3.0),
                    },
                    "fog": {  # a situation the report has no words for: its name
                        "frames": 7,
                        "pedestrian_share": cell(0.01),
                        "pedestrian_mass": cell(0.03),
                        "pedestrian_lift": cell(3.0, 0.5),
                    },
                },
                "light_test": {
                    "red": {
                        "frames": 30,
                        "shown_as": "green",
                        "as_is": {"stop_probability": cell(0.8, 0.1)},
                        "blanked": {
                            "action_changed": cell(0.3, 0.1),
                            "kl": cell(0.4, 0.2),
                            "stop_probability": cell(0.5, 0.1),
                        },
                        "swapped": {
                            "action_changed": cell(0.6, 0.2),
                            "kl": cell(1.2, 0.3),
                            "stop_probability": cell(0.2, 0.1),
                        },
                        "control": {
                            "action_changed": cell(0.05, 0.05),
                            "kl": cell(0.02, 0.01),  # no P(slower)
                        },
                    }
                },
            },
        },
    }
    return {
        "config": {
            "scenarios": {
                "highway": {"train": BATCHED, "reference": HIGHWAY_ENV},
                "empty": {"train": BATCHED, "reference": HIGHWAY_ENV},
                "signalized": {"train": SIGNALIZED, "reference": SIGNALIZED},
            }
        },
        "results": {"highway": highway, "empty": {}, "signalized": signalized},
        "references": {
            "highway": {
                "rule": policy(11.75, 0.8, 0.2, 20.0),
                "idle": policy(2.0, 0.2, 0.0, None),  # no speed recorded
            },
            "signalized": {
                "rule": policy(
                    3.0, 0.6, 0.0, 6.0, red_light_rate=0.0, pedestrian_collision_rate=0.2
                ),
                "random": policy(-2.0, 0.0, 0.8, 9.0),  # no infraction figures
            },
        },
        "at_equal_time": {
            "highway": {
                "seconds": 1530.0,
                "arms": {
                    "attention": {"steps": {"mean": 2048.4}, "success": cell(0.35, 0.12)},
                    "combined": {"steps": {"mean": 4096.0}, "success": cell(0.6)},
                },
            }
        },
        "attention_over_combined_speed": {"highway": 0.5016},
        "not_finished": [],
        "missing": [{"scenario": "highway", "arm": "combined", "seed": 2}],
    }


RETURN_HEADER = "| arm | seeds | return, batched | return, {} | success | collision | speed |"
SEVEN = "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
SIX = "| --- | ---: | ---: | ---: | ---: | ---: |"
FIVE = "| --- | ---: | ---: | ---: | ---: |"
FOUR = "| --- | ---: | ---: | ---: |"
THREE = "| --- | ---: | ---: |"
RETURN_LEAD = (
    "Return on each backend; success, collision and speed (m/s) on {}; mean and 95% "
    "t-interval over seeds:"
)
RELEVANCE_LEAD = (
    "Attention on what matters ({}, attention, last layer): how often the most-attended object "
    "token, or camera patch, is on an object the teacher's decision depends on, against a "
    "uniformly random choice; mean and 95% t-interval over seeds:"
)
RELEVANCE_HEADER = "| attended | on a relevant object | chance | ratio | frames |"
INFRACTIONS_LEAD = (
    "Infractions (signalized): share of episodes with a red light run, and with a pedestrian "
    "hit (a collision); mean and 95% t-interval over seeds:"
)
SITUATIONS_LEAD = (
    "Attention on the light and on pedestrians by situation (signalized, attention, last layer; "
    "frames that show the element; mass = share of the policy query's camera attention, lift = "
    "mass / share of the image; mean and 95% t-interval over seeds):"
)
THROUGHPUT_HEADER = "| arm | training | raw env (same run) | training / env |"
CLASS_HEADER = "| road element | share of image | attention mass | lift |"
SITUATION_HEADER = "| situation | frames | element | share | mass | lift |"

HIGHWAY_SECTION = [
    f"#### highway: trained on `{BATCHED}`, evaluated on both backends",
    "",
    RETURN_LEAD.format("highway-env"),
    "",
    RETURN_HEADER.format("highway-env"),
    SEVEN,
    "| attention | 4 | 12.50 ± 1.25 | 8.00 ± 2.00 | 60% ± 25 | 30% | 21.00 ± 0.50 |",
    "| combined | 2 | n/a | -1.50 ± 0.75 | 0% ± 0 | 100% ± 0 |  |",
    "| rule policy | - | 11.75 | 11.75 | 80% | 20% | 20.00 |",
    "| idle policy | - | 2.00 | 2.00 | 20% | 0% |  |",
    "",
    "Interquartile mean over runs on highway-env (highway), 95% percentile bootstrap interval "
    "in brackets:",
    "",
    "| arm | runs | success | collision | speed | return |",
    SIX,
    "| attention | 4 | 70% [50%, 90%] | 20% | 20.50 [19.25, 21.75] | n/a |",
    "| combined | 2 | 0% [0%, 0%] | 100% | n/a | -1.50 |",
    "",
    "Robustness on highway-env (highway), return:",
    "",
    "| arm | intact | camera blanked | sensors zeroed | sensor noise | wind |",
    SIX,
    "| attention | 8.00 ± 2.00 | 3.00 ± 0.50 | 2.50 ± 0.75 | 4.00 ± 1.00 | 1.00 |",
    "| combined | -1.50 ± 0.75 |  |  | -2.00 ± 0.50 |  |",
    "",
    "Throughput (highway), steps/s of each run on one core:",
    "",
    THROUGHPUT_HEADER,
    FOUR,
    "| attention | 150 | 1201 | 0.13 ± 0.03 |",
    "| combined | 300 | 2000 | 0.15 ± 0.01 |",
    "",
    # 1530 s = 25.5 min; the smoothing window is 10 logged updates
    "Success at equal wall time (highway): training-episode success (last 10 updates) of every "
    "arm after 25.5 min, when the fastest arm's runs had finished their budget (mean over its "
    "seeds; wall times compare only where runs shared the machine alike):",
    "",
    "| arm | steps trained by then | training success then |",
    THREE,
    "| attention | 2048 | 35% ± 12 |",
    "| combined | 4096 | 60% |",
    "",
    "attention / CombinedExtractor training speed: 0.50x",
    "",
    "Attention attribution (highway, attention, last layer, mean over seeds): camera share "
    "45% ± 10, occlusion ratio 2.50 ± 1.20",
    "",
    # FAITHFUL_RATIO is 2: 2.0 is faithful, 1.99 (printed 2.0) is not; NaN and None unknown
    "Occlusion ratio per seed: s0 2.0, s1 2.0 (NOT FAITHFUL), s2 n/a, s3 n/a",
    "",
    CLASS_HEADER,
    FOUR,
    "| vehicle | 10% ± 5 | 70% ± 10 | 7.00 ± 1.50 |",
    "| road | 60% ± 0 | 20% | 0.33 |",
    "",
    RELEVANCE_LEAD.format("highway"),
    "",
    RELEVANCE_HEADER,
    FIVE,
    "| object tokens | 50% ± 10 | 25% ± 5 | 2.00 ± 0.40 | 120 (3 runs) |",
    "| camera patches | 40% ± 20 | 4% ± 1 | 9.00 ± 3.00 | 80 (2 runs) |",
    "",
]
EMPTY_SECTION = [  # no arm finished: the results table's header and nothing after it
    f"#### empty: trained on `{BATCHED}`, evaluated on both backends",
    "",
    RETURN_LEAD.format("highway-env"),
    "",
    RETURN_HEADER.format("highway-env"),
    SEVEN,
    "",
]
SIGNALIZED_SECTION = [
    f"#### signalized: trained on `{SIGNALIZED}`, evaluated on its only backend",
    "",
    RETURN_LEAD.format("the batched simulator"),
    "",
    RETURN_HEADER.format("batched simulator"),
    SEVEN,
    "| combined | 2 | 4.00 ± 0.50 | 4.00 ± 0.50 | 30% ± 10 | 20% ± 10 | 7.00 ± 0.20 |",
    "| attention | 2 | 5.00 ± 1.00 | 5.00 ± 1.00 | 40% ± 20 | 10% ± 10 | 7.50 ± 0.25 |",
    "| rule policy | - | 3.00 | 3.00 | 60% | 0% | 6.00 |",
    "| random policy | - | -2.00 | -2.00 | 0% | 80% | 9.00 |",
    "",
    # no IQM (the arms have none), no robustness modes, no equal-time row, no speed ratio
    "Throughput (signalized), steps/s of each run on one core:",
    "",
    THROUGHPUT_HEADER,
    FOUR,
    "| combined | 90 | 450 | 0.20 |",
    "| attention | 80 | 400 | 0.20 ± 0.02 |",
    "",
    INFRACTIONS_LEAD,
    "",
    "| policy | ran a red light | hit a pedestrian |",
    THREE,
    "| attention | 15% ± 5 | 5% |",
    "| rule policy | 0% | 20% |",
    "",
    SITUATIONS_LEAD,
    "",
    SITUATION_HEADER,
    SIX,
    "| approaching, light red | 40 | traffic light | 2% ± 1 | 10% ± 3 | 5.00 ± 1.00 |",
    "| pedestrian on a crossing ahead | 12 | pedestrian | 4% ± 2 | 12% | 3.00 |",
    "| fog | 7 | pedestrian | 1% | 3% | 3.00 ± 0.50 |",
    "",
    "Light test (signalized, attention): on frames with the light in view, the light's pixels "
    "blanked (set to 0), shown in the other colour, or as many pixels blanked elsewhere "
    "(control); share of frames whose most likely action changes, KL(as is || changed), and "
    "P(slower):",
    "",
    "| light | frames shown | action changed | KL | P(slower) |",
    FIVE,
    "| red (30 frames) | as is |  |  | 0.80 ± 0.10 |",
    "| red (30 frames) | blanked | 30% ± 10 | 0.40 ± 0.20 | 0.50 ± 0.10 |",
    "| red (30 frames) | shown green | 60% ± 20 | 1.20 ± 0.30 | 0.20 ± 0.10 |",
    "| red (30 frames) | control | 5% ± 5 | 0.02 ± 0.01 |  |",
    "",
]


def test_a_study_s_results_md_is_the_hand_written_text_section_by_section():
    text = markdown(study_summary())
    assert text.endswith("\n")
    lines = text.splitlines()
    tail = ["Runs that did not finish:", "- highway-combined-s2: not run"]
    sections = {
        "highway": HIGHWAY_SECTION,
        "empty": EMPTY_SECTION,
        "signalized": SIGNALIZED_SECTION,
        "tail": tail,
    }
    start = 0
    for name, expected in sections.items():
        assert lines[start : start + len(expected)] == expected, name
        start += len(expected)
    assert start == len(lines)
    assert text == "\n".join([*HIGHWAY_SECTION, *EMPTY_SECTION, *SIGNALIZED_SECTION, *tail]) + "\n"


def test_a_single_seed_signalised_study_with_no_references_and_every_run_finished():
    """One seed (no interval anywhere), no reference policies, no equal-time figures, a
    relevance part with no runs (no row), signals without a light test."""
    summary = {
        "config": {"scenarios": {"signalized": {"train": SIGNALIZED, "reference": SIGNALIZED}}},
        "results": {
            "signalized": {
                "combined": {  # no attribution, no infraction figures, no signals
                    "seeds": [3],
                    "batched": {"mean_return": cell(1.0)},
                    "reference": {
                        "mean_return": cell(1.5),
                        "success_rate": cell(0.0),
                        "collision_rate": cell(1.0),
                        "mean_speed": cell(4.0),
                    },
                    "robustness": {},
                    "throughput": throughput(128.0, 512.0, cell(0.25)),
                },
                "attention": {
                    "seeds": [3],
                    "batched": {"mean_return": cell(6.0)},
                    "reference": {
                        "mean_return": cell(6.5),
                        "success_rate": cell(1.0),
                        "collision_rate": cell(0.0),
                        "mean_speed": cell(8.25),
                        "red_light_rate": cell(0.0),
                        "pedestrian_collision_rate": cell(0.2),
                    },
                    "robustness": {},
                    "throughput": throughput(64.0, 256.0, cell(0.25)),
                    "attention": {
                        "camera_share": cell(0.6),
                        "occlusion_ratio": cell(2.3),
                        "occlusion_runs": [2.3],
                        "class_mass": {"vehicle": cell(0.5)},
                        "class_share": {"vehicle": cell(0.25)},
                        "class_lift": {"vehicle": cell(2.0)},
                    },
                    "relevance": {
                        "tokens": {
                            "hit": cell(NAN),
                            "chance": cell(NAN),
                            "ratio": cell(NAN),
                            "frames": 0,
                            "runs": 0,
                        },
                        "patches": {
                            "hit": cell(0.3),
                            "chance": cell(0.1),
                            "ratio": cell(3.0),
                            "frames": 40,
                            "runs": 1,
                        },
                    },
                    "signals": {
                        "situations": {
                            "light_amber": {
                                "frames": 5,
                                "traffic_light_share": cell(0.03),
                                "traffic_light_mass": cell(0.09),
                                "traffic_light_lift": cell(3.0),
                            }
                        }
                    },
                },
            }
        },
        "references": {},
        "attention_over_combined_speed": {},
        "not_finished": [],
        "missing": [],
    }
    assert markdown(summary).splitlines() == [
        f"#### signalized: trained on `{SIGNALIZED}`, evaluated on its only backend",
        "",
        RETURN_LEAD.format("the batched simulator"),
        "",
        RETURN_HEADER.format("batched simulator"),
        SEVEN,
        "| combined | 1 | 1.00 | 1.50 | 0% | 100% | 4.00 |",
        "| attention | 1 | 6.00 | 6.50 | 100% | 0% | 8.25 |",
        "",
        "Throughput (signalized), steps/s of each run on one core:",
        "",
        THROUGHPUT_HEADER,
        FOUR,
        "| combined | 128 | 512 | 0.25 |",
        "| attention | 64 | 256 | 0.25 |",
        "",
        "Attention attribution (signalized, attention, last layer, mean over seeds): camera "
        "share 60%, occlusion ratio 2.30",
        "",
        "Occlusion ratio per seed: s3 2.3",
        "",
        CLASS_HEADER,
        FOUR,
        "| vehicle | 25% | 50% | 2.00 |",
        "",
        RELEVANCE_LEAD.format("signalized"),
        "",
        RELEVANCE_HEADER,
        FIVE,
        "| camera patches | 30% | 10% | 3.00 | 40 (1 runs) |",
        "",
        INFRACTIONS_LEAD,
        "",
        "| policy | ran a red light | hit a pedestrian |",
        THREE,
        "| attention | 0% | 20% |",
        "",
        SITUATIONS_LEAD,
        "",
        SITUATION_HEADER,
        SIX,
        "| approaching, light amber | 5 | traffic light | 3% | 9% | 3.00 |",
        "",
        "Every planned run finished.",
    ]


def test_a_failed_run_is_listed_with_its_error_and_no_table_without_light_figures():
    summary = study_summary()
    summary["results"] = {"empty": {}}
    summary["not_finished"] = [
        {"scenario": "empty", "arm": "attention", "seed": 4, "error": "RuntimeError: out of memory"}
    ]
    summary["missing"] = []
    assert markdown(summary).splitlines() == [
        *EMPTY_SECTION,
        "Runs that did not finish:",
        "- empty-attention-s4: RuntimeError: out of memory",
    ]


# ----------------------------------------------------------------------------- the figure
def curve(steps, seconds, returns, success=None) -> dict[str, list[float]]:
    out = {"steps": steps, "seconds": seconds, "return": returns}
    return out if success is None else {**out, "success": success}


def test_the_learning_curve_figure_plots_each_arm_s_mean_and_band_by_hand(tmp_path, monkeypatch):
    """Arms in the config's order: combined (its only run failed: nothing), legacy (one run
    logged before success was: a return curve only), attention (two runs and one with an empty
    curve, left out). Attention's runs: A at steps (0, 50, 100) and seconds (0, 60, 120) ->
    returns (0, 10, 20), B at steps (0, 100, 200) and seconds (0, 120, 240) -> (10, 20, 30)."""
    config = study_config(arms={"combined": {}, "legacy": {}, "attention": {}})
    run = {"scenario": "highway", "status": "finished"}
    results = [
        {"scenario": "highway", "arm": "combined", "seed": 0, "status": "failed"},
        {**run, "arm": "legacy", "curve": curve([0, 100, 200], [0, 120, 240], [1.0, 2.0, 3.0])},
        {
            **run,
            "arm": "attention",
            "curve": curve([0, 50, 100], [0, 60, 120], [0.0, 10.0, 20.0], [0.0, 1.0, 1.0]),
        },
        {
            **run,
            "arm": "attention",
            "curve": curve([0, 100, 200], [0, 120, 240], [10.0, 20.0, 30.0], [1.0, 1.0, 1.0]),
        },
        {**run, "arm": "attention", "curve": curve([], [], [], [])},
    ]
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    try:
        paths = plot_curves(config, results, tmp_path)
    finally:
        monkeypatch.undo()
    try:
        assert paths == [tmp_path / "curves_highway.png"]
        png = paths[0].read_bytes()
        # 11 x 7 inches at 90 dpi
        assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (990, 630)
        (fig,) = figures
        assert tuple(fig.get_size_inches()) == (11.0, 7.0)
        assert fig._suptitle.get_text() == (
            "highway: 1024 steps per run, mean and 95% interval over seeds"
        )
        assert len(fig.axes) == 4
        (top_steps, top_time, low_steps, low_time) = fig.axes
        assert top_steps.get_shared_x_axes().joined(top_steps, low_steps)
        assert top_time.get_shared_x_axes().joined(top_time, low_time)
        assert not top_steps.get_shared_x_axes().joined(top_steps, top_time)
        assert [ax.get_xlabel() for ax in fig.axes] == [
            "",
            "",
            "environment steps",
            "wall time [min] (one core per run)",
        ]
        assert [ax.get_ylabel() for ax in fig.axes] == [
            "training episode return (last 100)",
            "training episode return (last 100)",
            "training success (last 10 updates)",
            "training success (last 10 updates)",
        ]
        for ax in fig.axes:
            assert ax.xaxis.get_gridlines()[0].get_alpha() == 0.3
        legend = top_steps.get_legend()
        assert [t.get_text() for t in legend.get_texts()] == ["legacy (n=1)", "attention (n=2)"]
        assert [t.get_fontsize() for t in legend.get_texts()] == [8.0, 8.0]
        assert [ax.get_legend() for ax in (top_time, low_steps, low_time)] == [None] * 3

        # the return curves: legacy alone, then attention; the grid ends where the run that
        # ends soonest ends (A: 100 steps, 120 s = 2 min), 100 points
        for ax, end in ((top_steps, 100.0), (top_time, 2.0)):
            legacy, attention = ax.get_lines()
            assert [line.get_label() for line in ax.get_lines()] == [
                "legacy (n=1)",
                "attention (n=2)",
            ]
            x = attention.get_xdata()
            assert len(x) == 100 and x[0] == 0.0 and x[-1] == pytest.approx(end)
            # A is at 20 * x / end, B at 10 + 10 * x / end: their mean 5 + 15 * x / end
            assert attention.get_ydata() == pytest.approx(5.0 + 15.0 * x / end)
            assert legacy.get_xdata()[-1] == pytest.approx(2 * end)  # legacy ends at 200 / 4 min
            assert legacy.get_ydata()[-1] == pytest.approx(3.0)
            # the band: mean -/+ t(1) 12.706 * |A - B| / 2, widest at 0: 5 -/+ 63.53
            band = ax.collections[-1]  # attention's, drawn after legacy's
            vertices = band.get_paths()[0].vertices
            assert vertices[:, 0].min() == pytest.approx(0.0)
            assert vertices[:, 0].max() == pytest.approx(end)
            assert vertices[:, 1].min() == pytest.approx(5.0 - 63.53)
            assert vertices[:, 1].max() == pytest.approx(5.0 + 63.53)
            assert band.get_alpha() == 0.15
            assert tuple(band.get_facecolor()[0][:3]) == pytest.approx(
                plt.matplotlib.colors.to_rgb(attention.get_color())
            )
            assert legacy.get_color() != attention.get_color()

        # success: only attention (legacy has none), smoothed: A's trailing means (0, 1/2,
        # 2/3), B's (1, 1, 1); at the grid's end A is at its last point, B at its middle one
        for low, top in ((low_steps, top_steps), (low_time, top_time)):
            (success,) = low.get_lines()
            assert success.get_label() == "attention (n=2)"
            assert success.get_color() == top.get_lines()[1].get_color()
            (band,) = low.collections  # legacy draws none here: the colour is passed, not cycled
            assert tuple(band.get_facecolor()[0][:3]) == pytest.approx(
                plt.matplotlib.colors.to_rgb(success.get_color())
            )
            y = success.get_ydata()
            assert y[0] == pytest.approx(0.5)
            assert y[-1] == pytest.approx((2 / 3 + 1.0) / 2)
    finally:
        for fig in figures:
            plt.close(fig)


# ----------------------------------------------------------------------------- write_report
def test_write_report_creates_its_folder_and_returns_the_markdown_it_wrote(tmp_path):
    config = study_config()
    out = tmp_path / "studies" / "handmade"  # neither folder exists yet
    summary = write_report(config, study_results(config), reference_rows(), out, COMMAND)
    body = (out / "results.md").read_text()
    assert body == f"Produced by `{COMMAND}`.\n\n" + summary["markdown"]
    assert summary["command"] == COMMAND
    assert summary["plots"] == ["curves_highway.png"]
    assert (out / "curves_highway.png").is_file()
    # combined: batched returns 30, 34, 38 (mean 34, sd 4, t(2) 4.303: 4.303 * 4 / sqrt 3 =
    # 9.94), highway-env 8, 9, 13 (mean 10, sd sqrt 7: 6.57)
    assert any(
        line.startswith("| combined | 3 | 34.00 ± 9.94 | 10.00 ± 6.57 |")
        for line in summary["markdown"].splitlines()
    )
    assert summary["markdown"].endswith("- highway-combined-s4: not run\n")
    assert Path(out / "results.json").is_file()
