"""The project's one config layer: typed dataclass configs read from dicts, JSON/YAML files, dotted
``KEY=VALUE`` overrides and the command line, with errors that say where.

A config is a tree of dataclasses whose leaves are ``int``, ``float``, ``bool``, ``str``, ``Path``,
``Literal[...]``, ``list[...]``/``tuple[..., ...]`` of those, optional versions of them, or ``dict`` (kept as
given). Each leaf is declared with :func:`config_field`: its help text, CLI flag and numeric bounds (``ge``,
``gt``, ``le``, ``lt``) live in the field's metadata, so the loader checks them and the argparse builder shows
them. A stage's own ``config.py`` keeps only its dataclasses and its cross-field checks.

Why not jsonargparse (which Lightning's CLI uses): it is not a dependency of this project, and what it would
replace is small; this module needs only the standard library and PyYAML.

Precedence everywhere: dataclass defaults < config file < command-line values.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_SOURCE = "config"

# Why the upper bounds of sizes (layers, widths, sequence lengths, steps, batch sizes) exist: they are set far
# above anything a 24 GB machine or a large GPU box can run, so they never refuse a real run, but a typo such
# as ``num_layers=1000000000`` fails at once instead of in an out-of-memory crash after seconds of work.
SANITY_LIMIT = (
    "a sanity limit: no machine could train a larger value, which would only end in an out-of-memory crash"
)


def at_most(limit: int | float) -> dict[str, Any]:
    """``config_field`` metadata for a sanity upper bound: ``config_field(2, "layers", ge=1, **at_most(256))``."""
    return {"le": limit, "why": SANITY_LIMIT}


class ConfigError(ValueError):
    """A bad configuration value: ``"cfg.yaml, line 4, field 'trainer.precision': expected one of ..."``.

    ``source`` is a file name, ``"command line"`` or another description of where the value came from;
    ``line`` (1-based) and ``field`` (dotted) are None when unknown.
    """

    def __init__(self, source: str, line: int | None, field: str | None, msg: str):
        self.source, self.line, self.field, self.msg = str(source), line, field, msg
        super().__init__(located(self.source, line, field, msg))

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.source, self.line, self.field, self.msg))


def located(source: str, line: int | None, field: str | None, msg: str) -> str:
    """``"source, line N, field 'a.b': msg"`` (the parts that are known): the shape of every located error."""
    where = [str(source)]
    if line is not None:
        where.append(f"line {line}")
    if field is not None:
        where.append(f"field '{field}'")
    return f"{', '.join(where)}: {msg}"


def config_field(default: Any = dataclasses.MISSING, help: str = "", **metadata: Any) -> Any:
    """A dataclass field with its ``help`` text and, in ``metadata``, an optional CLI ``flag`` (default:
    ``--`` + the field's name with dashes) and numeric bounds ``ge``/``gt``/``le``/``lt``. No default: required.
    A list default is copied for every instance."""
    meta = {"help": help, **metadata}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# --- dataclass <-> dict ---------------------------------------------------------------------------------


def to_dict(value: Any) -> Any:
    """JSON-ready copy of a config: dataclasses as dicts, paths as strings, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [to_dict(v) for v in value]
    if isinstance(value, dict):
        return {k: to_dict(v) for k, v in value.items()}
    return value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(tp: Any, value: Any) -> Any:
    """``value`` as type ``tp`` or ``_Mismatch``. Conversions are lossless only: int -> float, str -> Path,
    int -> str (``devices: "1"`` given as ``1``), list -> tuple."""
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
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        items = [_coerce(typing.get_args(tp)[0], v) for v in value]
        return items if origin is list else tuple(items)
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise _Mismatch
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
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return str(value)
        raise _Mismatch
    if tp is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value)
        raise _Mismatch
    raise TypeError(f"unsupported config type {tp!r}")


def from_dict(
    cls: type,
    data: Any,
    source: str = DEFAULT_SOURCE,
    lines: dict[str, int] | None = None,
    prefix: str = "",
) -> Any:
    """Build dataclass ``cls`` from a nested dict: unknown keys (with the close name), missing required fields,
    types and metadata bounds are ``ConfigError``s naming ``source``, the line (``lines``: dotted field ->
    line) and the dotted field. A ``ConfigError`` raised by the class itself (``__post_init__``) names a field
    of ``cls``; it is re-raised with this source and line."""
    lines = lines or {}
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
            if name in data or f.default_factory is not dataclasses.MISSING:
                kwargs[name] = from_dict(tp, data.get(name, {}), source, lines, f"{dotted}.")
            continue
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(source, None, dotted, "required field is missing")
            continue
        try:
            kwargs[name] = _coerce(tp, data[name])
        except _Mismatch:
            raise ConfigError(
                source, lines.get(dotted), dotted, f"expected {_describe(tp)}, got {data[name]!r}"
            ) from None
    try:
        obj = cls(**kwargs)
    except ConfigError as err:
        field = None if err.field is None else f"{prefix}{err.field}"
        raise ConfigError(source, lines.get(field or section), field, err.msg) from None
    check_bounds(obj, source, lines, prefix)
    return obj


_BOUNDS = {
    "ge": (">=", lambda v, b: v >= b),
    "gt": (">", lambda v, b: v > b),
    "le": ("<=", lambda v, b: v <= b),
    "lt": ("<", lambda v, b: v < b),
}


def check_bounds(
    obj: Any, source: str = DEFAULT_SOURCE, lines: dict[str, int] | None = None, prefix: str = ""
) -> None:
    """``ConfigError`` for the first number outside its metadata bounds (None values are skipped)."""
    lines = lines or {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        dotted = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_bounds(value, source, lines, f"{dotted}.")
            continue
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        for key, (symbol, ok) in _BOUNDS.items():
            if key in f.metadata and not ok(value, f.metadata[key]):
                why = f" ({f.metadata['why']})" if "why" in f.metadata and key in ("le", "lt") else ""
                raise ConfigError(
                    source, lines.get(dotted), dotted, f"must be {symbol} {f.metadata[key]}{why}, got {value}"
                )


class TypedConfig:
    """Mixin of a stage's top-level config dataclass: dict, file and JSON round trips. Subclasses extend
    :meth:`validate` with their cross-field checks."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict (paths as strings)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = DEFAULT_SOURCE, lines: dict[str, int] | None = None):
        """Build and check a config from a nested dict (unknown keys, types and ranges are errors)."""
        cfg = from_dict(cls, data, source, lines)
        cfg.validate(source, lines)
        return cfg

    @classmethod
    def from_file(cls, path: str | Path, overrides: dict | None = None):
        """Read a JSON or YAML file; ``overrides`` (nested dict) win over the file's values."""
        data, lines = load_file(path)
        return cls.from_dict(deep_merge(data, overrides or {}), source=str(path), lines=lines)

    def save(self, path: Path) -> None:
        """Write the resolved config as JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def validate(self, source: str = DEFAULT_SOURCE, lines: dict[str, int] | None = None) -> None:
        """Check the metadata bounds of every field (subclasses add their cross-field checks)."""
        check_bounds(self, source, lines)


# --- files, merging, dotted overrides ------------------------------------------------------------------


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge; ``override`` wins. Neither input is modified."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class _DuplicateKey(Exception):
    def __init__(self, line: int | None, key: str, first: int | None):
        self.line, self.key, self.first = line, key, first


def _node_lines(node: yaml.Node | None, prefix: str, out: dict[str, int]) -> None:
    """Fill ``out`` with {dotted key: 1-based line}; a key given twice in one mapping is ``_DuplicateKey``."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            dotted = f"{prefix}{key_node.value}"
            line = key_node.start_mark.line + 1
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
            if key in seen:
                raise _DuplicateKey(line, dotted, seen[key])
            seen[key] = line
            out[dotted] = line
            _node_lines(value_node, f"{dotted}.", out)


def _refuse_duplicate_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook``: a key given twice in one object is ``_DuplicateKey`` (no line)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(None, key, None)
        out[key] = value
    return out


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading ``1e-3`` as a float (YAML 1.2 does; PyYAML's 1.1 reads a string)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?([0-9][0-9_]*(\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_file(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Read a ``.json``/``.yaml``/``.yml`` file; return (nested dict, {dotted key: line})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), None, None, "config file not found")
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ConfigError(str(path), None, None, "config file must end in .json, .yaml or .yml")
    text = path.read_text(encoding="utf-8")
    json_duplicate: _DuplicateKey | None = None
    try:
        if suffix == ".json":
            data = json.loads(text, object_pairs_hook=_refuse_duplicate_json_keys)
        else:
            data = yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as dup:
        json_duplicate, data = dup, None  # located below, from the composed node tree
    except json.JSONDecodeError as err:
        raise ConfigError(str(path), err.lineno, None, f"invalid JSON: {err.msg}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(
            str(path), None if mark is None else mark.line + 1, None, f"invalid YAML: {err}"
        ) from None
    lines: dict[str, int] = {}
    try:  # JSON is (nearly) YAML: the YAML composer gives the line of every key in both
        _node_lines(yaml.compose(text, Loader=yaml.SafeLoader), "", lines)
    except yaml.YAMLError:
        pass
    except _DuplicateKey as dup:
        _duplicate_error(path, dup)
    if json_duplicate is not None:  # JSON that YAML could not compose: json's own finding, without a line
        _duplicate_error(path, json_duplicate)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), 1, None, "the top level must be a mapping of config sections")
    return data, lines


def _duplicate_error(path: Path, dup: _DuplicateKey) -> None:
    first = f" (first on line {dup.first})" if dup.first is not None else ""
    raise ConfigError(
        str(path), dup.line, dup.key, f"key given twice{first}; a config file must name each key once"
    )


def parse_value(text: str) -> Any:
    """A command-line value as YAML (``10``, ``true``, ``null``, ``[0, 1]``, ``1e-3``); text that is not YAML
    stays text."""
    try:
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return text


def parse_override(text: str, option: str) -> tuple[str, Any]:
    """``"trainer.max_steps=10"`` -> ``("trainer.max_steps", 10)``; ``option`` names the flag in errors."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key):
        raise ConfigError(
            "command line",
            None,
            None,
            f"{option} {text!r}: expected KEY=VALUE with a dotted KEY, e.g. trainer.max_steps=10",
        )
    return key, parse_value(value)


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``tree`` with ``value`` at the dotted ``key`` (intermediate dicts created)."""
    head, _, rest = key.partition(".")
    out = dict(tree)
    if rest:
        child = out.get(head)
        out[head] = set_dotted(child if isinstance(child, dict) else {}, rest, value)
    else:
        out[head] = value
    return out


def nest(tree: dict[str, Any]) -> dict[str, Any]:
    """Expand dotted keys at any level: ``{"a.b": 1, "a": {"c": 2}}`` -> ``{"a": {"b": 1, "c": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        value = nest(value) if isinstance(value, dict) else value
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = deep_merge(out[key], value)
        out = set_dotted(out, str(key), value) if "." in str(key) else {**out, key: value}
    return out


# --- dataclass -> argparse -----------------------------------------------------------------------------


def leaf_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted name, field, type) of every leaf field, in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from leaf_fields(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, tp


def flag_of(dotted: str, field: dataclasses.Field) -> str:
    """The CLI flag of a leaf field: its metadata ``flag``, else ``--`` + its name with dashes."""
    return field.metadata.get("flag") or "--" + dotted.rsplit(".", 1)[-1].replace("_", "-")


def flags(cls: type) -> dict[str, str]:
    """{dotted field: CLI flag} of every leaf field of ``cls``."""
    return {dotted: flag_of(dotted, f) for dotted, f, _ in leaf_fields(cls)}


_NONE_WORDS = ("none", "null")


def _text_parser(tp: Any, optional: bool):
    """argparse ``type=`` for a scalar type; ``none``/``null`` give None where the field is optional."""

    def parse(text: str) -> Any:
        if optional and text.lower() in _NONE_WORDS:
            return None
        return tp(text)

    parse.__name__ = getattr(tp, "__name__", "value")  # argparse's "invalid int value: 'x'"
    return parse


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "none"
    return str(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, titles: dict[str, str] | None = None, top: str | None = "run"
) -> None:
    """Add one flag per leaf field of dataclass ``cls`` (see :func:`flag_of`), grouped by section (``titles``:
    section -> group title; top-level fields go to group ``top``, or the parser itself when None). A flag's
    help is the field's help with its default; flags left out are absent from the namespace
    (``argparse.SUPPRESS``), so :func:`overrides_from_args` returns only what was given.

    ``bool`` -> ``--x/--no-x``; ``Literal`` -> choices; ``list`` -> zero or more values, ``tuple`` -> one or
    more; optional fields take ``none``/``null``."""
    titles = titles or {}
    groups: dict[str, Any] = {}
    for dotted, f, tp in leaf_fields(cls):
        section = dotted.split(".")[0] if "." in dotted else None
        if section is None and top is None:
            group: Any = parser
        else:
            title = titles.get(section, section) if section else top
            if title not in groups:
                groups[title] = parser.add_argument_group(title)
            group = groups[title]
        default = _default(f)
        required = " (required)" if default is dataclasses.MISSING else f" (default: {_shown(default)}"
        if default is not dataclasses.MISSING:
            required += f"; at most {f.metadata['le']})" if "why" in f.metadata else ")"
        kwargs: dict[str, Any] = {
            "dest": dotted,
            "default": argparse.SUPPRESS,
            "help": f.metadata.get("help", "") + required,
        }
        args = typing.get_args(tp)
        optional = type(None) in args and typing.get_origin(tp) in (typing.Union, types.UnionType)
        inner = next(a for a in args if a is not type(None)) if optional else tp
        origin = typing.get_origin(inner)
        if inner is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs["choices"] = list(typing.get_args(inner))
        elif origin in (list, tuple):
            item = typing.get_args(inner)[0]
            kwargs["nargs"] = "*" if origin is list else "+"
            if typing.get_origin(item) is Literal:
                kwargs["choices"] = list(typing.get_args(item))
            else:
                kwargs["type"] = _text_parser(item, False)
                kwargs["metavar"] = item.__name__.upper()
        else:
            kwargs["type"] = _text_parser(inner, optional)
            kwargs["metavar"] = inner.__name__.upper()
        group.add_argument(flag_of(dotted, f), **kwargs)


def overrides_from_args(
    args: argparse.Namespace | dict[str, Any], skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The flags that were given (dotted ``dest``s), as a nested dict of config fields (paths as strings)."""
    values = vars(args) if isinstance(args, argparse.Namespace) else args
    nested: dict[str, Any] = {}
    for dest, value in values.items():
        if dest not in skip:
            nested = set_dotted(nested, dest, str(value) if isinstance(value, Path) else value)
    return nested
