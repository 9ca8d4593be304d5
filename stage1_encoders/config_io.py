"""Reading typed dataclass configs from dicts and JSON/YAML files, with errors that say where.

Generic over dataclasses whose leaves are ``int``, ``float``, ``bool``, ``str``, ``Path``, ``Literal[...]``,
``list[...]`` or optional versions of them; ``stage1_encoders.config`` defines the actual config.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A bad configuration value: ``"cfg.yaml, line 4, field 'trainer.precision': expected one of ..."``."""

    def __init__(self, source: str, line: int | None, field_name: str | None, msg: str):
        self.source, self.line, self.field, self.msg = source, line, field_name, msg
        where = [source]
        if line is not None:
            where.append(f"line {line}")
        if field_name is not None:
            where.append(f"field '{field_name}'")
        super().__init__(f"{', '.join(where)}: {msg}")

    def __reduce__(self):
        return (type(self), (self.source, self.line, self.field, self.msg))


def to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(tp: Any, value: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise ``_Mismatch`` (no lossy conversions)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Mismatch
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v) for v in value]
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value)
        raise _Mismatch
    raise TypeError(f"unsupported config type {tp!r}")


def build_dataclass(cls: type, data: Any, prefix: str, source: str, lines: dict[str, int]) -> Any:
    section = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(
            source, lines.get(section), section, f"expected a mapping, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f"; known: {', '.join(fields)}"
            raise ConfigError(source, lines.get(f"{prefix}{key}"), f"{prefix}{key}", f"unknown field{hint}")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{prefix}{name}"
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build_dataclass(tp, data.get(name, {}), f"{dotted}.", source, lines)
            continue
        if name not in data:
            if f.metadata.get("required"):
                raise ConfigError(source, None, dotted, "required field is missing")
            continue
        try:
            kwargs[name] = _coerce(tp, data[name])
        except _Mismatch:
            raise ConfigError(
                source, lines.get(dotted), dotted, f"expected {_describe(tp)}, got {data[name]!r}"
            ) from None
    return cls(**kwargs)


def merge_dicts(base: dict, override: dict) -> dict:
    """Recursive merge; ``override`` wins. Neither input is modified."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def _node_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            dotted = f"{prefix}{key_node.value}"
            out[dotted] = key_node.start_mark.line + 1
            _node_lines(value_node, f"{dotted}.", out)


def load_config_file(path: str | Path) -> tuple[dict, dict[str, int]]:
    """Read a ``.json``/``.yaml``/``.yml`` file; return (nested dict, {dotted field: line})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), None, None, "config file not found")
    text = path.read_text(encoding="utf-8")
    lines: dict[str, int] = {}
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise ConfigError(str(path), None, None, "config file must end in .json, .yaml or .yml")
    except json.JSONDecodeError as err:
        raise ConfigError(str(path), err.lineno, None, f"invalid JSON: {err.msg}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(
            str(path), None if mark is None else mark.line + 1, None, f"invalid YAML: {err}"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), 1, None, "the top level must be a mapping of config sections")
    try:  # JSON is (nearly) YAML: the YAML composer gives the line of every key in both
        _node_lines(yaml.compose(text), "", lines)
    except yaml.YAMLError:
        pass
    return data, lines


_BOUNDS = {
    "ge": (">=", lambda v, b: v >= b),
    "gt": (">", lambda v, b: v > b),
    "le": ("<=", lambda v, b: v <= b),
    "lt": ("<", lambda v, b: v < b),
}


def check_bounds(obj: Any, prefix: str, fail: Callable[[str, str], None]) -> None:
    """Call ``fail(dotted field, message)`` for the first number outside its metadata bounds (None is skipped)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_bounds(value, f"{prefix}{f.name}.", fail)
            continue
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        for key, (symbol, ok) in _BOUNDS.items():
            if key in f.metadata and not ok(value, f.metadata[key]):
                fail(f"{prefix}{f.name}", f"must be {symbol} {f.metadata[key]}, got {value}")
