"""Experiment files: the one YAML reader, overrides, loading, saving and diffing configs.

Overrides set one dotted key each, given either as data (``{"algo.n_epochs": 2}``: values kept as
they are) or as command-line items (``["algo.n_epochs=2"]``: values read as YAML).
:func:`read_yaml` is the one reader of YAML files (experiments, run directories, benchmarks); it
refuses binary files and a key given twice in one mapping (plain YAML keeps the last silently).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from drive_attention.agent.run.config import ExperimentConfig, resolve_config
from drive_attention.agent.run.files import write_text
from drive_attention.envs.configuration import ConfigError

MAX_YAML_VALUES = (
    100_000  # values of one YAML document with its aliases expanded (an experiment: ~100)
)
MAX_CONFIG_BYTES = 16 * 2**20  # a YAML experiment is a few kB; anything this large is not one


Overrides = Mapping[str, Any] | Sequence[str]
"""``{"section.key": value}`` (data, values kept as they are) or ``["section.key=value", ...]``
(command-line items, values read as YAML); later keys win."""


def parse_overrides(overrides: Overrides) -> list[tuple[list[str], Any]]:
    """``(key path, value)`` of each override. Command-line items ``key.sub=value`` have their
    values read as YAML (``3``, ``true``, ``[64, 64]``); a mapping's values are taken as given."""
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    elif isinstance(overrides, str):
        raise ConfigError(
            f"overrides: expected a list of section.key=value items, got {overrides!r}"
        )
    else:
        items = [_parse_item(item) for item in overrides]
    parsed = []
    for key, value in items:
        path = str(key).split(".")
        if not key or any(not part for part in path):
            raise ConfigError(f"override {key!r}: give section.key (e.g. model.layers)")
        parsed.append((path, value))
    return parsed


def _parse_item(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"override {item!r} must look like section.key=value, e.g. model.layers=3"
        )
    try:
        value = _load_yaml(text) if text.strip() else None
    except _Refused as err:
        shown = text if len(text) <= 60 else f"{text[:57]}..."
        raise ConfigError(f"{key}: in {shown!r}, {err.describe()}") from None
    except (yaml.YAMLError, RecursionError) as err:
        raise ConfigError(f"{key}: cannot read value {text!r} ({err.__class__.__name__})") from None
    return key, value


def apply_overrides(raw: Mapping[str, Any], overrides: Overrides) -> dict[str, Any]:
    """A deep copy of ``raw`` with each override set (see :data:`Overrides`)."""
    out: dict[str, Any] = _deep_copy(raw)
    for path, value in parse_overrides(overrides):
        node = out
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(
                    f"{'.'.join(path)}: cannot set a sub-key of {where}, which is {child!r}"
                )
            node = child
        node[path[-1]] = _deep_copy(value)
    return out


class _Refused(yaml.YAMLError):
    """YAML that parses but is refused as settings; :meth:`describe` says why and what to do."""

    def describe(self) -> str:
        return str(self)


class _DuplicateKey(_Refused):
    """A key given twice in one YAML mapping."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(f"key {key!r} appears twice")
        self.key, self.first, self.again = key, first, again

    def describe(self) -> str:
        return (
            f"line {self.again.line + 1}: key {self.key!r} appears twice in the same mapping "
            f"(first at line {self.first.line + 1}); keep one of them"
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a document whose aliases (``*name``) would expand it past :data:`MAX_YAML_VALUES`
    values (nested aliases grow exponentially: a few hundred bytes can stand for billions), or
    that refers to an anchor from inside it (no end). Counted on the composed nodes, each shared
    node once, before anything is built or copied."""
    sizes: dict[int, int] = {}  # id(node) -> values once expanded
    inside: set[int] = set()  # the nodes being counted, root to here
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, counted = stack.pop()
        if counted:
            inside.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[id(node)] > MAX_YAML_VALUES:
                raise _Refused(
                    f"its aliases (*name) expand it past {MAX_YAML_VALUES:,} values, far more than "
                    "any settings file holds; write the values out instead of nesting aliases"
                )
            continue
        if id(node) in sizes:
            continue
        if id(node) in inside:
            raise _Refused(
                "a YAML alias (*name) refers to the anchor (&name) it is inside of; copy the "
                "values out instead"
            )
        inside.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain YAML loading
    keeps the last one silently). Merge keys (``<<: *base``) still override what they merge."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expanded_size(node)
        self._check_duplicate_keys(node)
        return super().construct_document(node)

    def _check_duplicate_keys(self, root: yaml.Node) -> None:
        # on the composed nodes, before merge keys are flattened into their mappings
        stack, visited = [root], set()
        while stack:
            node = stack.pop()
            if id(node) in visited:  # an alias: already checked (or a cycle)
                continue
            visited.add(id(node))
            if isinstance(node, yaml.SequenceNode):
                stack.extend(reversed(node.value))
            elif isinstance(node, yaml.MappingNode):
                seen: dict[Any, yaml.Node] = {}
                for key_node, value_node in node.value:
                    stack.append(value_node)
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                        continue
                    key = self.construct_object(key_node)
                    if key in seen:
                        raise _DuplicateKey(key, seen[key].start_mark, key_node.start_mark)
                    seen[key] = key_node


def _load_yaml(source: str | bytes) -> Any:
    return yaml.load(source, Loader=_StrictLoader)  # a SafeLoader: plain data only


def read_yaml(path: str | Path, missing: str | None = None) -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file holds an empty one).

    Raises :class:`ConfigError` when the file does not exist (with the message ``missing``, which
    should say what to do, or a generic one), is a folder, cannot be read, is not text (a binary
    file), is not valid YAML, gives a key twice in one mapping, or holds no mapping.
    """
    path = Path(path)
    example = "a YAML experiment such as configs/default.yaml"
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.yaml"))[:5]
        inside = f" (it holds {', '.join(found)})" if found else ""
        raise ConfigError(f"{path}: is a folder, not a YAML file{inside}; give {example}")
    if not path.is_file():
        if path.exists():
            raise ConfigError(f"{path}: not a regular file; give {example}")
        raise ConfigError(missing or f"{path}: no such file")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: {size / 2**20:.0f} MiB is far too large for a YAML settings file; "
                f"give {example}"
            )
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"{path}: cannot be read ({err.strerror or err}); check that it is a file you may read"
        ) from None
    try:
        raw = _load_yaml(data)  # bytes: PyYAML reads UTF-8, or UTF-16/32 with a byte-order mark
    except yaml.reader.ReaderError as err:
        what = (
            f"byte {err.character:#04x} at position {err.position} is not {err.encoding} text"
            if isinstance(err.character, int)
            else f"it holds the control character #x{ord(err.character):04x} at position "
            f"{err.position}"
        )
        raise ConfigError(
            f"{path}: not a YAML text file ({what}; is it a binary file?); give {example}"
        ) from None
    except _Refused as err:
        raise ConfigError(f"{path}: {err.describe()}") from None
    except yaml.YAMLError as err:
        raise ConfigError(
            f"{path}: not valid YAML; fix it at the line and column named here: {err}"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{path}: nested too deeply to be a settings file; give {example}"
        ) from None
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping of settings (key: value lines, e.g. 'train:' then "
            f"'  steps: 1000'), got a {type(raw).__name__}; see {example}"
        )
    return dict(raw)


def load_config(
    path: str | Path | Mapping[str, Any], overrides: Overrides = ()
) -> ExperimentConfig:
    """Read a YAML experiment (or take one already read: a study reads its base once), apply
    overrides and validate everything."""
    if isinstance(path, Mapping):
        raw = dict(path)  # apply_overrides copies it before changing anything
    else:
        raw = read_yaml(
            path, missing=f"config file {path} does not exist; see configs/ for the experiments"
        )
    return resolve_config(apply_overrides(raw, overrides))


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain YAML/JSON data (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config, every option spelled out, as YAML (atomically, never through
    a symbolic link)."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None)
    write_text(path, "# Resolved configuration of this run (written by scripts/train.py)\n" + text)


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs, as ``key: a -> b`` lines."""
    lines = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            lines += config_diff(va, vb, f"{prefix}{key}.")
        elif _plain(va) != _plain(vb):
            lines.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return lines


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
