"""``evaluate.py --attention``: what a trained policy attends to, and whether it matters.

Three passes over seeded episodes (episode ``k`` uses seed ``seed + k``, as the evaluation):

1. attribution: every frame's camera attention per layer (heads averaged) against the env's
   road labels: mass and lift per road class, mass on the lead vehicle, split between camera and
   sensor tokens, mass per sensor group (:class:`agent.evaluate.attribution.Attribution`);
2. faithfulness: :func:`agent.evaluate.attribution.occlusion_test` on up to ``max_frames`` of
   those frames;
3. modality reliance: the same episodes with the camera blanked, the sensors zeroed and noisy
   sensors (:func:`evaluate_ablations`, which the benchmark also uses), and the attention's camera
   share on the ablated frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from drive_attention.agent.evaluate.agreement import (
    Agreement,
    RelevanceJudge,
    format_agreement,
    relevance_env,
)
from drive_attention.agent.evaluate.attribution import (
    ABLATIONS,
    SITUATIONS,
    Attribution,
    ModalityAblation,
    SB3Probe,
    light_test,
    occlusion_test,
    situations,
)
from drive_attention.agent.evaluate.episodes import FAITHFUL_RATIO, EvalReport
from drive_attention.agent.evaluate.marks import OBJECT_TOKEN
from drive_attention.agent.evaluate.rollout import evaluate
from drive_attention.agent.policies.base import Policy, TrainedPolicy
from drive_attention.agent.run.build import make_env
from drive_attention.envs.contract import (
    DISCRETE_ACTIONS,
    LIGHT_PALETTE,
    LIGHT_STATES,
    ROAD_CLASSES,
)
from drive_attention.models import attention_from_policy


def _layer_maps(policy: TrainedPolicy, obs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-layer, head-averaged attention of one observation or a batch."""
    maps = attention_from_policy(policy.model.policy, policy.prepare(obs)).to("cpu")
    layers = range(maps.num_layers)
    return {
        "camera": maps.query_camera.mean(dim=2).numpy(),  # (B, L, gh, gw)
        "sensors": maps.query_sensors.mean(dim=2).numpy(),  # (B, L, S)
        "names": tuple(maps.sensor_token_names),
        # the query's row sums to 1 over all tokens: its camera mass is the camera's share
        "camera_share": np.stack([maps.camera_mass(i).numpy() for i in layers], 1),  # (B, L)
    }


def camera_share(policy: TrainedPolicy, obs: dict[str, np.ndarray], layer: int = -1) -> float:
    """Mean fraction of the policy query's attention on camera tokens over a batch."""
    return float(_layer_maps(policy, obs)["camera_share"][:, layer].mean())


def analyse_attention(
    policy: TrainedPolicy,
    env_id: str,
    env_kwargs: dict[str, Any],
    intact: EvalReport,
    episodes: int,
    seed: int,
    cell: tuple[int, int] | None = None,
    occlusion_fraction: float = 0.1,
    max_frames: int = 256,
    noise_std: float = 0.3,
    progress: Callable[[str], None] | None = None,
    relevance_frames: int = 256,
) -> dict[str, Any]:
    """The ``attention`` section of the evaluation JSON (see the module docstring).

    ``intact`` is the ordinary evaluation of the same policy and episodes; ``cell`` the camera
    pixels per attention patch (the model's patch size).
    """
    say = progress or (lambda _: None)
    env = make_env(env_id, {**env_kwargs, "road_labels": True})
    frames: list[dict[str, np.ndarray]] = []
    layers: list[Attribution] = []
    # the signalised scenario: attribution per situation (last layer), and the frames with the
    # light in view for the light test
    by_situation = {name: Attribution() for name in SITUATIONS}
    light_frames: dict[str, list[tuple[dict[str, np.ndarray], np.ndarray]]] = {
        "red": [],
        "green": [],
    }
    try:
        say("attention: attribution over the evaluation episodes")
        for k in range(episodes):
            obs, info = env.reset(seed=seed + k)
            while True:
                maps = _layer_maps(policy, obs)
                if not layers:
                    layers = [Attribution() for _ in range(maps["camera"].shape[1])]
                for layer, attribution in enumerate(layers):
                    attribution.add(
                        maps["camera"][0, layer],
                        info["road_labels"],
                        lead_mask=info.get("lead_vehicle_mask"),
                        camera_total=float(maps["camera_share"][0, layer]),
                        sensor_map=maps["sensors"][0, layer],
                        sensor_token_names=maps["names"],
                        cell=cell,
                    )
                for name in situations(info, info["road_labels"]):
                    by_situation[name].add(maps["camera"][0, -1], info["road_labels"], cell=cell)
                    state = name.removeprefix("light_")
                    if state in light_frames:
                        light_frames[state].append((obs, info["road_labels"]))
                frames.append(obs)
                obs, _, terminated, truncated, info = env.step(policy.act(obs))
                if terminated or truncated:
                    break
    finally:
        env.close()

    rng = np.random.default_rng(seed)
    if len(frames) > max_frames:
        keep = np.sort(rng.choice(len(frames), max_frames, replace=False))
        frames = [frames[i] for i in keep]
    batch = {key: np.stack([f[key] for f in frames]) for key in frames[0]}

    say(f"attention: occlusion check on {len(frames)} frames")
    batch_maps = _layer_maps(policy, batch)
    camera_maps = batch_maps["camera"][:, -1]  # (B, gh, gw) last layer
    occlusion = occlusion_test(
        SB3Probe(policy.model.policy),
        policy.prepare(batch),
        camera_maps,
        fraction=occlusion_fraction,
        seed=seed,
        cell=cell,
    )

    modality: dict[str, Any] = {
        "intact": {
            **_figures(intact),
            "camera_share": float(batch_maps["camera_share"][:, -1].mean()),
        }
    }
    ablations = evaluate_ablations(
        policy,
        env_id,
        env_kwargs,
        episodes,
        seed,
        noise_std,
        lambda line: say(f"attention: {line}"),
    )
    for mode, (report, ablated) in ablations.items():
        modality[mode] = {
            **_figures(report),
            "camera_share": camera_share(policy, ablated.observation(batch)),
        }

    signals = _signals_section(policy, by_situation, light_frames, max_frames, seed, say)
    agreement = measure_agreement(
        policy, env_id, env_kwargs, episodes, seed, cell, relevance_frames, say
    )
    last = layers[-1].summary()
    return {
        **signals,
        **last,
        "relevance": agreement,
        "layer": len(layers) - 1,
        "per_layer": [{"layer": i, **a.summary()} for i, a in enumerate(layers)],
        "per_frame": layers[-1].per_frame,
        "occlusion_ratio": occlusion["occlusion_ratio"],
        "faithful": bool(occlusion["occlusion_ratio"] >= FAITHFUL_RATIO),
        "occlusion": occlusion,
        "modality": modality,
        "noise_std": noise_std,
    }


def measure_agreement(
    policy: TrainedPolicy,
    env_id: str,
    env_kwargs: dict[str, Any],
    episodes: int,
    seed: int,
    cell: tuple[int, int] | None = None,
    max_frames: int = 256,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Attention-relevance agreement (:mod:`agent.evaluate.agreement`) of the policy's last
    layer on the same seeded episodes, on ``env_id``'s batched version (where the teacher
    plans), until ``max_frames`` frames have had their relevance computed (the last episode
    cut there); None where there is no batched version or no discrete meta-action."""
    batched = relevance_env(env_id)
    if batched is None or max_frames < 1:
        return None
    env = make_env(batched, {**env_kwargs, "road_labels": True})
    judge = RelevanceJudge.attach(env)
    if judge is None:
        env.close()
        return None
    if progress is not None:
        progress(f"attention: relevance and agreement on {batched} (up to {max_frames} frames)")
    agreement = Agreement(seed=seed)
    try:
        for k in range(episodes):
            if judge.frames >= max_frames:
                break
            agreement.start_episode()
            obs, info = env.reset(seed=seed + k)
            while True:
                maps = _layer_maps(policy, obs)
                names = maps["names"]
                # the objects.<k> tokens in k order (info["object_slots"][k] is k's slot)
                objects = [i for _, i in sorted(_object_tokens(names))]
                rel = judge.now()
                agreement.add(
                    rel.slots(0),
                    bool(rel.light[0]),
                    maps["sensors"][0, -1][objects] if objects else None,
                    info.get("object_slots"),
                    maps["camera"][0, -1],
                    info.get("object_ids"),
                    info.get("road_labels"),
                    cell,
                )
                obs, _, terminated, truncated, info = env.step(policy.act(obs))
                if terminated or truncated or judge.frames >= max_frames:
                    break
    finally:
        env.close()
    agreement.seconds = judge.seconds
    return {"env_id": batched, **agreement.summary()}


def _object_tokens(names: tuple[str, ...]) -> list[tuple[int, int]]:
    """(k, token index) of the ``objects.<k>`` sensor tokens (named as the videos read them:
    :data:`agent.evaluate.marks.OBJECT_TOKEN`)."""
    return [(int(m.group(1)), i) for i, name in enumerate(names) if (m := OBJECT_TOKEN.match(name))]


def _signals_section(
    policy: TrainedPolicy,
    by_situation: dict[str, Attribution],
    light_frames: dict[str, list[tuple[dict[str, np.ndarray], np.ndarray]]],
    max_frames: int,
    seed: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """``situations`` (attention mass and lift on the light and on pedestrians per situation)
    and ``light_test`` (:func:`agent.evaluate.attribution.light_test` on the frames with a red
    light in view, shown green, and with a green one, shown red), where the env reports them;
    {} else."""
    if not any(a.frames for a in by_situation.values()):
        return {}
    out: dict[str, Any] = {"situations": {}}
    for name, attribution in by_situation.items():
        summary = attribution.summary()
        row: dict[str, Any] = {"frames": summary["frames"]}
        for element in ("traffic_light", "pedestrian"):
            if element in summary.get("class_mass", {}):
                row[f"{element}_mass"] = summary["class_mass"][element]
                row[f"{element}_share"] = summary["class_share"][element]
                row[f"{element}_lift"] = summary["class_lift"][element]
        out["situations"][name] = row
    stop = None
    action_space = getattr(policy.model, "action_space", None)
    if action_space is not None and getattr(action_space, "n", None) == len(DISCRETE_ACTIONS):
        stop = DISCRETE_ACTIONS.index("slower")
    rng = np.random.default_rng(seed)
    tests: dict[str, Any] = {}
    for state, swap in (("red", "green"), ("green", "red")):
        chosen = light_frames[state]
        if not chosen:
            continue
        if len(chosen) > max_frames:
            chosen = [chosen[i] for i in np.sort(rng.choice(len(chosen), max_frames, False))]
        say(f"attention: light test on {len(chosen)} frames with the light {state}")
        batch = {key: np.stack([o[key] for o, _ in chosen]) for key in chosen[0][0]}
        labels = np.stack([lab for _, lab in chosen])
        colour = LIGHT_PALETTE[LIGHT_STATES.index(swap)]
        tests[state] = light_test(
            SB3Probe(policy.model.policy), policy.prepare(batch), labels, colour, seed, stop
        )
        tests[state]["shown_as"] = swap
    out["light_test"] = tests
    return out


def evaluate_ablations(
    policy: Policy,
    env_id: str,
    env_kwargs: dict[str, Any],
    episodes: int,
    seed: int,
    noise_std: float = 0.3,
    progress: Callable[[str], None] | None = None,
) -> dict[str, tuple[EvalReport, ModalityAblation]]:
    """The evaluation's seeded episodes once under each modality ablation (:data:`ABLATIONS`).

    Each report comes with its ablation wrapper (its env closed): ``wrapper.observation(obs)``
    still ablates other observations, continuing the same noise stream.
    """
    out: dict[str, tuple[EvalReport, ModalityAblation]] = {}
    for mode in ABLATIONS:
        if progress is not None:
            progress(f"{episodes} episodes with {mode.replace('_', ' ')}")
        ablated = ModalityAblation(make_env(env_id, env_kwargs), mode, noise_std, seed)
        try:
            out[mode] = (evaluate(ablated, policy, episodes, seed, env_id=env_id), ablated)
        finally:
            ablated.close()
    return out


def _figures(report: EvalReport) -> dict[str, float]:
    summary = report.summary()
    keys = ("mean_return", "std_return", "success_rate", "collision_rate", "mean_length")
    return {key: summary[key] for key in keys}


def format_attention(attention: dict[str, Any]) -> str:
    """The printed tables: per-class mass and lift, occlusion, modality reliance."""
    lines = [
        f"Attention of the policy query, layer {attention['layer']} "
        f"(heads averaged, {attention['frames']} frames)",
        f"{'class':14s} {'area':>7s} {'mass':>7s} {'lift':>6s}",
    ]
    for name in ROAD_CLASSES:
        if name in attention["class_mass"]:
            lines.append(
                f"{name:14s} {attention['class_share'][name]:7.1%} "
                f"{attention['class_mass'][name]:7.1%} {attention['class_lift'][name]:6.2f}"
            )
    if "lead_vehicle_mass" in attention:
        lines.append(
            f"{'lead vehicle':14s} {'':7s} {attention['lead_vehicle_mass']:7.1%} "
            f"{attention['lead_vehicle_lift']:6.2f}   ({attention['lead_vehicle_frames']} frames)"
        )
    groups = ", ".join(f"{g} {m:.0%}" for g, m in attention["sensor_group_mass"].items())
    lines.append(f"camera share of attention {attention['camera_share']:.0%}; sensors: {groups}")
    occ = attention["occlusion"]
    lines.append(
        f"occlusion ({occ['patches_blanked']} patches): KL top {occ['top_kl']:.4f}, "
        f"random {occ['random_kl']:.4f}, least {occ['least_kl']:.4f} -> "
        f"ratio {attention['occlusion_ratio']:.2f} (value ratio {occ['occlusion_ratio_value']:.2f})"
    )
    if attention["occlusion_ratio"] < FAITHFUL_RATIO:
        lines.append(
            f"MAP NOT FAITHFUL: blanking the most-attended patches moves the policy less than "
            f"{FAITHFUL_RATIO:g}x as much as blanking random ones; the map does not explain "
            "this policy's choices"
        )
    lines += _format_signals(attention)
    if attention.get("relevance"):
        lines.append(format_agreement(attention["relevance"]))
    lines.append(
        f"{'modality':16s} {'return':>14s} {'success':>8s} {'collision':>10s} {'camera att.':>12s}"
    )
    for mode, row in attention["modality"].items():
        lines.append(
            f"{mode:16s} {row['mean_return']:7.2f} ± {row['std_return']:4.2f} "
            f"{row['success_rate']:8.0%} {row['collision_rate']:10.0%} {row['camera_share']:12.0%}"
        )
    return "\n".join(lines)


def _format_signals(attention: dict[str, Any]) -> list[str]:
    """The situation table and the light test, where the evaluation has them."""
    if "situations" not in attention:
        return []
    lines = [
        f"{'situation':22s} {'frames':>6s} {'light mass':>10s} {'lift':>6s} {'ped. mass':>9s} "
        f"{'lift':>6s}"
    ]
    for name, row in attention["situations"].items():
        light = (
            f"{row['traffic_light_mass']:10.1%} {row['traffic_light_lift']:6.2f}"
            if "traffic_light_mass" in row
            else f"{'':10s} {'':6s}"
        )
        ped = (
            f"{row['pedestrian_mass']:9.1%} {row['pedestrian_lift']:6.2f}"
            if "pedestrian_mass" in row
            else ""
        )
        lines.append(f"{name:22s} {row['frames']:6d} {light} {ped}")
    for state, test in attention.get("light_test", {}).items():
        parts = []
        for name in ("as_is", "blanked", "swapped", "control"):
            row = test[name]
            text = name if name != "swapped" else f"shown {test['shown_as']}"
            if "stop_probability" in row:
                text += f" P(slower) {row['stop_probability']:.2f}"
            if "action_changed" in row:
                text += f", action changed {row['action_changed']:.0%}, KL {row['kl']:.3f}"
            parts.append(text)
        lines.append(f"light test, {state} ({test['frames']} frames): " + "; ".join(parts))
    return lines
