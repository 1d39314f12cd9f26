"""Typed configuration: dataclasses built from plain mappings, with errors that name the key."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
import warnings
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


def closest(name: str, allowed: list[str] | tuple[str, ...]) -> str:
    """' (did you mean X?)' for the closest allowed name, or ''."""
    match = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type hint ``hint`` and convert lists to tuples."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            hint_text = closest(str(value), [str(a) for a in args])
            raise ConfigError(f"{key}: {value!r} is not allowed{hint_text}; use one of {allowed}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        vt = args[1] if args else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {hint.__name__} fields")
        return build(hint, value, prefix=f"{key}.")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(f"{key}: {value} is too large for a number") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _renamed(cls: type, mapping: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``mapping`` with the old spellings of ``cls.ALIASES`` (old name -> new name) renamed,
    each with a warning that names the new key. A FutureWarning, not a DeprecationWarning:
    Python hides the latter outside ``__main__``, and these keys are written by users in their
    configs and ``gymnasium.make`` calls."""
    for old, new in getattr(cls, "ALIASES", {}).items():
        if old not in mapping:
            continue
        if new in mapping:
            raise ConfigError(
                f"{prefix}{old}: the old spelling of {prefix}{new}, which is also given; "
                f"keep {prefix}{new} only"
            )
        warnings.warn(
            f"option '{prefix}{old}' is now spelled '{prefix}{new}'; rename it (the old "
            "spelling still works for now)",
            FutureWarning,
            stacklevel=3,
        )
        mapping[new] = mapping.pop(old)
    return mapping


def build(cls: type[T], mapping: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``mapping``: unknown keys and wrong types raise ConfigError;
    old spellings in ``cls.ALIASES`` are renamed, with a warning.

    Range checks belong in the dataclass's ``__post_init__`` (raising ConfigError); their
    messages are prefixed with ``prefix`` here.
    """
    mapping = _renamed(cls, dict(mapping or {}), prefix)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in mapping:
        if not isinstance(key, str):
            raise ConfigError(
                f"{prefix}{key!r}: option names are text (a key such as {prefix}"
                f"{next(iter(fields), 'name')}), not {type(key).__name__}"
            )
        if key not in fields:
            raise ConfigError(
                f"unknown option '{prefix}{key}'{closest(key, list(fields))}; "
                f"allowed: {', '.join(prefix + f for f in fields)}"
            )
    missing = [
        name
        for name, f in fields.items()
        if name not in mapping
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"missing option '{prefix}{missing[0]}' (required: "
            f"{', '.join(prefix + name for name in missing)})"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in mapping.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(
            f"{prefix}{err}"
            if prefix and not str(err).startswith(prefix) and f"'{prefix}" not in str(err)
            else str(err)
        ) from None


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds (for ``__post_init__`` range checks)."""
    if not condition:
        raise ConfigError(message)
