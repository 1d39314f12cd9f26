"""Careless inputs to the experiment config: each ends in one ConfigError line that
names the key and says what to do, before any work; none escapes as a traceback.

No training here: ``read_yaml``/``load_config``/``probe_env`` in-process, and ``scripts/train.py``
only where it stops while reading the config.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from drive_attention import envs
from drive_attention.agent.run.admission import check_eval_env
from drive_attention.agent.run.build import EnvFactory, make_env, probe_env
from drive_attention.agent.run.cli import INTERRUPTED, guarded
from drive_attention.agent.run.config import (
    ConfigError,
    EnvConfig,
    LoggingConfig,
    PPOConfig,
    SACConfig,
    TrainConfig,
    resolve_config,
)
from drive_attention.agent.run.config_files import load_config, parse_overrides, read_yaml
from drive_attention.models import ExtractorConfig

ROOT = Path(__file__).resolve().parents[3]
DEFAULT = ROOT / "configs" / "highway_env.yaml"  # an experiment on the highway-env backend
SAC = ROOT / "configs" / "sac.yaml"
BATCHED = "env.id=DriveAttention/BatchedHighway-v0"
PROJECT_IDS = [*envs.HIGHWAY_IDS, *envs.BATCHED_IDS, envs.CARLA_ID]
ENV = {**os.environ, "WANDB_MODE": "disabled", "SDL_VIDEODRIVER": "offscreen"}


def train_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_error_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit status 2 and one ``error: ...`` line on stderr holding ``expected``, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def config_error(*args: object, call=load_config) -> str:
    """The message of the ConfigError that ``call(*args)`` raises: one line."""
    with pytest.raises(ConfigError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --------------------------------------------------------------------- 1. not a YAML mapping
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02"


@pytest.mark.parametrize(
    "content",
    [PNG, bytes(range(256)) * 8, b"train:\n  steps: 10\x00\x00\x00"],
    ids=["png", "bytes", "nul"],
)
def test_binary_config_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "experiment.yaml"  # e.g. a picture renamed .yaml
    path.write_bytes(content)
    for call in (read_yaml, load_config):
        message = config_error(path, call=call)
        assert str(path) in message and "binary" in message and "configs/default.yaml" in message


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- train\n- model\n", "list"), ("just some words\n", "str"), ("42\n", "int")],
)
def test_config_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    message = config_error(path)
    assert "expected a mapping" in message and kind in message and "train:" in message


def test_utf16_config_with_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"  # what some editors save as "Unicode"
    path.write_bytes("train:\n  steps: 10\n".encode("utf-16"))
    assert read_yaml(path) == {"train": {"steps": 10}}


def test_config_path_that_is_a_folder_is_named_as_one() -> None:
    message = config_error(ROOT / "configs")
    assert "is a folder" in message and "default.yaml" in message


def test_unreadable_config_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text("train: {steps: 10}\n")

    def denied(*args: object, **kwargs: object) -> typing.NoReturn:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)  # as for a file without read permission
    assert "Permission denied" in config_error(path)


def test_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text("algo: &loop\n  net_arch: *loop\n")
    assert "alias" in config_error(path)


def _nested_aliases(levels: int) -> str:
    """YAML of a few hundred bytes whose aliases expand to 10**levels values ("billion laughs")."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for k in range(1, levels):
        lines.append(f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


def test_aliases_that_expand_past_any_settings_file_are_refused(tmp_path: Path) -> None:
    """Nested aliases stand for 10**9 values in 600 bytes: refused from the composed document,
    before anything is built, copied or checked value by value (each of which would hang)."""
    path = tmp_path / "experiment.yaml"
    path.write_text(_nested_aliases(9))
    assert len(path.read_bytes()) < 1000
    assert "aliases (*name) expand it past" in config_error(path)
    nested = ", ".join(f"&{b} [{', '.join([f'*{a}'] * 10)}]" for a, b in zip("abcde", "bcdef"))
    override = f"train.x=[&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], {nested}]"  # 10**6 values
    with pytest.raises(ConfigError, match="expand it past"):
        parse_overrides([override])


def test_aliases_within_the_bound_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(_nested_aliases(3) + "base: &b {lr: 1, n: 2}\ntrain:\n  <<: *b\n  n: 3\n")
    raw = read_yaml(path)
    assert len(raw["l2"]) == 10 and raw["l2"][0][0] == ["x"] * 10
    assert raw["train"] == {"lr": 1, "n": 3}


def test_train_script_binary_config_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "picture.yaml"
    path.write_bytes(PNG)
    result = train_script("--config", str(path), f"logging.root={tmp_path}")
    assert_one_error_line(result, str(path), "binary")
    assert not (tmp_path / "picture").exists()


# --------------------------------------------------------------------- 2. duplicate keys
@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("algo:\n  name: ppo\ntrain:\n  steps: 10\nalgo:\n  gamma: 0.5\n", "algo", (1, 5)),
        (
            "algo:\n  learning_rate: 1.0e-3\n  gamma: 0.9\n  learning_rate: 3.0e-4\n",
            "learning_rate",
            (2, 4),
        ),
        ("env:\n  kwargs:\n    sim: {lanes_count: 3, lanes_count: 4}\n", "lanes_count", (3, 3)),
    ],
    ids=["section", "option", "nested"],
)
def test_key_given_twice_is_refused(tmp_path: Path, text: str, key: str, lines: tuple) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    for call in (read_yaml, load_config):
        message = config_error(path, call=call)
        assert f"'{key}' appears twice" in message, message
        assert f"line {lines[1]}" in message and f"first at line {lines[0]}" in message


def test_merge_keys_still_override_what_they_merge(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text("a: &base {x: 1, y: 2}\nb:\n  <<: *base\n  x: 3\n")
    assert read_yaml(path) == {"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 2}}


def test_key_given_twice_in_an_override_value_is_refused() -> None:
    message = config_error(DEFAULT, ["env.kwargs.sim={lanes_count: 3, lanes_count: 4}"])
    assert "env.kwargs.sim" in message and "'lanes_count' appears twice" in message


# --------------------------------------------------------------------- 3. non-finite numbers
def _float_fields() -> list[tuple[str, type, str]]:
    """(section, schema class, field) of every option that takes a float."""
    out = []
    schema = [
        ("env", EnvConfig),
        ("algo", PPOConfig),
        ("algo", SACConfig),
        ("train", TrainConfig),
        ("logging", LoggingConfig),
        ("model", ExtractorConfig),
    ]
    for section, cls in schema:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] is float or float in typing.get_args(hints[f.name]):
                out.append((section, cls, f.name))
    return out


FLOAT_FIELDS = _float_fields()


def test_float_options_are_found() -> None:
    names = {(cls.__name__, name) for _, cls, name in FLOAT_FIELDS}
    expected = {("PPOConfig", "learning_rate"), ("PPOConfig", "clip_range"), ("SACConfig", "tau")}
    assert expected | {("SACConfig", "ent_coef"), ("ExtractorConfig", "mlp_ratio")} <= names


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
@pytest.mark.parametrize(
    ("section", "cls", "name"), FLOAT_FIELDS, ids=[f"{c.__name__}.{n}" for _, c, n in FLOAT_FIELDS]
)
def test_non_finite_float_option_is_refused(section: str, cls: type, name: str, value: str) -> None:
    config = SAC if cls is SACConfig else DEFAULT
    message = config_error(config, [f"{section}.{name}={value}"])
    assert message.startswith(f"{section}.{name}: ") and "finite" in message


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize(
    ("cls", "name"),
    [(c, n) for _, c, n in FLOAT_FIELDS],
    ids=[f"{c.__name__}.{n}" for _, c, n in FLOAT_FIELDS],
)
def test_non_finite_float_is_refused_when_built_directly(
    cls: type, name: str, value: float
) -> None:
    # dataclasses.replace (evaluate --env, the benchmark's arms) and code building the schema
    message = config_error(call=lambda: cls(**{name: value}))
    assert message.startswith(f"{name}: ") and "finite" in message


def test_replace_cannot_sneak_in_infinity() -> None:
    config = load_config(DEFAULT)
    with pytest.raises(ConfigError, match=r"clip_range: must be a finite number"):
        dataclasses.replace(config.algo, clip_range=float("inf"))


# --------------------------------------------------------------------- 4. env ids of this project
def test_foreign_registered_env_id_is_refused_with_the_project_ids() -> None:
    message = config_error(DEFAULT, ["env.id=CartPole-v1"])
    assert message.startswith("env.id: 'CartPole-v1'")
    assert all(env_id in message for env_id in PROJECT_IDS)


@pytest.mark.parametrize(
    ("env_id", "meant"),
    [
        ("highway-v0", "DriveAttention/Highway-v0"),  # stock highway-env's id
        ("DriveAttention/Merge", "DriveAttention/Merge-v0"),
        ("driveattention/batchedhighway-v0", "DriveAttention/BatchedHighway-v0"),
        ("envs:DriveAttention/Roundabout-v0", "DriveAttention/Roundabout-v0"),
    ],
)
def test_env_id_did_you_mean(env_id: str, meant: str) -> None:
    assert f"did you mean '{meant}'" in config_error(DEFAULT, [f"env.id={env_id}"])


def test_module_form_env_id_imports_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported.txt"
    (tmp_path / "careless_user_envs.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    env_id = "careless_user_envs:Env-v0"
    with pytest.raises(ConfigError) as info:  # as scripts/train.py prepares a run
        probe_env(load_config(DEFAULT, [f"env.id={env_id}"]).env)
    assert str(info.value).startswith(f"env.id: '{env_id}'") and "import" in str(info.value)
    with pytest.raises(ConfigError, match=r"env\.id"):
        make_env(env_id, {})  # the evaluation code's own envs
    with pytest.raises(ConfigError, match=r"env\.id"):  # evaluate.py --env
        dataclasses.replace(EnvConfig(), id=env_id)
    assert not marker.exists() and "careless_user_envs" not in sys.modules


# --------------------------------------------------------------------- 5. run names
@pytest.mark.parametrize(
    "name",
    [
        "a" * 300,
        "a" * 101,
        "runs/mine",
        "..",
        "../escape",
        ".hidden",
        "my run",
        "run\n",
        "naïve",
        "a:b",
        "a*b?",
        "",
        "-rf",
    ],
)
def test_bad_run_name_is_refused(name: str) -> None:
    for overrides in ([f"logging.name={name!r}"], {"logging.name": name}):  # item and --name
        message = config_error(DEFAULT, overrides)
        assert message.startswith("logging.name: ") and "at most 100 characters" in message
        assert len(message) < 400


@pytest.mark.parametrize("name", ["highway-ppo-1", "2024", "a..b", "v1.2_final", "a" * 100])
def test_good_run_names_pass(name: str) -> None:
    assert load_config(DEFAULT, {"logging.name": name}).logging.name == name


def test_train_script_long_name_is_one_line(tmp_path: Path) -> None:
    result = train_script("--config", str(DEFAULT), "--name", "a" * 300, f"logging.root={tmp_path}")
    assert_one_error_line(result, "logging.name", "at most 100 characters")
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------- 6. env kwargs and friends
CARELESS_ENV_INPUTS = [
    (["env.kwargs.camera_size=64"], "env.kwargs.camera_size"),
    (["env.kwargs.camera_size=64x64"], "env.kwargs.camera_size"),
    (["env.kwargs.camera_size=[64]"], "env.kwargs.camera_size"),
    (["env.kwargs.camera_size=[64.5, 64]"], "env.kwargs.camera_size"),
    (["env.kwargs=camera_size"], "env.kwargs"),
    (["env.n_envs=0"], "env.n_envs"),
    (["env.n_envs=-1"], "env.n_envs"),
    (["env.kwargs.frame_stack='2'"], "env.kwargs.frame_stack"),
    (["env.kwargs.reward_weights.progress=high"], "env.kwargs.reward_weights.progress"),
    (["env.kwargs.render_mode=human"], "env.kwargs.render_mode"),
    (["env.kwargs.max_episode_steps=100"], "env.kwargs.duration"),
    (["env.kwargs.scenario=merge"], "env.id=DriveAttention/Merge-v0"),
    (["env.kwargs.sim.simulation_frequency=fast"], "env.kwargs.sim.simulation_frequency"),
    (["env.kwargs.sim.lanes_count=0"], "env.kwargs.sim.lanes_count"),
    (["env.kwargs.sim.lanes_count=two"], "env.kwargs.sim.lanes_count"),
    (["env.kwargs.sim.vehicles_count=many"], "env.kwargs.sim.vehicles_count"),
    (["env.kwargs.sim.observation=null"], "env.kwargs.sim.observation"),
    (["env.kwargs.sim.action=discrete"], "env.kwargs.sim.action"),
    ([BATCHED, "env.kwargs.num_envs=4"], "env.n_envs=4"),
    ([BATCHED, "env.kwargs.sim.vehicles_count=-1"], "env.kwargs.sim.vehicles_count"),
    ([BATCHED, "env.kwargs.sim.lanes_count=0"], "env.kwargs.sim.lanes_count"),
    ([BATCHED, "env.kwargs.device=cuda:99"], "env.kwargs.device"),
    (["train.seed=-1"], "train.seed"),
    (["algo.learning_rate=1" + "0" * 400], "algo.learning_rate"),  # OverflowError as a float
    (["env.kwargs.view_m=1" + "0" * 400], "env.kwargs.view_m"),
    (["train.eval_seed=99999999999"], "train.eval_seed"),
]


@pytest.mark.parametrize(
    ("overrides", "key"), CARELESS_ENV_INPUTS, ids=[" ".join(o) for o, _ in CARELESS_ENV_INPUTS]
)
def test_careless_env_input_names_the_key(overrides: list[str], key: str) -> None:
    def prepare() -> None:  # what scripts/train.py checks before any work
        probe_env(load_config(DEFAULT, overrides).env)

    message = config_error(call=prepare)
    assert key in message, message


def test_batched_env_config_names_unknown_option_as_spelled() -> None:
    message = config_error(
        "DriveAttention/BatchedHighway-v0",
        2,
        {"camera_sise": [32, 32]},
        call=EnvConfig,
    )
    assert message.startswith(
        "unknown option 'env.kwargs.camera_sise' (did you mean 'camera_size'?)"
    )


def test_env_that_fails_without_options_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in an env is not the user's to fix: it is not turned into a ConfigError."""
    import gymnasium

    def broken(*args: object, **kwargs: object) -> typing.NoReturn:
        raise RuntimeError("a bug in the env")

    monkeypatch.setattr(EnvFactory, "__call__", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        make_env("DriveAttention/Highway-v0", {})
    monkeypatch.setattr(gymnasium, "make", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        make_env("DriveAttention/Highway-v0", {"camera_size": [32, 32]})


def test_options_that_work_still_probe() -> None:
    config = load_config(
        DEFAULT, ["env.kwargs.camera_size=[32, 48]", "env.kwargs.sim.lanes_count=3"]
    )
    spec = probe_env(config.env)
    assert spec.observation_space["camera"].shape == (32, 48, 3)


def test_sac_reads_the_backends_default_action() -> None:
    """SAC needs continuous actions: CARLA's default action is continuous, so a CARLA config
    without ``action`` trains SAC, while an embedded id (discrete by default) is refused."""
    carla = resolve_config(
        {"env": {"id": "DriveAttention/Carla-v0", "n_envs": 1}, "algo": {"name": "sac"}}
    )
    assert carla.env.options.action == "continuous"
    with pytest.raises(ConfigError, match="sac needs continuous actions"):
        resolve_config({"env": {"id": "DriveAttention/Highway-v0"}, "algo": {"name": "sac"}})


def test_another_scenario_names_the_eval_env_to_set() -> None:
    """The default experiment judges on highway-env's highway: training another scenario with
    only ``env.id`` changed is refused before any work, naming the ``train.eval_env`` to set."""
    config = load_config(
        ROOT / "configs" / "default.yaml", ["env.id=DriveAttention/BatchedMerge-v0"]
    )
    with pytest.raises(ConfigError, match=r"set train\.eval_env=DriveAttention/Merge-v0"):
        check_eval_env(config, probe_env(config.env))


def test_ctrl_c_in_a_script_is_one_line_and_status_130(capsys: pytest.CaptureFixture) -> None:
    """Every script runs its body through ``guarded``: Ctrl-C while it works (an evaluation,
    an export) ends with one line and the shell's status for SIGINT, not a traceback."""

    def body() -> int:
        raise KeyboardInterrupt

    assert guarded(body) == INTERRUPTED == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted (Ctrl-C)" and "Traceback" not in err


def test_a_key_that_is_not_text_is_named() -> None:
    with pytest.raises(ConfigError, match=r"train\.5: option names are text .*not int"):
        resolve_config({"train": {5: 1}})
