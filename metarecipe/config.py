"""YAML configs onto typed dataclasses, with `key=value` overrides from the command line.

A config file is a mapping whose keys are the dataclass's fields; a field that is itself a dataclass takes a
nested mapping. Unknown keys and values of the wrong type are errors that name the file, the dotted key and
what was expected; nothing is coerced silently (an int is accepted where a float is expected). Overrides
use dotted keys (`model.d_model=128`) and YAML syntax for values. Files are read with yaml.safe_load.
A dataclass checks the ranges of its own fields in __post_init__ (`require_at_least`, `require_positive`,
`require`): a value out of range is a FieldError, reported with its dotted key (`train.steps: must be...`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from metarecipe.errors import InputError

T = TypeVar("T")


class ConfigError(InputError, ValueError):
    """A config that cannot work; the message names the file (where there is one) and the dotted key."""


class FieldError(ConfigError):
    """A field's value out of its range, raised by a config dataclass's own check; `key` names the field."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


def require(condition: bool, key: str, reason: str) -> None:
    """FieldError(key, reason) unless condition holds."""
    if not condition:
        raise FieldError(key, reason)


def require_at_least(config, low: int, *names: str, prefix: str = "") -> None:
    """FieldError unless every named field of config is at least low (`prefix`: put before the names)."""
    for name in names:
        value = getattr(config, name)
        require(value >= low, prefix + name, f"must be at least {low}, got {value!r}")


def require_positive(config, *names: str, prefix: str = "") -> None:
    """FieldError unless every named field of config is a finite number above zero."""
    for name in names:
        value = getattr(config, name)
        require(math.isfinite(value) and value > 0, prefix + name, f"must be above 0, got {value!r}")


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind).replace("typing.", ""))


def _check_value(value: Any, kind: Any, where: str) -> Any:
    """value converted to kind (dataclass, scalar, list[...], X | None, Literal) or ConfigError."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {_type_name(kind)} fields, got {value!r}")
        return _build(kind, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _check_value(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {kind}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_kind, value_kind = args or (Any, Any)
        return {_check_value(k, key_kind, f"{where} key"): _check_value(v, value_kind, f"{where}.{k}")
                for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if kind is Any:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (kind in (int, float) and isinstance(value, bool)) or not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {_type_name(kind)}, got {value!r} ({type(value).__name__})")
    return value


def _build(cls: type[T], values: dict, where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        keys = ", ".join(repr(f"{where}.{k}" if where else k) for k in unknown)
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {keys} (known here: {', '.join(fields)})")
    kwargs = {name: _check_value(value, hints[name], f"{where}.{name}" if where else name)
              for name, value in values.items()}
    try:
        return cls(**kwargs)
    except FieldError as err:  # the dataclass's own range check
        raise ConfigError(f"{where}.{err}" if where else str(err)) from None
    except (TypeError, ValueError) as err:  # a missing required field, or the dataclass's own validation
        raise ConfigError(f"{where or cls.__name__}: {err}") from err


def apply_override(values: dict, override: str) -> None:
    """Sets `a.b.c=value` (value in YAML syntax) in the nested mapping values."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r}: expected key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({err})") from err
    *parents, last = key.strip().split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a mapping")
    node[last] = value


def read_yaml(path) -> dict:
    """The mapping of a YAML config file (empty for an empty file); ConfigError naming the file otherwise."""
    try:
        loaded = yaml.safe_load(Path(path).read_bytes().decode("utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys to values")
    return loaded or {}


def from_mapping(cls: type[T], values, source: str | None = None) -> T:
    """An instance of the dataclass cls from a mapping already read (a model file's config, say), checked as a
    config file is; ConfigError naming the key, after `source` (the file) when given."""
    try:
        if not isinstance(values, dict):
            raise ConfigError(f"expected a mapping of {_type_name(cls)} fields, got {values!r}")
        return _build(cls, values, "")
    except ConfigError as err:
        if source is None:
            raise
        raise ConfigError(f"{source}: {err}") from None


def load_config(cls: type[T], path=None, overrides: list[str] = ()) -> T:
    """An instance of the dataclass cls from a YAML file (or only defaults) and overrides, checked."""
    values = read_yaml(path) if path is not None else {}
    for override in overrides:
        apply_override(values, override)
    return from_mapping(cls, values, None if path is None else str(path))


def as_dict(config) -> dict:
    """The resolved config as plain YAML-able values."""
    return dataclasses.asdict(config)


def dump_yaml(config) -> str:
    return yaml.safe_dump(as_dict(config), sort_keys=False, allow_unicode=True)
