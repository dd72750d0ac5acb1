"""Command-line options generated from config dataclasses, so the CLI cannot drift from them.

Each field becomes one option: its type, default and help come from the dataclass
(``field(metadata={"help": ..., "flag": ...})``, see :func:`option`)::

    p = argparse.ArgumentParser()
    add_config_args(p, TrainConfig, exclude=("regularizer",))
    add_config_args(p, RegularizerConfig, prefix="reg-", defaults={"mode": "truncation"})
    args = p.parse_args(argv)
    cfg = config_from_args(TrainConfig, args,
                           regularizer=config_from_args(RegularizerConfig, args, prefix="reg-"))

Flags: ``--<prefix><name>`` with ``_`` -> ``-`` unless the field names its own ``flag``.
Booleans: default False -> ``--flag`` (store_true); default True -> ``--no-<name>``
(store_false), stored under the field's name. ``X | None`` accepts ``none``; ``Literal[...]`` gives the choices; ``dict``
parses JSON; ``tuple[float, ...]`` a comma-separated list. Bad values are argparse errors
(one line, exit 2); range checks stay in the dataclass's ``__post_init__``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["option", "add_config_args", "config_from_args", "flag_of", "count", "positive_int",
           "positive_float"]


def option(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its command-line help (and optionally its own ``flag``)."""
    meta = {"help": help} | ({"flag": flag} if flag else {})
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def flag_of(f: dataclasses.Field, prefix: str = "") -> str:
    """The option string of field ``f``: its ``flag`` metadata or ``--<prefix><name>``
    (``--no-<prefix><name>`` for a boolean that defaults to True)."""
    if "flag" in f.metadata:
        return f.metadata["flag"]
    name = (prefix + f.name).replace("_", "-")
    return f"--no-{name}" if f.default is True else f"--{name}"


def _dest(f: dataclasses.Field, prefix: str) -> str:
    """argparse's attribute: from the flag (``--reg-batch`` -> ``reg_batch``), except for a
    boolean, which keeps the field's name (``--quiet`` stores False in ``progress``)."""
    if isinstance(f.default, bool):
        return (prefix + f.name).replace("-", "_")
    return flag_of(f, prefix).lstrip("-").replace("-", "_")


def _selected(cls: type, include: Iterable[str] | None, exclude: Iterable[str]
              ) -> list[dataclasses.Field]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = (set(include or ()) | set(exclude)) - set(fields)
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    names = list(include) if include is not None else list(fields)
    return [fields[n] for n in names if n not in set(exclude)]


def _optional(tp) -> tuple[Any, bool]:
    """(``X``, True) for ``X | None``; (tp, False) otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _parser_of(tp, name: str) -> tuple[Callable[[str], Any] | None, list | None]:
    """(string -> value, choices) for a field type."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return type(typing.get_args(tp)[0]), list(typing.get_args(tp))
    if tp is dict or origin is dict:
        def parse_json(text: str) -> dict:
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise argparse.ArgumentTypeError(
                    f"not valid JSON ({err}); e.g. '{{\"max_radial\": 4}}'") from None
            if not isinstance(value, dict):
                raise argparse.ArgumentTypeError(f"give a JSON object, got {text!r}")
            return value
        parse_json.__name__ = "JSON"
        return parse_json, None
    if origin is tuple:
        item = typing.get_args(tp)[0]

        def parse_list(text: str) -> tuple:
            try:
                return tuple(item(v) for v in text.split(",") if v.strip())
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"give comma-separated {item.__name__}s, got {text!r}") from None
        parse_list.__name__ = f"{item.__name__} list"
        return parse_list, None
    if tp in (int, float, str):
        return tp, None
    raise TypeError(f"no command-line form for field {name!r} of type {tp!r}")


def _with_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)
    parse_or_none.__name__ = getattr(parse, "__name__", "value")
    return parse_or_none


def add_config_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                    include: Iterable[str] | None = None, exclude: Iterable[str] = (),
                    defaults: Mapping[str, Any] | None = None, prefix: str = "",
                    required: Iterable[str] = ()) -> None:
    """Add one option per field of dataclass ``cls`` (all, or ``include`` minus ``exclude``).

    defaults: field name -> a default other than the dataclass's (e.g. an experiment's λ).
    prefix: prepended to generated flag names (e.g. ``"reg-"`` for a nested config).
    required: fields whose option must be given (no default).
    """
    hints = typing.get_type_hints(cls)
    defaults = dict(defaults or {})
    unknown = set(defaults) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    for f in _selected(cls, include, exclude):
        flag = flag_of(f, prefix)
        text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = f.default
        tp, optional = _optional(hints[f.name])
        if tp is bool:
            parser.add_argument(flag, dest=_dest(f, prefix), default=default, help=text,
                                action="store_false" if f.default is True else "store_true")
            continue
        parse, choices = _parser_of(tp, f.name)
        # argparse fills %(default)s (and then a defaults-showing formatter adds no second copy)
        shown = json.dumps(default).replace("%", "%%") if isinstance(default, dict) \
            else "%(default)s"
        parser.add_argument(flag, dest=_dest(f, prefix), type=_with_none(parse) if optional else parse,
                            default=default, choices=choices, required=f.name in required,
                            help=text if f.name in required else f"{text} (default: {shown})")


def config_from_args(cls: type, namespace: argparse.Namespace, *, prefix: str = "",
                     **overrides: Any):
    """``cls`` built from the options :func:`add_config_args` added (the others keep the
    dataclass defaults), then ``overrides``; ``ValueError`` from ``cls`` names a bad value."""
    ns = vars(namespace)
    values = {}
    for f in dataclasses.fields(cls):
        dest = _dest(f, prefix)
        if dest in ns and f.name not in overrides:
            values[f.name] = ns[dest]
    return cls(**values, **overrides)


def _bounded(kind: type, low: float, inclusive: bool, what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"give {what}, got {text!r}") from None
        ok = (value >= low if inclusive else value > low) and value == value
        if not ok or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"give {what}, got {text!r}")
        return value
    parse.__name__ = what
    return parse


#: argparse ``type=`` for counts (>= 0), process counts (>= 1) and finite positive numbers:
#: a bad value is one argparse line naming the rule, never a silent no-op.
count = _bounded(int, 0, True, "a whole number >= 0")
positive_int = _bounded(int, 1, True, "a whole number >= 1")
positive_float = _bounded(float, 0.0, False, "a finite number > 0")
