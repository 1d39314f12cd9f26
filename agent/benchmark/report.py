"""The study's report: ``results.json``, ``results.md`` (the tables docs/results/ links) and the
learning-curve PNGs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drive_attention.agent.benchmark.config import BenchmarkConfig
from drive_attention.agent.benchmark.jobs import write_json
from drive_attention.agent.benchmark.stats import SMOOTHING, aggregate, curve_band, smooth
from drive_attention.agent.evaluate.episodes import FAITHFUL_RATIO
from drive_attention.agent.run.files import write_text


def plot_curves(
    config: BenchmarkConfig, results: Sequence[dict[str, Any]], out_dir: Path
) -> list[Path]:
    """Per scenario, training return (top) and success (bottom) against steps (left) and wall
    time (right): mean and 95% band over seeds. Runs recorded before success was logged add
    no success curve."""
    # imported on first use: matplotlib is slow to import, and picking its backend is a
    # process-wide side effect that importing this module should not have
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    finished = [r for r in results if r.get("status") == "finished" and r["curve"]["steps"]]
    for scenario in config.scenarios:
        fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex="col")
        for arm in config.arms:
            runs = [r for r in finished if r["scenario"] == scenario and r["arm"] == arm]
            if not runs:
                continue
            for col, key, scale in ((0, "steps", 1.0), (1, "seconds", 1 / 60)):
                top = min(r["curve"][key][-1] for r in runs)
                grid = np.linspace(0, top, 100)
                color = None
                for row, metric in ((0, "return"), (1, "success")):
                    curves = [
                        (
                            r["curve"][key],
                            smooth(r["curve"][metric]) if row else r["curve"][metric],
                        )
                        for r in runs
                        if metric in r["curve"]
                    ]
                    if len(curves) < len(runs):
                        continue
                    mean, half = curve_band(curves, grid)
                    ax = axes[row, col]
                    (line,) = ax.plot(
                        grid * scale, mean, color=color, label=f"{arm} (n={len(runs)})"
                    )
                    color = line.get_color()
                    ax.fill_between(grid * scale, mean - half, mean + half, color=color, alpha=0.15)
        axes[1, 0].set_xlabel("environment steps")
        axes[1, 1].set_xlabel("wall time [min] (one core per run)")
        for col in (0, 1):
            axes[0, col].set_ylabel("training episode return (last 100)")
            axes[1, col].set_ylabel(f"training success (last {SMOOTHING} updates)")
        for ax in axes.flat:
            ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=8)
        fig.suptitle(f"{scenario}: {config.steps} steps per run, mean and 95% interval over seeds")
        fig.tight_layout()
        path = out_dir / f"curves_{scenario}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _ci(cell: Mapping[str, Any], percent: bool = False) -> str:
    mean, half = cell["mean"], cell["ci95"]
    if math.isnan(mean):
        return "n/a"
    if percent:
        return f"{mean:.0%}" + ("" if math.isnan(half) else f" ± {half * 100:.0f}")
    return f"{mean:.2f}" + ("" if math.isnan(half) else f" ± {half:.2f}")


def _iqm(cell: Mapping[str, Any], percent: bool = False) -> str:
    value, low, high = cell["iqm"], cell["low"], cell["high"]
    if math.isnan(value):
        return "n/a"
    if percent:
        text = f"{value:.0%}"
        return text if math.isnan(low) else f"{text} [{low:.0%}, {high:.0%}]"
    return f"{value:.2f}" if math.isnan(low) else f"{value:.2f} [{low:.2f}, {high:.2f}]"


def _faithfulness(seeds: Sequence[int], ratios: Sequence[float | None]) -> str:
    """``s0 17.7, s1 1.2 (NOT FAITHFUL), s2 n/a``: the map a run's videos show does not explain
    its policy where blanking its most-attended patches moves the policy less than
    :data:`agent.evaluate.episodes.FAITHFUL_RATIO` times as much as blanking random ones."""

    def verdict(value: float | None) -> str:
        if value is None or math.isnan(value):
            return "n/a"
        return f"{value:.1f}" + ("" if value >= FAITHFUL_RATIO else " (NOT FAITHFUL)")

    return ", ".join(f"s{seed} {verdict(v)}" for seed, v in zip(seeds, ratios, strict=True))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table, first column left-aligned, the others right-aligned."""
    return [
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def markdown(summary: dict[str, Any]) -> str:
    """The study's tables (markdown), as ``results.md`` holds them."""
    config = summary["config"]
    lines: list[str] = []
    for scenario, arms in summary["results"].items():
        spec = config["scenarios"][scenario]
        rows = [
            [
                arm,
                str(len(row["seeds"])),
                _ci(row["batched"]["mean_return"]),
                _ci(row["reference"]["mean_return"]),
                _ci(row["reference"]["success_rate"], True),
                _ci(row["reference"]["collision_rate"], True),
                _ci(row["reference"]["mean_speed"]) if "mean_speed" in row["reference"] else "",
            ]
            for arm, row in arms.items()
        ]
        rows += [
            [
                f"{name} policy",
                "-",
                f"{b['batched']['mean_return']:.2f}",
                f"{b['reference']['mean_return']:.2f}",
                f"{b['reference']['success_rate']:.0%}",
                f"{b['reference']['collision_rate']:.0%}",
                f"{b['reference']['mean_speed']:.2f}"
                if b["reference"].get("mean_speed") is not None
                else "",
            ]
            for name, b in summary["references"].get(scenario, {}).items()
        ]
        # a scenario highway-env lacks is judged on the batched simulator itself
        judge = "highway-env" if spec["reference"] != spec["train"] else "the batched simulator"
        both = "both backends" if spec["reference"] != spec["train"] else "its only backend"
        lines += [
            f"#### {scenario}: trained on `{spec['train']}`, evaluated on {both}",
            "",
            f"Return on each backend; success, collision and speed (m/s) on {judge}; mean and "
            "95% t-interval over seeds:",
            "",
            *_table(
                [
                    "arm",
                    "seeds",
                    "return, batched",
                    f"return, {judge.removeprefix('the ')}",
                    "success",
                    "collision",
                    "speed",
                ],
                rows,
            ),
        ]
        if not arms:
            continue
        if all("iqm" in row for row in arms.values()):
            lines += [
                f"Interquartile mean over runs on {judge} ({scenario}), 95% percentile "
                "bootstrap interval in brackets:",
                "",
            ]
            lines += _table(
                ["arm", "runs", "success", "collision", "speed", "return"],
                [
                    [
                        arm,
                        str(row["iqm"]["success_rate"]["n"]),
                        _iqm(row["iqm"]["success_rate"], True),
                        _iqm(row["iqm"]["collision_rate"], True),
                        _iqm(row["iqm"]["mean_speed"]),
                        _iqm(row["iqm"]["mean_return"]),
                    ]
                    for arm, row in arms.items()
                ],
            )
        robust = {a: r["robustness"] for a, r in arms.items()}
        modes = sorted({m for r in robust.values() for m in r}, key=_mode_order)
        if modes:
            lines += [f"Robustness on {judge} ({scenario}), return:", ""]
            lines += _table(
                ["arm", *(m.replace("_", " ") for m in modes)],
                [
                    [arm, *(_ci(r[m]["mean_return"]) if m in r else "" for m in modes)]
                    for arm, r in robust.items()
                ],
            )
        lines += [f"Throughput ({scenario}), steps/s of each run on one core:", ""]
        lines += _table(
            ["arm", "training", "raw env (same run)", "training / env"],
            [
                [
                    arm,
                    f"{row['throughput']['train_steps_per_s']['mean']:.0f}",
                    f"{row['throughput']['env_steps_per_s']['mean']:.0f}",
                    _ci(row["throughput"]["train_over_env"]),
                ]
                for arm, row in arms.items()
            ],
        )
        same = summary.get("at_equal_time", {}).get(scenario)
        if same:
            lines += [
                f"Success at equal wall time ({scenario}): training-episode success (last "
                f"{SMOOTHING} updates) of every arm after {same['seconds'] / 60:.1f} min, when "
                "the fastest arm's runs had finished their budget (mean over its seeds; wall "
                "times compare only where runs shared the machine alike):",
                "",
            ]
            lines += _table(
                ["arm", "steps trained by then", "training success then"],
                [
                    [arm, f"{cell['steps']['mean']:.0f}", _ci(cell["success"], True)]
                    for arm, cell in same["arms"].items()
                ],
            )
        if scenario in summary["attention_over_combined_speed"]:
            ratio = summary["attention_over_combined_speed"][scenario]
            lines += [f"attention / CombinedExtractor training speed: {ratio:.2f}x", ""]
        for arm, row in arms.items():
            if "attention" not in row:
                continue
            att = row["attention"]
            lines += [
                f"Attention attribution ({scenario}, {arm}, last layer, mean over seeds): "
                f"camera share {_ci(att['camera_share'], True)}, occlusion ratio "
                f"{_ci(att['occlusion_ratio'])}",
                "",
                f"Occlusion ratio per seed: {_faithfulness(row['seeds'], att['occlusion_runs'])}",
                "",
            ]
            lines += _table(
                ["road element", "share of image", "attention mass", "lift"],
                [
                    [
                        cls,
                        _ci(att["class_share"][cls], True),
                        _ci(mass, True),
                        _ci(att["class_lift"][cls]),
                    ]
                    for cls, mass in att["class_mass"].items()
                ],
            )
            if "relevance" in row:
                lines += _relevance_markdown(scenario, arm, row["relevance"])
        lines += _signals_markdown(scenario, arms, summary["references"].get(scenario, {}))
    bad = summary["not_finished"]
    if bad or summary["missing"]:
        lines.append("Runs that did not finish:")
        lines += [f"- {r['scenario']}-{r['arm']}-s{r['seed']}: {r.get('error')}" for r in bad]
        lines += [f"- {m['scenario']}-{m['arm']}-s{m['seed']}: not run" for m in summary["missing"]]
    else:
        lines.append("Every planned run finished.")
    return "\n".join(lines) + "\n"


SITUATION_TEXT = {
    "light_red": "approaching, light red",
    "light_amber": "approaching, light amber",
    "light_green": "approaching, light green",
    "pedestrian_ahead": "pedestrian on a crossing ahead",
    "pedestrian_elsewhere": "pedestrians elsewhere",
}


def _relevance_markdown(scenario: str, arm: str, relevance: Mapping[str, Any]) -> list[str]:
    """The attention-relevance agreement table of one arm."""
    lines = [
        f"Attention on what matters ({scenario}, {arm}, last layer): how often the most-attended "
        "object token, or camera patch, is on an object the teacher's decision depends on, "
        "against a uniformly random choice; mean and 95% t-interval over seeds:",
        "",
    ]
    rows = [
        [
            {"tokens": "object tokens", "patches": "camera patches"}[part],
            _ci(cells["hit"], True),
            _ci(cells["chance"], True),
            _ci(cells["ratio"]),
            f"{cells['frames']} ({cells['runs']} runs)",
        ]
        for part, cells in relevance.items()
        if cells["runs"]
    ]
    return lines + _table(["attended", "on a relevant object", "chance", "ratio", "frames"], rows)


def _signals_markdown(
    scenario: str, arms: Mapping[str, Any], references: Mapping[str, Any]
) -> list[str]:
    """The signalised scenario's tables: infractions of every arm and reference policy; per
    attention arm, the attention on the light and on pedestrians by situation, and the light
    test. Nothing where the scenario has no lights."""
    judged = [(arm, row["reference"]) for arm, row in arms.items()]
    if not any("red_light_rate" in cells for _, cells in judged):
        return []
    lines = [
        f"Infractions ({scenario}): share of episodes with a red light run, and with a "
        "pedestrian hit (a collision); mean and 95% t-interval over seeds:",
        "",
    ]
    rows = [
        [arm, _ci(c["red_light_rate"], True), _ci(c["pedestrian_collision_rate"], True)]
        for arm, c in judged
        if "red_light_rate" in c
    ]
    rows += [
        [
            f"{name} policy",
            f"{b['reference']['red_light_rate']:.0%}",
            f"{b['reference']['pedestrian_collision_rate']:.0%}",
        ]
        for name, b in references.items()
        if "red_light_rate" in b.get("reference", {})
    ]
    lines += _table(["policy", "ran a red light", "hit a pedestrian"], rows)
    for arm, row in arms.items():
        signals = row.get("signals")
        if not signals:
            continue
        lines += [
            f"Attention on the light and on pedestrians by situation ({scenario}, {arm}, last "
            "layer; frames that show the element; mass = share of the policy query's camera "
            "attention, lift = mass / share of the image; mean and 95% t-interval over seeds):",
            "",
        ]
        table = []
        for name, cells in signals["situations"].items():
            light = "traffic_light" if name.startswith("light_") else "pedestrian"
            if f"{light}_mass" not in cells:
                continue
            table.append(
                [
                    SITUATION_TEXT.get(name, name),
                    str(cells["frames"]),
                    light.replace("_", " "),
                    _ci(cells[f"{light}_share"], True),
                    _ci(cells[f"{light}_mass"], True),
                    _ci(cells[f"{light}_lift"]),
                ]
            )
        lines += _table(["situation", "frames", "element", "share", "mass", "lift"], table)
        tests = signals.get("light_test", {})
        if tests:
            lines += [
                f"Light test ({scenario}, {arm}): on frames with the light in view, the light's "
                "pixels blanked (set to 0), shown in the other colour, or as many pixels blanked "
                "elsewhere (control); share of frames whose most likely action changes, "
                "KL(as is || changed), and P(slower):",
                "",
            ]
            table = []
            for state, block in tests.items():
                for condition in ("as_is", "blanked", "swapped", "control"):
                    cells = block[condition]
                    text = condition.replace("_", " ")
                    if condition == "swapped":
                        text = f"shown {block['shown_as']}"
                    table.append(
                        [
                            f"{state} ({block['frames']} frames)",
                            text,
                            _ci(cells["action_changed"], True) if "action_changed" in cells else "",
                            _ci(cells["kl"]) if "kl" in cells else "",
                            _ci(cells["stop_probability"]) if "stop_probability" in cells else "",
                        ]
                    )
            lines += _table(["light", "frames shown", "action changed", "KL", "P(slower)"], table)
    return lines


def _mode_order(mode: str) -> int:
    order = ("intact", "camera_blanked", "sensors_zeroed", "sensor_noise")
    return order.index(mode) if mode in order else len(order)


def write_report(
    config: BenchmarkConfig,
    results: Sequence[dict[str, Any]],
    references: dict[str, Any],
    out_dir: Path,
    command: str,
) -> dict[str, Any]:
    """``results.json``, ``results.md`` and the learning-curve PNGs in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = aggregate(config, results, references)
    summary["command"] = command
    summary["plots"] = [p.name for p in plot_curves(config, results, out_dir)]
    write_json(out_dir / "results.json", summary)
    text = markdown(summary)
    write_text(out_dir / "results.md", f"Produced by `{command}`.\n\n{text}")
    summary["markdown"] = text
    return summary
