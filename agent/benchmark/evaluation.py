"""Evaluating the study's policies: each trained policy on both backends, with modality ablations
and attention attribution on highway-env, and the random, idle and rule references on the same
seeded episodes."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from drive_attention.agent.benchmark.config import METRICS, BenchmarkConfig
from drive_attention.agent.benchmark.jobs import Job, plan, write_json
from drive_attention.agent.evaluate.attention_report import analyse_attention, evaluate_ablations
from drive_attention.agent.evaluate.episodes import EvalReport
from drive_attention.agent.evaluate.rollout import evaluate
from drive_attention.agent.policies.base import IdlePolicy, RandomPolicy
from drive_attention.agent.policies.rule import has_rule, rule_policy
from drive_attention.agent.run.build import make_env, probe_env
from drive_attention.agent.run.config import ConfigError
from drive_attention.agent.run.loading import load_agent
from drive_attention.envs import camera_geometry

# what a job's result keeps of the attribution (agent.evaluate.attention_report.analyse_attention)
ATTENTION_KEYS = (
    "class_mass",
    "class_lift",
    "class_share",
    "camera_share",
    "occlusion_ratio",
    "frames",
    "situations",  # the signalised scenario's, where the env reports them
    "light_test",
    "relevance",  # attention-relevance agreement, on the batched version of the scenario
)


def evaluate_job(job: Job) -> dict[str, Any]:
    """The trained policy on both backends; robustness and attribution on the reference."""
    spec = job.evaluation
    episodes, seed = spec["episodes"], spec["seed"]
    out: dict[str, Any] = {"evaluation": {}, "robustness": {}}
    for backend, env_id in (("batched", job.train_id), ("reference", job.reference_id)):
        agent = load_agent(job.run_dir, env_id=env_id, device="cpu")
        kwargs = dict(agent.config.env.kwargs)
        if backend == "batched" or env_id != job.train_id:
            env = make_env(env_id, kwargs)
            try:
                report = evaluate(env, agent.policy, episodes, seed, env_id=env_id)
            finally:
                env.close()
        # else: a scenario judged on the batched backend itself (no highway-env version, as the
        # signalised intersection): the same episodes, evaluated once
        out["evaluation"][backend] = {"env_id": env_id, **_summary(report)}
        print(f"{backend} ({env_id}): {out['evaluation'][backend]}", flush=True)
        if backend != "reference":
            continue
        if job.attribution:  # attribution, occlusion check and the same three ablations
            attention = analyse_attention(
                agent.policy,
                env_id,
                kwargs,
                report,
                episodes,
                seed,
                cell=camera_geometry(env_id, **kwargs).patch_cell(agent.config.model.patch),
                noise_std=spec["noise_std"],
                progress=lambda line: print(line, flush=True),
                relevance_frames=spec.get("relevance_frames", 256),
            )
            out["attention"] = {key: attention[key] for key in ATTENTION_KEYS if key in attention}
            out["robustness"] = {
                mode: {k: row[k] for k in METRICS} for mode, row in attention["modality"].items()
            }
        else:
            out["robustness"]["intact"] = {k: out["evaluation"][backend][k] for k in METRICS}
            ablations = evaluate_ablations(
                agent.policy, env_id, kwargs, episodes, seed, spec["noise_std"]
            )
            for mode, (ablated_report, _) in ablations.items():
                figures = ablated_report.summary()
                out["robustness"][mode] = {k: figures[k] for k in METRICS}
    return out


def _summary(report: EvalReport) -> dict[str, Any]:
    """The report's summary with the episode count and every episode's return."""
    return {
        **report.summary(),
        "episodes": len(report.episodes),
        "returns": [e.episode_return for e in report.episodes],
    }


REFERENCES: tuple[str, ...] = ("random", "idle", "rule")
"""The reference policies of every study, in the order the report lists them."""


def reference_policies(config: BenchmarkConfig, runs_root: Path) -> dict[str, Any]:
    """Random, idle and rule policies on every scenario and backend (rule where it has one: see
    :mod:`agent.policies.rule`): the same env settings and seeded episodes as the arms. Cached in
    ``<runs>/references.json`` (recomputed when they change)."""
    ev = config.evaluation
    cache = runs_root / "references.json"
    jobs = {job.scenario: job for job in reversed(plan(config, runs_root))}  # first arm's
    env_configs = {scenario: job.experiment().env for scenario, job in jobs.items()}
    key = {
        scenario: {"env": _plain(asdict(env_configs[scenario])), "evaluation": job.evaluation}
        for scenario, job in jobs.items()
    }
    key["policies"] = list(REFERENCES)  # a cache from before the rule policy is recomputed
    if cache.is_file():
        with contextlib.suppress(json.JSONDecodeError):
            saved = json.loads(cache.read_text())
            if saved.get("key") == _plain(key):
                return saved["references"]
    out: dict[str, Any] = {}
    for scenario, job in jobs.items():
        env_config = env_configs[scenario]
        out[scenario] = {}
        for backend, env_id in (("batched", job.train_id), ("reference", job.reference_id)):
            probe = probe_env(replace(env_config, id=env_id))
            policies = [
                ("random", RandomPolicy(probe.action_space)),
                ("idle", IdlePolicy(probe.idle_action)),
            ]
            if has_rule(env_id):
                kwargs = env_config.kwargs
                # a rule that cannot drive these settings (continuous actions on the roundabout)
                # leaves its row out
                with contextlib.suppress(ConfigError):
                    rule = rule_policy(env_id, kwargs, probe.sensor_names, probe.action_space)
                    policies.append(("rule", rule))
            for name, policy in policies:
                env = make_env(env_id, dict(env_config.kwargs))
                try:
                    report = evaluate(env, policy, ev.episodes, ev.seed, env_id=env_id)
                finally:
                    env.close()
                out[scenario].setdefault(name, {})[backend] = {
                    k: v for k, v in _summary(report).items() if k != "returns"
                }
    runs_root.mkdir(parents=True, exist_ok=True)
    write_json(cache, {"key": key, "references": out})
    return out


def _plain(value: Any) -> Any:
    """As it reads back from JSON (tuples as lists, anything else unusual as a string)."""
    return json.loads(json.dumps(value, default=str))
